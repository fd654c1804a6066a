"""Resample-move SMC (Gilks & Berzuini 2001): token SMC whose particles are rejuvenated by QUEST
or multiple-try QUEST moves.

After step t the weighted particles target gamma_t(y_<=t) ~ p_LM(y_<=t) exp(r_t(y_<=t) / beta),
r_t the reward's ``partial`` (the twist). A QUEST move on the t-token prefixes with reward r_t
leaves gamma_t invariant, so moving a particle keeps it properly weighted (E[w f(Y')] =
E[w (K f)(Y)] = gamma_t(K f) = gamma_t(f)), whatever its weight; after a resampling, when the
weights are equal, this restores the diversity that resampling removed (the research log's
bridge between p-NCG's cheap blind moves and QUEST's coherent expensive ones). The moved prefixes
are then prefilled again (one call when the model honours left padding, ``pads_exactly``; t calls
fed back otherwise) so that SMC continues from them; the evidence estimate is unchanged (moves
do not touch the weights), so it stays unbiased.

``keep_cache=True`` (QUEST moves, models with ``keeps_columns``) prefills nothing: the moves run
on the particles' own KV cache, which SMC's steps and resampling (a reorder by index) have kept
with token s of (last prompt token, y_0, ...) in column P - 1 + s (:class:`KeptCache`), and the
moved particles' columns are gathered back into that layout, their last token fed again (one
call of one token instead of a prefill of prompt + prefix).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

from parasample.ancestral import AncestralState, SamplingConfig, lengths_with_eos
from parasample.ancestral import step as ar_step
from parasample.errors import InputError
from parasample.mcmc import mtquest, quest
from parasample.mcmc.quest import KeptCache, _prefix_prompts, _start
from parasample.smc.smc import SMCState

__all__ = ["MoveInfo", "rejuvenate", "noise_dims"]


class MoveInfo(NamedTuple):
    """accepted ``[B]``: the fraction of this call's moves each particle accepted; nfe: model
    calls (the moves and the prefill of the moved prefixes)."""

    accepted: torch.Tensor
    nfe: int


def noise_dims(t: int, moves: int = 1, tries: int = 1) -> int:
    """Uniforms per particle for ``moves`` moves on t-token prefixes."""
    per = quest.noise_dims(t) if tries == 1 else mtquest.noise_dims(t, tries)
    return moves * per


def _replay(model, prompt_ids, attention_mask, y, logq, cached, advance
            ) -> tuple[AncestralState, int]:
    """The ancestral state after the prompt and the tokens ``y [B, t]``: what generating y
    would have left (KV cache, next-token logits unless not ``advance``, done flags), and its
    model calls."""
    B, t = y.shape
    if cached:
        full = torch.full((B,), t, dtype=torch.long, device=y.device)
        ar = _start(model, *_prefix_prompts(prompt_ids.to(y.device), attention_mask, y, full),
                    None)
        return ar._replace(tokens=y, logprobs=logq, done=_done(model, y)), 1
    ar, nfe = _start(model, prompt_ids, attention_mask, None), 1
    sampling = SamplingConfig(max_new_tokens=max(t, 1))
    for i in range(t):
        u = torch.zeros(B, dtype=torch.float64, device=y.device)  # unused: every token forced
        ar, info = ar_step(u, ar, model, sampling, advance=advance or i < t - 1,
                           forced=y[:, i])
        nfe += info.nfe
    return ar._replace(logprobs=logq), nfe


def _particles_cache(model_state, model, P: int, B: int, t: int, device) -> KeptCache:
    """SMC's own cache as QUEST's :class:`KeptCache`: token s of (last prompt token, y_0, ...,
    y_{t-1}) in column P - 1 + s where it was fed (the prefill's P columns, then one per step)."""
    width = model.cache_width(model_state)
    col = P - 1 + torch.arange(t + 1, device=device)
    cols = torch.where(col < width, col, -1).expand(B, t + 1)
    return KeptCache(model_state, cols, width)


def _done(model, y):
    eos = model.eos_id
    return torch.zeros(y.shape[0], dtype=torch.bool, device=y.device) if eos is None else \
        (y == eos).any(1)


def _resume(kc: KeptCache, model, prompt_ids, attention_mask, y, logq
            ) -> tuple[AncestralState, int]:
    """The ancestral state after the prompt and ``y [B, t]`` from the moves' kept cache: the
    prompt's columns and each row's y_<t-1 gathered into the layout of :func:`_particles_cache`
    (a gather, no forward), then y_{t-1} fed again (one call of one token)."""
    (B, t), P = y.shape, prompt_ids.shape[1]
    dev = y.device
    head = torch.arange(P - 1, device=dev).expand(B, P - 1)
    state = model.gather_columns(kc.model_state, torch.cat([head, kc.cols[:, :t].clamp(min=0)],
                                                           dim=1))  # [B, P - 1 + t] columns
    mask = torch.cat([attention_mask.to(dev).long(), torch.ones(B, t - 1, dtype=torch.long,
                                                                device=dev)], dim=1)
    plen = attention_mask.to(dev).long().sum(1)
    logits, state = model.refeed(state, mask, y[:, t - 1], plen - 1 + t)
    return AncestralState(tokens=y, logprobs=logq, logits=logits, cache=state,
                          done=_done(model, y)), 1


def rejuvenate(u: torch.Tensor, state: SMCState, model, prompt_ids: torch.Tensor,
               attention_mask: torch.Tensor, reward, beta: float, sampling: SamplingConfig, *,
               moves: int = 1, tries: int = 1, try_source: str = "iid",
               cached: bool | None = None, keep_cache: bool = False, advance: bool = True
               ) -> tuple[SMCState, MoveInfo]:
    """``moves`` QUEST (``tries`` = 1) or mt-QUEST moves of every particle, invariant for the
    current intermediate target; ``u [B, noise_dims(t, moves, tries)]``; ``prompt_ids [B, P]``
    one row per particle. The weights and the evidence are unchanged. ``advance`` as in
    :func:`parasample.smc.smc.step`: False after the last token (no next-token logits).
    ``keep_cache``: run the moves on the particles' own cache (see the module doc)."""
    if moves < 1:
        raise InputError(f"moves={moves} must be >= 1.")
    if keep_cache and tries != 1:
        raise InputError(f"keep_cache=True runs QUEST moves (tries=1), not tries={tries}: use "
                         "keep_cache=False for multiple-try moves.")
    if keep_cache:
        quest.require_kept(model)
    y = state.ar.tokens  # [B, t]
    B, t = y.shape
    if t == 0:  # nothing generated yet: nothing to move
        return state, MoveInfo(torch.zeros(B, dtype=torch.float64), 0)
    cached = quest.use_cache(model, cached, prompt_ids.shape[1] + t, t)  # + the replay
    qs = replace(sampling, max_new_tokens=t)
    twist = reward.partial
    if qs.q_is_p:  # the particles' own log q are their log p: nothing to compute
        lq = state.ar.logprobs.to(torch.float64)
        st = quest.QuestState(y, twist(y).to(torch.float64), lengths_with_eos(y, model.eos_id),
                              lq, lq)
        nfe = 0
    else:  # log p of every token: one teacher-forced pass (t calls)
        st = quest.init(y, twist, model, prompt_ids, attention_mask, qs)
        nfe = t
    if keep_cache:
        st = st._replace(cache=_particles_cache(state.ar.cache, model, prompt_ids.shape[1], B,
                                                t, y.device))
    per = noise_dims(t, 1, tries)
    acc = torch.zeros(B, dtype=torch.float64, device=y.device)
    for m in range(moves):
        um = u[:, m * per:(m + 1) * per]
        if tries == 1:
            st, info = quest.step(um, st, model, prompt_ids, attention_mask, twist, beta, qs,
                                  cached=cached)
        else:
            st, info = mtquest.step(um, st, model, prompt_ids, attention_mask, twist, beta, qs,
                                    tries=tries, source=try_source, cached=cached)
        acc += info.accepted.to(acc.dtype) / moves
        nfe += info.nfe
    logq = st.logq.to(state.ar.logprobs.dtype)
    if keep_cache:
        ar, calls = _resume(st.cache, model, prompt_ids, attention_mask, st.y, logq)
    else:
        ar, calls = _replay(model, prompt_ids, attention_mask, st.y, logq, cached, advance)
    moved = SMCState(ar, state.logw, state.log_evidence, twist(st.y).to(torch.float64))
    return moved, MoveInfo(acc, nfe + calls)
