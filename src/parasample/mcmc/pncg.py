"""p-NCG: gradient-informed discrete MCMC over token sequences (Du et al., ICML 2024).

Every position is proposed in parallel from q_i(v | x) (see
:func:`~parasample.mcmc.proposal.pncg_logits`) and the move is corrected by Metropolis-Hastings,

    accept with probability min(1, pi(x') q(x | x') / (pi(x) q(x' | x))),

so pi is the exact stationary distribution for any alpha > 0 and p in {1, 2}. Batched over
chains (dimension 0); one step is one gradient evaluation (NFE 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from parasample.mcmc.proposal import (
    check_alpha_p,
    draw,
    mh_accept,
    pncg_logits,
    seq_log_prob,
    value_and_grad,
)

__all__ = ["PNCGState", "PNCGInfo", "init", "step", "noise_dims"]


class PNCGState(NamedTuple):
    """x: ``[B, L]`` current states; logp: ``[B]`` log pi(x); q_logits: ``[B, L, V]`` the
    proposal's log-weights at x (cached: they become the reverse proposal after a move)."""

    x: torch.Tensor
    logp: torch.Tensor
    q_logits: torch.Tensor


class PNCGInfo(NamedTuple):
    """accepted: ``[B]`` bool; nan_rejected: ``[B]`` bool (a NaN target value, rejected);
    nfe: gradient evaluations this step."""

    accepted: torch.Tensor
    nan_rejected: torch.Tensor
    nfe: int


def init(x: torch.Tensor, target, alpha: float, p: int = 2) -> PNCGState:
    """Start chains at ``x [B, L]`` (one gradient evaluation)."""
    check_alpha_p(alpha, p)
    logp, g = value_and_grad(target, x)
    return PNCGState(x, logp, pncg_logits(x, g, target.embedding, alpha, p))


def noise_dims(length: int) -> int:
    """Uniforms one step consumes per chain: one per position, one for the MH test."""
    return length + 1


def step(u: torch.Tensor, state: PNCGState, target, alpha: float, p: int = 2
         ) -> tuple[PNCGState, PNCGInfo]:
    """One p-NCG move for every chain. ``u [B, L + 1]``: proposal uniforms, then the MH one."""
    check_alpha_p(alpha, p)
    L = state.x.shape[1]
    y = draw(state.q_logits, u[:, :L])  # [B, L]
    logp_y, g_y = value_and_grad(target, y)
    q_y = pncg_logits(y, g_y, target.embedding, alpha, p)  # [B, L, V]
    log_ratio = (logp_y - state.logp + seq_log_prob(q_y, state.x)
                 - seq_log_prob(state.q_logits, y))
    acc = mh_accept(log_ratio, u[:, L])
    new = PNCGState(
        x=torch.where(acc[:, None], y, state.x),
        logp=torch.where(acc, logp_y, state.logp),
        q_logits=torch.where(acc[:, None, None], q_y, state.q_logits),
    )
    return new, PNCGInfo(acc, torch.isnan(log_ratio), 1)
