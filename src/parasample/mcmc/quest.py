"""QUEST (Faria et al., NeurIPS 2024): Metropolis-Hastings over LM outputs for
pi(y) ~ p_LM(y | x) exp(r(y) / beta).

Proposal: pick a cut index i uniformly in {0, ..., |y| - 1}, keep y_<i and regenerate the suffix
from the LM. The LM terms cancel in the MH ratio, leaving the length correction of the uniform
cut:

    accept with probability min(1, exp((r(y') - r(y)) / beta) * |y| / |y'|),

where |y| counts tokens up to and including EOS. A proposal whose reward is NaN is rejected and
counted. One step costs one pass of the AR model over the sequence (``max_new_tokens`` calls).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from parasample.ancestral import SamplingConfig, lengths_with_eos
from parasample.ancestral import init as ar_init
from parasample.ancestral import step as ar_step
from parasample.mcmc.proposal import mh_accept

__all__ = ["QuestState", "QuestInfo", "init", "step", "noise_dims"]


class QuestState(NamedTuple):
    """y: ``[B, L]`` current sequences (EOS-padded); reward: ``[B]`` r(y); length: ``[B]`` |y|."""

    y: torch.Tensor
    reward: torch.Tensor
    length: torch.Tensor


class QuestInfo(NamedTuple):
    """accepted ``[B]``; nan_rejected ``[B]``; nfe: model calls this step."""

    accepted: torch.Tensor
    nan_rejected: torch.Tensor
    nfe: int


def noise_dims(length: int) -> int:
    """Uniforms per chain and step: the cut, one per regenerated position, the MH test."""
    return length + 2


def init(y: torch.Tensor, reward, eos_id: int | None) -> QuestState:
    """Start chains at ``y [B, L]`` (e.g. ancestral samples)."""
    return QuestState(y, reward(y).to(torch.float64), lengths_with_eos(y, eos_id))


def _regenerate(u, keep, y, model, prompt_ids, attention_mask, sampling):
    """Tokens that keep ``y[:, :keep]`` and draw the rest from the model: ``[B, L]``, NFE."""
    B, L = y.shape
    ar = ar_init(model, prompt_ids, attention_mask)
    nfe = 1
    pos = torch.arange(L)
    for t in range(L):
        forced = torch.where(pos[t] < keep, y[:, t], -1)
        ar, info = ar_step(u[:, t], ar, model, sampling, advance=t < L - 1, forced=forced)
        nfe += info.nfe
        if info.n_active == 0 and t < L - 1:
            ar = ar._replace(tokens=torch.nn.functional.pad(ar.tokens, (0, L - 1 - t),
                                                            value=model.eos_id))
            break
    return ar.tokens, nfe


def step(u: torch.Tensor, state: QuestState, model, prompt_ids: torch.Tensor,
         attention_mask: torch.Tensor, reward, beta: float, sampling: SamplingConfig
         ) -> tuple[QuestState, QuestInfo]:
    """One QUEST move per chain; ``u [B, L + 2]``; ``prompt_ids [B, P]`` one row per chain."""
    if not beta > 0:
        raise ValueError(f"beta={beta} must be > 0 (pi ~ p exp(r / beta)).")
    L = state.y.shape[1]
    if sampling.max_new_tokens != L:
        raise ValueError(f"sampling.max_new_tokens={sampling.max_new_tokens} must equal the "
                         f"sequence length {L}.")
    cut = (u[:, 0] * state.length).long().clamp(max=L - 1)  # uniform in {0..|y|-1}
    y_new, nfe = _regenerate(u[:, 1:L + 1], cut, state.y, model, prompt_ids, attention_mask,
                             sampling)
    r_new = reward(y_new).to(torch.float64)
    len_new = lengths_with_eos(y_new, model.eos_id)
    log_ratio = ((r_new - state.reward) / beta + torch.log(state.length.double())
                 - torch.log(len_new.double()))
    acc = mh_accept(log_ratio, u[:, L + 1])
    new = QuestState(torch.where(acc[:, None], y_new, state.y),
                     torch.where(acc, r_new, state.reward),
                     torch.where(acc, len_new, state.length))
    return new, QuestInfo(acc, torch.isnan(r_new), nfe)
