"""Semi-autoregressive block decoding of a masked diffusion LM (LLaDA / Fast-dLLM), one loop.

The answer region of ``gen_length`` masked positions is split into blocks of ``block_length``
decoded left to right. Each step runs the model once on the whole sequence ``[B, P + G]``,
proposes a token for every masked position of the current block (argmax at temperature 0, else
an inverse-CDF draw from the tempered softmax), scores the proposals with a
:class:`~parasample.diffusion.rules.ConfidenceScore` and commits those a
:class:`~parasample.diffusion.rules.TransferRule` selects. Fixed-steps decoding, random
remasking and confidence-threshold decoding are all this loop with other rules.

A batch decodes together; under the threshold rule rows finish a block at different steps, a
finished row just waits (its positions are no longer masked, so nothing changes for it) while
the others go on, and the batch moves to the next block when every row is done with this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from parasample.diffusion.rules import ConfidenceScore, FixedSteps, TransferRule, low_confidence
from parasample.noise import UniformSource, icdf_categorical

__all__ = ["DecodeConfig", "DecodeState", "DecodeInfo", "Decoded", "init", "step", "decode"]


@dataclass(frozen=True)
class DecodeConfig:
    """Block-decoding settings, validated on construction.

    Attributes:
        gen_length: answer positions to decode.
        block_length: positions per block; must divide ``gen_length``.
        steps: nominal total steps, a multiple of the number of blocks (steps per block =
            steps / num_blocks); the threshold rule may take fewer or more model calls.
        rule: the transfer rule (:class:`FixedSteps` or :class:`Threshold`).
        score: the confidence score (``low_confidence`` or ``random_confidence``).
        temperature: 0 proposes the argmax; > 0 draws proposals from softmax(logits / T).
    """

    gen_length: int = 256
    block_length: int = 32
    steps: int = 256
    rule: TransferRule = field(default_factory=FixedSteps)
    score: ConfidenceScore = low_confidence
    temperature: float = 0.0

    def __post_init__(self):
        if self.gen_length < 1 or self.block_length < 1:
            raise ValueError(f"gen_length={self.gen_length} and block_length={self.block_length}"
                             " must be >= 1.")
        if self.gen_length % self.block_length:
            divisors = [d for d in (4, 8, 16, 32, 64, 128, 256) if self.gen_length % d == 0]
            raise ValueError(f"block_length={self.block_length} does not divide gen_length="
                             f"{self.gen_length}; use one of {divisors or 'its divisors'}.")
        nb = self.num_blocks
        if self.steps < 1 or self.steps % nb:
            raise ValueError(f"steps={self.steps} is not a multiple of the number of blocks "
                             f"({self.gen_length} / {self.block_length} = {nb}); use e.g. "
                             f"steps={nb * max(1, round(self.steps / nb))}.")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = argmax).")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks


class DecodeState(NamedTuple):
    """x: ``[B, P + G]`` tokens (mask id where undecided); block: current block index;
    s: step within the block; plan: the rule's plan for this block; prompt_len: P."""

    x: torch.Tensor
    block: int
    s: int
    plan: Any
    prompt_len: int


class DecodeInfo(NamedTuple):
    """Diagnostics of one step: tokens committed per row ``[B]`` and model calls (1)."""

    committed: torch.Tensor
    nfe: int


class Decoded(NamedTuple):
    """tokens: ``[B, G]`` the decoded answers; nfe: model calls; tokens_per_step: mean tokens
    committed per row per step; steps: decoding steps taken."""

    tokens: torch.Tensor
    nfe: int
    tokens_per_step: float
    steps: int


def _block_slice(state: DecodeState, cfg: DecodeConfig) -> slice:
    lo = state.prompt_len + state.block * cfg.block_length
    return slice(lo, lo + cfg.block_length)


def init(model, prompt: torch.Tensor, cfg: DecodeConfig) -> DecodeState:
    """Append ``gen_length`` mask tokens to ``prompt [B, P]`` and plan the first block."""
    max_len = getattr(model, "max_length", None)
    total = prompt.shape[1] + cfg.gen_length
    if max_len is not None and total > max_len:
        raise ValueError(f"prompt ({prompt.shape[1]} tokens) + gen_length ({cfg.gen_length}) = "
                         f"{total} exceeds the model's context of {max_len}; shorten the prompt "
                         "or lower gen_length.")
    x = torch.cat([prompt, torch.full((prompt.shape[0], cfg.gen_length), model.mask_id,
                                      dtype=prompt.dtype)], dim=1)
    st = DecodeState(x, 0, 0, None, prompt.shape[1])
    masked = (x[:, _block_slice(st, cfg)] == model.mask_id).sum(1)
    return st._replace(plan=cfg.rule.plan_block(masked, cfg.steps_per_block))


def step(u: torch.Tensor, state: DecodeState, model, cfg: DecodeConfig
         ) -> tuple[DecodeState, DecodeInfo]:
    """One model call and one commit in the current block.

    ``u [B, 2, block_length]`` uniforms: ``u[:, 0]`` draws proposals when temperature > 0,
    ``u[:, 1]`` feeds the random confidence score. Pure: the input state is not modified.
    """
    blk = _block_slice(state, cfg)
    logits = model.logits(state.x)[:, blk].to(torch.float32)  # [B, Lb, V]
    # The mask token is never a proposal: committing it would leave the position undecided.
    logits = logits.index_fill(-1, torch.tensor([model.mask_id]), float("-inf"))
    if cfg.temperature == 0:
        probs = torch.softmax(logits, dim=-1)
        x0 = probs.argmax(-1)  # [B, Lb]
    else:
        probs = torch.softmax(logits / cfg.temperature, dim=-1)
        x0 = icdf_categorical(probs, u[:, 0])
    p0 = probs.gather(-1, x0[..., None])[..., 0]  # [B, Lb]
    masked = state.x[:, blk] == model.mask_id
    conf = torch.where(masked, cfg.score(p0, u[:, 1]), float("-inf"))
    commit = cfg.rule.select(conf, min(state.s, cfg.steps_per_block - 1), state.plan) & masked
    x = state.x.clone()
    x[:, blk] = torch.where(commit, x0, state.x[:, blk])
    new = state._replace(x=x, s=state.s + 1)
    if not (x[:, blk] == model.mask_id).any() and state.block + 1 < cfg.num_blocks:
        new = new._replace(block=state.block + 1, s=0)
        n_masked = (x[:, _block_slice(new, cfg)] == model.mask_id).sum(1)
        new = new._replace(plan=cfg.rule.plan_block(n_masked, cfg.steps_per_block))
    return new, DecodeInfo(committed=commit.sum(1), nfe=1)


def decode(model, prompt: torch.Tensor, cfg: DecodeConfig, source: UniformSource | None = None
           ) -> Decoded:
    """Decode the answers of ``prompt [B, P]`` with ``model`` (a MaskedModel).

    ``source`` (n = B rows) supplies uniforms for sampled proposals and random remasking; it is
    required unless temperature is 0 with a deterministic score.
    """
    B = prompt.shape[0]
    needs_noise = cfg.temperature > 0 or cfg.score is not low_confidence
    if needs_noise and source is None:
        raise ValueError("sampling (temperature > 0) or random remasking needs a uniform source:"
                         " pass source=make_source('iid', n=batch, generator=...).")
    if source is not None and source.n != B:
        raise ValueError(f"the uniform source serves {source.n} rows but the batch has {B}.")
    state = init(model, prompt, cfg)
    zeros = torch.zeros(B, 2, cfg.block_length, dtype=torch.float64)
    nfe, n_steps, committed = 0, 0, 0.0
    # Every step commits >= 1 token per unfinished row, so G steps always suffice.
    while (state.x[:, state.prompt_len:] == model.mask_id).any():
        if n_steps >= cfg.gen_length + cfg.steps:
            raise RuntimeError("decoding made no progress; the transfer rule must commit at "
                               "least one masked position per row and step.")
        u = source.uniform(2, cfg.block_length) if needs_noise else zeros
        state, info = step(u, state, model, cfg)
        nfe, n_steps = nfe + info.nfe, n_steps + 1
        committed += float(info.committed.float().mean())
    return Decoded(state.x[:, state.prompt_len:], nfe, committed / max(1, n_steps), n_steps)
