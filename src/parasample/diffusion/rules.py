"""The pluggable parts of masked-diffusion decoding: schedules, transfer rules, confidence scores.

A decoding step proposes a token x0 for every masked position of the current block and scores
it; the **confidence score** says how sure the step is of each proposal (LLaDA's remasking
strategy), the **transfer rule** picks which proposals are committed (unmasked) this step. The
remaining positions stay masked ("remasked") for later steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from parasample.errors import InputError

__all__ = ["num_transfer_tokens", "ConfidenceScore", "low_confidence", "random_confidence",
           "top_prob", "SCORES", "TransferRule", "FixedSteps", "Threshold"]


def num_transfer_tokens(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's schedule: ``n_masked [B]`` tokens over ``steps`` steps -> ``[B, steps]`` int64.

    Every step gets ``n // steps`` tokens and the first ``n % steps`` steps one more, so the
    counts sum to n and differ by at most one (the linear noise schedule's expected counts).
    """
    base = n_masked[:, None] // steps  # [B, 1]
    rem = n_masked[:, None] % steps  # [B, 1]
    return base + (torch.arange(steps, device=n_masked.device)[None] < rem).long()  # [B, steps]


class ConfidenceScore(Protocol):
    """How sure a step is of each masked position: ``(p_draw [B, L] probability of the drawn
    proposal or None, p_top [B, L] the proposal distribution's top probability, u [B, L]
    uniforms) -> [B, L]`` scores, higher committed first.

    ``uses_draw``: the score reads the drawn proposal (``p_draw``), so every masked position is
    drawn before the rule selects. A score that does not is computed first, and only the
    positions committed are drawn: that is what lets arithmetic sampling's code point be spent on
    committed tokens alone. ``uses_noise``: the score reads the uniforms ``u``.
    """

    uses_draw: bool
    uses_noise: bool

    def __call__(self, p_draw: torch.Tensor | None, p_top: torch.Tensor,
                 u: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class LowConfidence:
    """LLaDA's low-confidence remasking: commit the most probable proposals, remask the rest.
    (At temperature 0 the proposal is the argmax, so this is the top probability.)"""

    uses_draw, uses_noise = True, False
    name = "low_confidence"

    def __call__(self, p_draw, p_top, u):
        return p_top if p_draw is None else p_draw


@dataclass(frozen=True)
class RandomConfidence:
    """LLaDA's random remasking: commit proposals in a uniformly random order."""

    uses_draw, uses_noise = False, True
    name = "random"

    def __call__(self, p_draw, p_top, u):
        return u.to(p_top.dtype)


@dataclass(frozen=True)
class TopProb:
    """The proposal distribution's top probability, whatever is drawn: at temperature 0 the
    same as low confidence; at temperature > 0 the positions are chosen by how sure the model
    is, then sampled (so correlated sources drive the committed tokens only)."""

    uses_draw, uses_noise = False, False
    name = "top_prob"

    def __call__(self, p_draw, p_top, u):
        return p_top


low_confidence, random_confidence, top_prob = LowConfidence(), RandomConfidence(), TopProb()

SCORES: dict[str, ConfidenceScore] = {s.name: s for s in (low_confidence, random_confidence,
                                                          top_prob)}


class TransferRule(Protocol):
    """Which masked positions of the block to commit at step ``s`` of the block.

    ``conf [B, L]`` is -inf at positions that are not masked; ``plan`` is what
    :meth:`plan_block` returned for this block. Must commit at least one position of every row
    that still has masked positions, so decoding always progresses.
    """

    def plan_block(self, n_masked: torch.Tensor, steps_per_block: int) -> torch.Tensor | None: ...

    def select(self, conf: torch.Tensor, s: int, plan) -> torch.Tensor: ...


def _top_k_mask(conf: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, L]`` marking the ``k[b]`` highest entries of each row of ``conf`` (k [B])."""
    order = torch.argsort(conf, dim=-1, descending=True, stable=True)  # [B, L]
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(
        conf.shape[-1], device=conf.device).expand_as(order).contiguous())
    return (ranks < k[:, None]) & torch.isfinite(conf)


@dataclass(frozen=True)
class FixedSteps:
    """Fixed-steps decoding: at block step s commit the top ``num_transfer_tokens[:, s]``."""

    def plan_block(self, n_masked, steps_per_block):
        return num_transfer_tokens(n_masked, steps_per_block)  # [B, steps_per_block]

    def select(self, conf, s, plan):
        return _top_k_mask(conf, plan[:, s])


@dataclass(frozen=True)
class Threshold:
    """Fast-dLLM confidence-threshold parallel decoding.

    Commit every masked position whose score is >= ``threshold``, and always at least the single
    highest-scoring one, so a step where nothing clears the threshold still makes progress.
    """

    threshold: float = 0.9

    def __post_init__(self):
        if not 0 < self.threshold <= 1:
            raise InputError(f"threshold={self.threshold} must lie in (0, 1]; 1 commits one "
                             "token per step unless the model is certain.")

    def plan_block(self, n_masked, steps_per_block):
        return None

    def select(self, conf, s, plan):
        above = conf >= self.threshold  # -inf never clears it
        best = _top_k_mask(conf, torch.ones(conf.shape[0], dtype=torch.long, device=conf.device))
        return above | best
