"""Multiple-try p-NCG: the Liu-Liang-Wong (2000) multiple-try Metropolis with p-NCG proposals.

Per chain and step: draw k tries y_1..y_k ~ q(. | x); pick y = y_J with probability proportional
to w(y_j, x); draw k - 1 reverse tries x*_1..x*_{k-1} ~ q(. | y) and set x*_k = x; accept y with
probability min(1, sum_j w(y_j, x) / sum_j w(x*_j, y)). With w(y, x) = pi(y) q(x | y) lambda(y, x)
and lambda symmetric, pi is stationary. Two choices of lambda (the ``weights`` argument):

* ``"lambda1"``: lambda = 1, w(y, x) = pi(y) q(x | y);
* ``"importance"``: lambda = 1 / (q(y | x) q(x | y)), w(y, x) = pi(y) / q(y | x).

All tries of all chains are evaluated as one batch: 2k - 1 gradient evaluations per step. A
chain whose k tries all weigh zero (log pi = -inf, a hard constraint; NaN counts as -inf) keeps
its state: the move is rejected, as the MTM ratio prescribes (its numerator is zero).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from parasample.errors import InputError
from parasample.mcmc.pncg import PNCGState, init  # the state is p-NCG's
from parasample.mcmc.proposal import (
    check_alpha_p,
    draw_many,
    mh_accept,
    pncg_logits,
    seq_log_prob,
    seq_log_prob_many,
    value_and_grad,
)
from parasample.noise import icdf_categorical

__all__ = ["MTMInfo", "WEIGHTS", "init", "step", "noise_dims"]

WEIGHTS = ("lambda1", "importance")


class MTMInfo(NamedTuple):
    """accepted ``[B]``; nan_rejected ``[B]``; nfe: gradient evaluations (2k - 1)."""

    accepted: torch.Tensor
    nan_rejected: torch.Tensor
    nfe: int


def noise_dims(length: int, tries: int) -> int:
    """Uniforms per chain and step: k tries + 1 selection + (k - 1) reverse tries + 1 MH."""
    return (2 * tries - 1) * length + 2


def _evaluate(target, ys: torch.Tensor, alpha: float, p: int):
    """``ys [B, k, L]`` -> log pi ``[B, k]`` and proposal logits ``[B, k, L, V]``."""
    B, k, L = ys.shape
    flat = ys.reshape(B * k, L)
    logp, g = value_and_grad(target, flat)
    q = pncg_logits(flat, g, target.embedding, alpha, p)
    return logp.view(B, k), q.view(B, k, L, -1)


def _log_weights(logp, logq_fwd, logq_rev, weights):
    """log w(y, x) from log pi(y), log q(y | x) and log q(x | y)."""
    return logp + logq_rev if weights == "lambda1" else logp - logq_fwd


def step(u: torch.Tensor, state: PNCGState, target, alpha: float, p: int = 2, tries: int = 4,
         weights: str = "lambda1") -> tuple[PNCGState, MTMInfo]:
    """One multiple-try move per chain; ``u [B, noise_dims(L, tries)]``."""
    check_alpha_p(alpha, p)
    if not (isinstance(tries, int) and tries >= 1):
        raise InputError(f"tries={tries} must be an integer >= 1.")
    if weights not in WEIGHTS:
        raise InputError(f"weights={weights!r}; choose one of {WEIGHTS}.")
    B, L = state.x.shape
    k = tries
    u_fwd, u_sel = u[:, :k * L].view(B, k, L), u[:, k * L]
    u_rev, u_acc = u[:, k * L + 1: (2 * k - 1) * L + 1].view(B, k - 1, L), u[:, -1]

    # forward tries from x
    ys = draw_many(state.q_logits, u_fwd)  # [B, k, L]
    logp_y, q_y = _evaluate(target, ys, alpha, p)
    lq_y_given_x = seq_log_prob_many(state.q_logits, ys)  # [B, k]
    lq_x_given_y = seq_log_prob(q_y, state.x[:, None].expand(B, k, L))  # [B, k]
    lw_fwd = torch.nan_to_num(_log_weights(logp_y, lq_y_given_x, lq_x_given_y, weights),
                              nan=-torch.inf)  # [B, k]
    # every try of a chain may weigh zero (log pi = -inf: a hard constraint); such a move
    # selects try 0 and is rejected, as in multiple-try QUEST
    dead = torch.isneginf(lw_fwd).all(1)  # [B]
    sel_w = torch.softmax(torch.where(dead[:, None], 0.0, lw_fwd), -1)
    j = icdf_categorical(sel_w, u_sel)
    pick = torch.arange(B)
    y, logp_sel, q_sel = ys[pick, j], logp_y[pick, j], q_y[pick, j]  # [B, L], [B], [B, L, V]

    # reverse tries from y; the k-th reverse point is x itself
    if k > 1:
        xs = draw_many(q_sel, u_rev)  # [B, k-1, L]
        logp_xs, q_xs = _evaluate(target, xs, alpha, p)
        lq_xs_given_y = seq_log_prob_many(q_sel, xs)
        lq_y_given_xs = seq_log_prob(q_xs, y[:, None].expand(B, k - 1, L))
        lw_rev = _log_weights(logp_xs, lq_xs_given_y, lq_y_given_xs, weights)
    else:
        lw_rev = state.logp.new_empty(B, 0)
    lw_x = _log_weights(state.logp, seq_log_prob(q_sel, state.x),
                        seq_log_prob(state.q_logits, y), weights)  # [B]
    # a NaN weight is a zero weight on both sides, so NaN states are outside the target
    lw_rev = torch.nan_to_num(torch.cat([lw_rev, lw_x[:, None]], dim=1), nan=-torch.inf)  # [B, k]

    log_ratio = torch.logsumexp(lw_fwd, -1) - torch.logsumexp(lw_rev, -1)
    log_ratio = torch.where(dead, -torch.inf, log_ratio)
    acc = mh_accept(log_ratio, u_acc) & torch.isfinite(logp_sel)
    new = PNCGState(
        x=torch.where(acc[:, None], y, state.x),
        logp=torch.where(acc, logp_sel, state.logp),
        q_logits=torch.where(acc[:, None, None], q_sel, state.q_logits),
    )
    return new, MTMInfo(acc, torch.isnan(log_ratio), 2 * k - 1)
