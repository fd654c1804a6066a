"""Semi-autoregressive block decoding of a masked diffusion LM (LLaDA / Fast-dLLM), one loop.

The answer region of ``gen_length`` masked positions is split into blocks of ``block_length``
decoded left to right. Each step gets the current block's logits from the model (a full pass, or
a window against cached keys and values: :mod:`parasample.diffusion.caches`), scores the masked
positions with a :class:`~parasample.diffusion.rules.ConfidenceScore`, commits those a
:class:`~parasample.diffusion.rules.TransferRule` selects, and draws their tokens: the argmax at
temperature 0, else an inverse-CDF draw from the tempered softmax. Fixed-steps decoding, random
remasking, confidence-threshold decoding and the caches are all this loop with other parts.

Randomness: every random number comes from a :class:`~parasample.noise.UniformSource`, one
``[2, block_length]`` block of uniforms per step and row (proposal draws, then score uniforms).
Each row of every source is i.i.d. uniform, so every row decodes from the same law whatever the
source; correlated sources (lattice, Sobol, antithetic) correlate the k rows of a group. A source
that carries a residual (arithmetic sampling) spends one code point per row on the committed
tokens, in order, carrying the residual of each draw into the next (as the AR engine does), which
needs a score that does not read the draw (``random`` or ``top_prob``).

What is exact (each statement names its test in ``tests/test_diffusion_sampling.py``): with a
score that does not read the draw (``random_confidence``, ``top_prob``), every committed token
is an exact draw from softmax(logits / T) of the step's logits, whichever rule commits it and
however many tokens a step commits, for every source (``test_each_committed_token_is_an_exact_
draw_from_the_tempered_conditional``); with one token per step and random remasking the whole
answer is an exact draw from the model's any-order law (``test_one_token_per_step_random_
remasking_draws_the_exact_any_order_law``). Several tokens per step are each exact given the
step's logits, but they do not see each other, so their joint law is not one-token-per-step
decoding's. ``low_confidence`` at T > 0 picks positions by the probability of the token drawn
there, so its committed tokens lean towards likely ones and are not draws from the tempered
conditional (``test_low_confidence_at_positive_temperature_commits_biased_tokens``); at T = 0
every score commits argmaxes.

A batch decodes together; under the threshold rule rows finish a block at different steps, a
finished row just waits (its positions are no longer masked, so nothing changes for it) while
the others go on, and the batch moves to the next block when every row is done with this one.
Prompts of different lengths are left-padded with an ``attention_mask`` (1 = real token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from parasample.devices import model_device
from parasample.diffusion.caches import BlockCache, NoCache
from parasample.diffusion.rules import ConfidenceScore, FixedSteps, TransferRule, low_confidence
from parasample.errors import InputError
from parasample.noise import UniformSource, carry_code_point, icdf_categorical, icdf_residual

__all__ = ["DecodeConfig", "DecodeState", "DecodeInfo", "Decoded", "init", "step", "decode",
           "check_source",
           "choose"]


@dataclass(frozen=True)
class DecodeConfig:
    """Block-decoding settings, validated on construction.

    Attributes:
        gen_length: answer positions to decode.
        block_length: positions per block; must divide ``gen_length``.
        steps: nominal total steps, a multiple of the number of blocks (steps per block =
            steps / num_blocks); the threshold rule may take fewer or more model calls.
        rule: the transfer rule (:class:`FixedSteps` or :class:`Threshold`).
        score: the confidence score (``low_confidence``, ``random_confidence``, ``top_prob``).
        temperature: 0 proposes the argmax; > 0 draws from softmax(logits / T).
        cache: how each step gets the block's logits (:class:`NoCache`, ``PrefixCache``,
            ``DualCache``).
        confidence: ``model`` (the default) scores confidence on the model's own
            softmax(logits), whatever T; ``tempered`` on softmax(logits / T), the distribution
            the tokens are drawn from (Fast-dLLM's choice). Only which positions are committed
            changes: every committed token is drawn at T either way. ``bench dllm`` measured
            threshold decoding at B = 32 solving 0.906 / 0.875 / 0.906 / 0.844 / 0.844 of 32
            chains at T = 0.1 / 0.3 / 0.5 / 0.7 / 1 with ``model`` against 0.344 / 0.281 / 0.594
            / 0.656 / 0.844 with ``tempered`` (a sharp tempered distribution clears the
            threshold at uncertain positions), hence the default.
    """

    gen_length: int = 256
    block_length: int = 32
    steps: int = 256
    rule: TransferRule = field(default_factory=FixedSteps)
    score: ConfidenceScore = low_confidence
    temperature: float = 0.0
    cache: BlockCache = field(default_factory=NoCache)
    confidence: str = "model"

    def __post_init__(self):
        if self.gen_length < 1 or self.block_length < 1:
            raise InputError(f"gen_length={self.gen_length} and block_length={self.block_length}"
                             " must be >= 1.")
        if self.gen_length % self.block_length:
            divisors = [d for d in (4, 8, 16, 32, 64, 128, 256) if self.gen_length % d == 0]
            raise InputError(f"block_length={self.block_length} does not divide gen_length="
                             f"{self.gen_length}; use one of {divisors or 'its divisors'}.")
        nb = self.num_blocks
        if self.steps < 1 or self.steps % nb:
            raise InputError(f"steps={self.steps} is not a multiple of the number of blocks "
                             f"({self.gen_length} / {self.block_length} = {nb}); use e.g. "
                             f"steps={nb * max(1, round(self.steps / nb))}.")
        if self.temperature < 0:
            raise InputError(f"temperature={self.temperature} must be >= 0 (0 = argmax).")
        if self.confidence not in ("tempered", "model"):
            raise InputError(f"confidence={self.confidence!r}: score confidence on the "
                             "'tempered' distribution or the 'model''s own.")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def needs_noise(self) -> bool:
        """Whether decoding draws random numbers (sampling, or a random score)."""
        return self.temperature > 0 or self.score.uses_noise


class DecodeState(NamedTuple):
    """x: ``[B, P + G]`` tokens (mask id where undecided); block: current block index;
    s: step within the block; plan: the rule's plan for this block; prompt_len: P;
    kv: the cache's state (None without one); attention_mask: ``[B, P + G]`` or None;
    residual: ``[B]`` float64 arithmetic sampling's carried code point (None for other
    sources); logq: ``[B]`` log-probability of the tokens committed so far (for the carry);
    carry_bits: the source's ``carry_bits``."""

    x: torch.Tensor
    block: int
    s: int
    plan: Any
    prompt_len: int
    kv: Any = None
    attention_mask: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    logq: torch.Tensor | None = None
    carry_bits: int | None = None


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


def init(model, prompt: torch.Tensor, cfg: DecodeConfig,
         attention_mask: torch.Tensor | None = None,
         code_point: torch.Tensor | None = None) -> DecodeState:
    """Append ``gen_length`` mask tokens to ``prompt [B, P]`` and plan the first block.

    ``attention_mask [B, P]`` marks the real prompt tokens of left-padded prompts;
    ``code_point [B]`` starts arithmetic sampling (the source's first dimension).
    """
    max_len = getattr(model, "max_length", None)
    total = prompt.shape[1] + cfg.gen_length
    if max_len is not None and total > max_len:
        raise InputError(f"prompt ({prompt.shape[1]} tokens) + gen_length ({cfg.gen_length}) = "
                         f"{total} exceeds the model's context of {max_len}; shorten the prompt "
                         "or lower gen_length.")
    B = prompt.shape[0]
    x = torch.cat([prompt, torch.full((B, cfg.gen_length), model.mask_id, dtype=prompt.dtype,
                                      device=prompt.device)], dim=1)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, cfg.gen_length)],
                                   dim=1)
    st = DecodeState(x, 0, 0, None, prompt.shape[1], attention_mask=attention_mask,
                     residual=code_point, logq=None if code_point is None else
                     torch.zeros(B, dtype=torch.float64, device=prompt.device))
    masked = (x[:, _block_slice(st, cfg)] == model.mask_id).sum(1)
    return st._replace(plan=cfg.rule.plan_block(masked, cfg.steps_per_block))


def _draw(probs: torch.Tensor, u: torch.Tensor, commit: torch.Tensor, residual, logq,
          carry_bits):
    """Tokens ``[B, Lb]`` at the committed positions (elsewhere arbitrary), and the carried
    residual and log-probability. Plain sources: position j of the block draws from ``u[:, j]``.
    Arithmetic sampling: the committed positions draw in order from the row's carried code point
    (rotated by ``u`` once the committed prefix is rarer than 2^-20, as in the AR engine)."""
    if residual is None:
        return icdf_categorical(probs, u), None, None
    tok = torch.zeros(commit.shape, dtype=torch.long, device=probs.device)
    for j in torch.nonzero(commit.any(0)).flatten().tolist():  # positions some row commits
        c = commit[:, j]
        uj = carry_code_point(residual, u[:, j], logq, carry_bits)
        tj = icdf_categorical(probs[:, j], uj)
        tok[:, j] = tj
        residual = torch.where(c, icdf_residual(probs[:, j], uj, tj), residual)
        logq = logq + torch.where(c, torch.log(probs[:, j].gather(1, tj[:, None])[:, 0]), 0.0)
    return tok, residual, logq


def proposal_logits(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """float32 logits with the mask token at -inf: the mask is never a proposal (committing it
    would leave the position undecided). Shared by :func:`choose` and the speculative
    decoder's rejection verifier."""
    return logits.to(torch.float32).index_fill(
        -1, torch.tensor([mask_id], device=logits.device), float("-inf"))


def choose(u: torch.Tensor, xb: torch.Tensor, logits: torch.Tensor, cfg: DecodeConfig,
           mask_id: int, select, residual=None, logq=None, carry_bits=None):
    """One step's decision on a block, given its logits: which masked positions are committed
    and their tokens. Pure; shared by :func:`step` and the speculative decoder, which replays it
    on verified logits.

    ``u [B, 2, Lb]``, ``xb [B, Lb]`` the block's tokens, ``logits [B, Lb, V]``; ``select(conf
    [B, Lb]) -> [B, Lb]`` bool is the transfer rule's choice. Returns ``commit [B, Lb]`` bool,
    ``tokens [B, Lb]`` (valid where committed) and the carried residual and log q.
    """
    logits = proposal_logits(logits, mask_id)  # [B, Lb, V]
    masked = xb == mask_id
    if cfg.temperature == 0:
        probs = torch.softmax(logits, dim=-1)
        p_top, x0 = probs.max(-1)  # [B, Lb]
        p_draw = p_top
    else:
        probs = torch.softmax(logits.double() / cfg.temperature, dim=-1)  # float64 for icdf
        # confidence read on the tempered distribution, or on the model's own (T = 1)
        sure = probs if cfg.confidence == "tempered" else torch.softmax(logits.double(), -1)
        p_top, x0, p_draw = sure.max(-1).values, None, None
        if cfg.score.uses_draw:
            if residual is not None:
                raise InputError("arithmetic sampling spends its code point on committed tokens "
                                 "only, so it needs a score that does not read the draw: use "
                                 "score=top_prob or random_confidence.")
            x0 = icdf_categorical(probs, u[:, 0])
            p_draw = sure.gather(-1, x0[..., None])[..., 0]
    conf = torch.where(masked, cfg.score(p_draw, p_top, u[:, 1]), float("-inf"))
    commit = select(conf) & masked
    if x0 is None:
        x0, residual, logq = _draw(probs, u[:, 0], commit, residual, logq, carry_bits)
    return commit, x0, residual, logq


def step(u: torch.Tensor, state: DecodeState, model, cfg: DecodeConfig
         ) -> tuple[DecodeState, DecodeInfo]:
    """One model call and one commit in the current block.

    ``u [B, 2, block_length]`` uniforms: ``u[:, 0]`` draws tokens when temperature > 0,
    ``u[:, 1]`` feeds a random confidence score. Pure in the decoder's tensors (the cache's
    keys and values are updated in place, so a state is not reused once stepped).
    """
    blk = _block_slice(state, cfg)
    logits, kv = cfg.cache.logits(model, state.x, blk, state.s, state.kv, state.attention_mask)
    s = min(state.s, cfg.steps_per_block - 1)
    commit, x0, residual, logq = choose(
        u, state.x[:, blk], logits, cfg, model.mask_id,
        lambda conf: cfg.rule.select(conf, s, state.plan), state.residual, state.logq,
        state.carry_bits)
    x = state.x.clone()
    x[:, blk] = torch.where(commit, x0, state.x[:, blk])
    new = state._replace(x=x, s=state.s + 1, kv=kv, residual=residual, logq=logq)
    if not (x[:, blk] == model.mask_id).any() and state.block + 1 < cfg.num_blocks:
        new = new._replace(block=state.block + 1, s=0)
        n_masked = (x[:, _block_slice(new, cfg)] == model.mask_id).sum(1)
        new = new._replace(plan=cfg.rule.plan_block(n_masked, cfg.steps_per_block))
    return new, DecodeInfo(committed=commit.sum(1), nfe=1)


def check_source(cfg: DecodeConfig, source: UniformSource | None, batch: int) -> None:
    """A source is needed when the config draws noise, and must serve every row."""
    if cfg.needs_noise and source is None:
        raise InputError("sampling (temperature > 0) or random remasking needs a uniform source:"
                         " pass source=make_source('iid', n=batch, generator=...).")
    if source is not None and source.n != batch:
        raise InputError(f"the uniform source serves {source.n} rows but the batch has {batch}.")


def decode(model, prompt: torch.Tensor, cfg: DecodeConfig, source: UniformSource | None = None,
           attention_mask: torch.Tensor | None = None) -> Decoded:
    """Decode the answers of ``prompt [B, P]`` (left-padded where ``attention_mask [B, P]`` is
    given) with ``model`` (a MaskedModel).

    ``source`` (n = B rows) supplies uniforms for sampled tokens and random remasking; it is
    required unless temperature is 0 with a deterministic score.
    """
    B = prompt.shape[0]
    check_source(cfg, source, B)
    cfg.cache.check(model)
    dev = model_device(model)
    prompt = prompt.to(dev)
    attention_mask = None if attention_mask is None else attention_mask.to(dev)
    carry = source is not None and source.carries_residual and cfg.temperature > 0
    code_point = source.uniform().to(dev) if carry else None  # [B]
    state = init(model, prompt, cfg, attention_mask, code_point)
    if carry:
        state = state._replace(carry_bits=source.carry_bits)
    zeros = torch.zeros(B, 2, cfg.block_length, dtype=torch.float64, device=dev)
    nfe, n_steps, committed = 0, 0, 0.0
    # Every step commits >= 1 token per unfinished row, so G steps always suffice.
    while (state.x[:, state.prompt_len:] == model.mask_id).any():
        if n_steps >= cfg.gen_length + cfg.steps:
            raise RuntimeError("decoding made no progress; the transfer rule must commit at "
                               "least one masked position per row and step.")
        u = source.uniform(2, cfg.block_length).to(dev) if cfg.needs_noise else zeros
        state, info = step(u, state, model, cfg)
        nfe, n_steps = nfe + info.nfe, n_steps + 1
        committed += float(info.committed.float().mean())
    return Decoded(state.x[:, state.prompt_len:], nfe, committed / max(1, n_steps), n_steps)
