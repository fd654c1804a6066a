"""Multiple-try QUEST: QUEST's suffix-regeneration proposal inside multiple-try Metropolis, with
the tries drawn i.i.d. or correlated within the move.

A move of chain y picks a cut i uniformly in {0, ..., |y| - 1} (as QUEST) and, from the shared
prefix y_<i, regenerates k suffixes (the tries), selects one, y*, with probability proportional
to its weight, regenerates k - 1 reverse tries from the same prefix and accepts y* with
probability min(1, sum_j w(y_j; y) / sum_j w(x_j; y*)), x_k = y (Liu, Liang & Wong 2000).

Derivation. Given the cut, the tries come from T_i(a, b) = q(b_>=i | a_<i), and the cut was
chosen with probability 1 / |a|. Multiple-try Metropolis with kernel T_i for the target
pi~(a) = pi(a) / |a| satisfies pi~(y) K_i(y, y*) = pi~(y*) K_i(y*, y), which is the detailed
balance of the whole move in pi (the 1 / |a| of choosing i on both sides). With
pi(a) ~ p(a) exp(r(a) / beta) and p(a) = p(y_<i) p(a_>=i | y_<i) (the prefix is common, so its
factor cancels), the log-weights are, per try b:

* ``lambda1`` (lambda = 1): w(b; a) = pi~(b) T_i(b, a), and T_i(b, a) = q(a_>=i | y_<i) is the
  same for every try: log w = log p(b_>=i) + r(b) / beta - log |b| (+ log q(a_>=i), which
  enters the ratio once on each side);
* ``importance`` (lambda = 1 / (T T)): w(b; a) = pi~(b) / T_i(a, b): the same minus
  log q(b_>=i). At temperature 1 without top-p, q = p and the weights are exp(r / beta) / |b|.

Correlated tries (Craiu & Lemieux 2007): the k tries' uniforms form one exchangeable group
(each try is still an exact draw from T_i), and the reverse set is drawn from the same joint law
conditioned on one member being y, which keeps the move exact:

* ``iid``: independent tries; the reverse tries are fresh;
* ``lattice``: position t of try j gets frac(Delta_t + j z_t / k) (a randomly shifted rank-1
  lattice over the suffix positions, z the Korobov vector). Given y, the member's uniform at t
  is uniform inside the interval of y's token under q (u* = lo_t + w_t v), and the other members
  are frac(u* + m z_t / k), m = 1..k-1 (the lattice is a group, so y's index does not matter);
* ``antithetic`` (k even): tries in pairs u, 1 - u; y's partner in the reverse set gets 1 - u*,
  the other pairs are fresh.

The intervals lo_t, w_t come from one teacher-forced row that replays y beside the tries, in the
same batch, which also gives y's suffix log-probabilities. Every row of a move (k tries, k - 1
reverse tries, y) continues the same prefix, so a move is one batched regeneration: 1 + (L -
min cut) model calls when the prefix is prefilled (``cached``, :func:`parasample.mcmc.quest.step`),
1 + L otherwise, each over 2k rows per chain. Rewards that are NaN weigh zero; a move whose
tries all weigh zero is rejected. Under top-p a state outside q's support moves to the selected
try, as in QUEST.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from parasample.ancestral import SamplingConfig, lengths_with_eos, sampling_probs
from parasample.errors import InputError
from parasample.mcmc.proposal import mh_accept
from parasample.mcmc.quest import (
    QuestState,
    _check,
    _regenerate,
    _regenerate_cached,
    _suffix,
    use_cache,
)
from parasample.mcmc.quest import init as quest_init
from parasample.noise import icdf_categorical
from parasample.noise.sources import korobov_vector

__all__ = ["MTQuestInfo", "TRY_SOURCES", "WEIGHTS", "init", "step", "noise_dims"]

TRY_SOURCES = ("iid", "lattice", "antithetic")
WEIGHTS = ("lambda1", "importance")
_BELOW_ONE = 1.0 - 2.0 ** -53

init = quest_init  # the state is QUEST's: y, its reward and length (log-probs are recomputed)


class MTQuestInfo(NamedTuple):
    """accepted ``[B]``; nan_rejected ``[B]``: the selected try's reward was NaN or every try
    weighed zero; nfe: model calls this move (each over 2k rows per chain)."""

    accepted: torch.Tensor
    nan_rejected: torch.Tensor
    nfe: int


def noise_dims(length: int, tries: int) -> int:
    """Uniforms per chain and move: the cut, k L for the tries, k L for the reverse tries, the
    selection and the MH test."""
    return 2 * tries * length + 3


def check(tries: int, source: str, weights: str, beta: float) -> None:
    """The move's settings, with a message that says what to change."""
    if not (isinstance(tries, int) and tries >= 1):
        raise InputError(f"tries={tries} must be an integer >= 1.")
    if source not in TRY_SOURCES:
        raise InputError(f"try source {source!r}: choose one of {', '.join(TRY_SOURCES)}.")
    if weights not in WEIGHTS:
        raise InputError(f"weights {weights!r}: choose one of {', '.join(WEIGHTS)}.")
    if source == "antithetic" and tries % 2:
        raise InputError(f"tries={tries} with antithetic tries: they come in pairs, so the "
                         f"number of tries must be even; use {tries + 1}.")
    if not beta > 0:
        raise InputError(f"beta={beta} must be > 0 (pi ~ p exp(r / beta)).")


def _forward_uniforms(source: str, fwd: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The k tries' uniforms ``[B, k, L]`` from ``fwd [B, k, L]`` i.i.d. uniforms."""
    B, k, L = fwd.shape
    if source == "iid":
        return fwd
    if source == "lattice":  # one shift per chain and position: fwd[:, 0]
        j = torch.arange(k, dtype=torch.float64, device=fwd.device)
        return torch.remainder(fwd[:, :1] + j[None, :, None] * z[None, None] / k, 1.0)
    a = fwd[:, : k // 2]  # antithetic: pairs (u, 1 - u)
    return torch.stack([a, (1.0 - a).clamp(max=_BELOW_ONE)], dim=2).reshape(B, k, L)


def _reverse_uniforms(source: str, rev: torch.Tensor, ustar: torch.Tensor, z_t
                      ) -> torch.Tensor:
    """The k - 1 reverse tries' uniforms at one position, ``[B, k - 1]``, given u* ``[B]``
    (y's own uniform there, drawn inside its token's interval); ``rev [B, k]`` i.i.d.;
    ``z_t [B]`` the lattice's generating coordinate at each chain's position."""
    k = rev.shape[1]
    if source == "iid":
        return rev[:, 1:]
    if source == "lattice":
        m = torch.arange(1, k, dtype=torch.float64, device=rev.device)
        return torch.remainder(ustar[:, None] + m[None] * z_t[:, None] / k, 1.0)
    others = rev[:, 1: 1 + (k - 2) // 2]  # antithetic: y's partner, then fresh pairs
    pairs = torch.stack([others, (1.0 - others).clamp(max=_BELOW_ONE)], dim=2).flatten(1)
    return torch.cat([(1.0 - ustar).clamp(max=_BELOW_ONE)[:, None], pairs], dim=1)


def step(u: torch.Tensor, state: QuestState, model, prompt_ids: torch.Tensor,
         attention_mask: torch.Tensor, reward, beta: float, sampling: SamplingConfig, *,
         tries: int = 4, source: str = "iid", weights: str = "lambda1",
         cached: bool | None = None) -> tuple[QuestState, MTQuestInfo]:
    """One multiple-try QUEST move per chain; ``u [B, noise_dims(L, tries)]``, ``prompt_ids
    [B, P]`` one row per chain. ``cached``: prefill the kept prefix with the prompt (default:
    when ``model.pads_exactly``)."""
    check(tries, source, weights, beta)
    B, L = state.y.shape
    _check(sampling, L)
    k, dev = tries, state.y.device
    u = u.to(dev)
    if u.shape[1] != noise_dims(L, k):
        raise InputError(f"u has {u.shape[1]} uniforms per chain; mt-QUEST with {k} tries over "
                         f"{L} tokens needs noise_dims = {noise_dims(L, k)}.")
    cut = (u[:, 0] * state.length).long().clamp(max=L - 1)  # uniform in {0..|y|-1}
    fwd = u[:, 1:1 + k * L].view(B, k, L)
    rev = u[:, 1 + k * L:1 + 2 * k * L].view(B, k, L)
    z = korobov_vector(k, L).to(device=dev, dtype=torch.float64) if source == "lattice" else None
    fwd_u = _forward_uniforms(source, fwd, z)  # [B, k, L]

    # rows per chain: k tries, k - 1 reverse tries, y replayed (role 2k - 1)
    R = 2 * k
    rows = torch.arange(B, device=dev).repeat_interleave(R)  # [B R]
    role = torch.arange(R, device=dev).repeat(B)  # [B R]
    replay = role == R - 1
    y_rows = (torch.arange(B, device=dev) * R + R - 1)  # [B] the replay row of each chain

    def uniforms(t: torch.Tensor, ar) -> torch.Tensor:  # t [B R] each row's position
        tc = t.clamp(max=L - 1).view(B, R)[:, 0]  # [B] (rows of a chain share the position)
        out = torch.full((B, R), 0.5, dtype=torch.float64, device=dev)
        out[:, :k] = fwd_u.gather(2, tc[:, None, None].expand(B, k, 1))[..., 0]
        rev_t = rev.gather(2, tc[:, None, None].expand(B, k, 1))[..., 0]  # [B, k]
        ustar = rev_t[:, 0]
        if source != "iid":  # y's uniform inside its token's interval under q
            probs = sampling_probs(ar.logits[y_rows], sampling)  # [B, V]
            tok = state.y.gather(1, tc[:, None])  # [B, 1]
            lo = torch.cumsum(probs, -1).gather(1, tok)[:, 0] - probs.gather(1, tok)[:, 0]
            width = probs.gather(1, tok)[:, 0]
            ended = tc >= state.length  # past y's EOS: no constraint
            lo, width = torch.where(ended, 0.0, lo), torch.where(ended, 1.0, width)
            ustar = (lo + width * ustar).clamp(0.0, _BELOW_ONE)
        out[:, k:R - 1] = _reverse_uniforms(source, rev_t, ustar, None if z is None else z[tc])
        return out.view(-1)

    if use_cache(model, cached, prompt_ids.shape[1], L):
        zero = torch.zeros(B, L, dtype=torch.float64, device=dev)  # kept log-probs: not needed
        tokens, logp, logq, nfe = _regenerate_cached(uniforms, cut, state.y, zero, zero, model,
                                                     prompt_ids, attention_mask, sampling,
                                                     rows=rows, forced_rows=replay)
    else:
        tokens, logp, logq, nfe = _regenerate(uniforms, cut, state.y, model, prompt_ids,
                                              attention_mask, sampling, rows=rows,
                                              forced_rows=replay)
    cut_r = cut[rows]
    r = reward(tokens).to(torch.float64)  # [B R]
    length = lengths_with_eos(tokens, model.eos_id)  # [B R]
    P, Q = _suffix(logp, cut_r), _suffix(logq, cut_r)  # [B R]
    lw = P + r / beta - torch.log(length.double())
    if weights == "importance":
        lw = lw - Q
    lw = torch.nan_to_num(lw, nan=-math.inf).view(B, R)
    lw_fwd, lw_rev = lw[:, :k], lw[:, k:]  # reverse tries and y
    Q = Q.view(B, R)

    dead = torch.isinf(lw_fwd).all(1) & (lw_fwd < 0).all(1)  # every try weighs zero
    sel_w = torch.where(dead[:, None], 0.0, torch.softmax(lw_fwd, -1)).nan_to_num(0.0)
    sel_w[:, 0] = torch.where(dead, 1.0, sel_w[:, 0])
    j = icdf_categorical(sel_w, u[:, -2])  # [B]
    pick = torch.arange(B, device=dev) * R + j  # the selected rows
    log_ratio = torch.logsumexp(lw_fwd, -1) - torch.logsumexp(lw_rev, -1)
    if weights == "lambda1":  # + log q(y_>=i) - log q(y*_>=i), the reverse kernels' factor
        log_ratio = log_ratio + Q[:, -1] - Q.reshape(-1)[pick]
    outside = torch.isinf(Q[:, -1])  # y has a token q can never draw (top-p)
    log_ratio = torch.where(outside, math.inf, log_ratio)
    nan = dead | torch.isnan(r[pick])
    log_ratio = torch.where(nan, -math.inf, log_ratio)
    acc = mh_accept(log_ratio, u[:, -1])
    keep = lambda new, old: torch.where(acc.view(-1, *[1] * (new.dim() - 1)), new, old)  # noqa
    new = QuestState(keep(tokens[pick], state.y), keep(r[pick], state.reward),
                     keep(length[pick], state.length), keep(logp[pick], state.logp),
                     keep(logq[pick], state.logq))
    return new, MTQuestInfo(acc, nan, nfe)
