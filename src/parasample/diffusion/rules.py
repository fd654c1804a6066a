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

__all__ = ["num_transfer_tokens", "ConfidenceScore", "low_confidence", "random_confidence",
           "SCORES", "TransferRule", "FixedSteps", "Threshold"]


def num_transfer_tokens(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's schedule: ``n_masked [B]`` tokens over ``steps`` steps -> ``[B, steps]`` int64.

    Every step gets ``n // steps`` tokens and the first ``n % steps`` steps one more, so the
    counts sum to n and differ by at most one (the linear noise schedule's expected counts).
    """
    base = n_masked[:, None] // steps  # [B, 1]
    rem = n_masked[:, None] % steps  # [B, 1]
    return base + (torch.arange(steps)[None] < rem).long()  # [B, steps]


class ConfidenceScore(Protocol):
    """``(p0 [B, L] prob of each proposal, u [B, L] uniforms) -> [B, L]`` scores (higher first)."""

    def __call__(self, p0: torch.Tensor, u: torch.Tensor) -> torch.Tensor: ...


def low_confidence(p0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """LLaDA's low-confidence remasking: commit the most probable proposals, remask the rest."""
    return p0


def random_confidence(p0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """LLaDA's random remasking: commit proposals in a uniformly random order."""
    return u.to(p0.dtype)


SCORES: dict[str, ConfidenceScore] = {"low_confidence": low_confidence,
                                      "random": random_confidence}


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
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(conf.shape[-1]).expand_as(
        order).contiguous())
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
            raise ValueError(f"threshold={self.threshold} must lie in (0, 1]; 1 commits one "
                             "token per step unless the model is certain.")

    def plan_block(self, n_masked, steps_per_block):
        return None

    def select(self, conf, s, plan):
        above = conf >= self.threshold  # -inf never clears it
        best = _top_k_mask(conf, torch.ones(conf.shape[0], dtype=torch.long))
        return above | best
