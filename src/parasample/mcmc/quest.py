"""QUEST (Faria et al., NeurIPS 2024): Metropolis-Hastings over LM outputs for
pi(y) ~ p_LM(y | x) exp(r(y) / beta).

Proposal: pick a cut index i uniformly in {0, ..., |y| - 1}, keep y_<i and regenerate the suffix
from q, the LM after the sampling settings (temperature, top-p). Since y and y' share y_<i,

    log alpha = (r(y') - r(y)) / beta + log |y| - log |y'|
                + sum_{t >= i} [log p(y'_t) - log q(y'_t)] - sum_{t >= i} [log p(y_t) - log q(y_t)],

(every term conditional on the prefix before it), where |y| counts tokens up to and including
EOS. At temperature 1 without top-p, q = p and the last two sums cancel (the paper's ratio); at
any other setting they correct for the proposal, so the chain still targets p_LM exp(r / beta).
Top-p makes q zero outside the nucleus, so the chain can only reach sequences whose every token
lies in its nucleus: it then targets pi restricted to that support (as SMC does). A state outside
it (say, a random start) moves to the first proposal inside it.

A proposal whose reward is NaN is rejected and counted. The per-token log p and log q of the
current state are kept, so the replaced suffix costs nothing to score. Cost of a move: with a
model whose prefill honours left padding exactly (``model.pads_exactly``, as transformers'
causal LMs do: positions come from the attention mask), the kept prefix y_<i is prefilled with
the prompt in one call and only the suffix is generated (QAlign's appendix B): 1 + (L - min_b i_b)
calls for a batch of chains, about half of the uncached cost for one chain. Otherwise (``cached
= False``, or the toy LMs) every kept token is fed back one call at a time: 1 + L calls. With
``init(..., keep_cache=True)`` (models with ``keeps_columns``) the prompt and y are prefilled
once and the cache is kept across moves: a move attends to each row's own kept columns (ragged
cuts by masks), feeds one token per row again and generates into new columns; a rejected
proposal's columns are never attended to again, and the cache is compacted by a gather when it
has grown by four sequences. The same 1 + (L - min_b i_b) calls, none of them a prefill. All
three draw token t of the suffix from uniform t, so the same uniforms give the same chain
(``tests/test_mcmc.py::test_cached_quest_gives_the_chain_of_token_by_token_quest_in_fewer_calls``:
EOS, temperature and top-p, ragged prompts).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from parasample.ancestral import AncestralState, SamplingConfig, lengths_with_eos, select_rows
from parasample.ancestral import init as ar_init
from parasample.ancestral import step as ar_step
from parasample.errors import InputError
from parasample.mcmc.proposal import mh_accept

__all__ = ["QuestState", "KeptCache", "QuestInfo", "init", "step", "noise_dims", "use_cache"]


class KeptCache(NamedTuple):
    """The model's keys and values of each chain's prompt and sequence, kept across moves
    (:func:`init` with ``keep_cache=True``). ``model_state`` is append-only: a proposal's
    tokens go into new columns and a rejected proposal's are never attended to again.
    ``cols [B, L + 1]``: the column holding each chain's token s of (last prompt token, y_0,
    ..., y_{L-1}), -1 where it was never fed; ``width``: the columns the cache holds."""

    model_state: Any
    cols: torch.Tensor
    width: int


class QuestState(NamedTuple):
    """y: ``[B, L]`` current sequences (EOS-padded); reward: ``[B]`` r(y); length: ``[B]`` |y|;
    logp, logq: ``[B, L]`` log p_LM and log q of each token of y given its prefix (0 after
    EOS); cache: the kept prompt-and-sequence cache (None: each move prefills)."""

    y: torch.Tensor
    reward: torch.Tensor
    length: torch.Tensor
    logp: torch.Tensor
    logq: torch.Tensor
    cache: KeptCache | None = None


class QuestInfo(NamedTuple):
    """accepted ``[B]``; nan_rejected ``[B]``; nfe: model calls this step."""

    accepted: torch.Tensor
    nan_rejected: torch.Tensor
    nfe: int


def noise_dims(length: int) -> int:
    """Uniforms per chain and step: the cut, one per regenerated position, the MH test."""
    return length + 2


def _uniform_at(u, t: torch.Tensor, ar) -> torch.Tensor:
    """Each row's uniform for its position ``t [R]``: ``u [R, L]`` or ``u(t, ar)`` (a sampler
    whose uniforms depend on the step's distributions, as mt-QUEST's reverse tries do)."""
    if callable(u):
        return u(t, ar)
    return u.gather(1, t.clamp(max=u.shape[1] - 1)[:, None])[:, 0]


def _start(model, prompt_ids, attention_mask, rows):
    """Prefill one row per chain and repeat it to the rows ``rows [R]`` (their chains)."""
    ar = ar_init(model, prompt_ids, attention_mask)
    return ar if rows is None else select_rows(model, ar, rows)


def _regenerate(u, keep, y, model, prompt_ids, attention_mask, sampling, rows=None,
                forced_rows=None):
    """Keep ``y[:, :keep]`` and draw the rest from q: tokens ``[R, L]``, per-token log p and
    log q ``[R, L]`` (0 after EOS), model calls. ``y [B, L]``, ``keep [B]`` are per chain;
    ``rows [R]`` (default: one row per chain) says which chain each output row continues, and
    ``forced_rows [R]`` marks rows that reproduce their chain's y whole (teacher forcing)."""
    B, L = y.shape
    ar = _start(model, prompt_ids, attention_mask, rows)
    rows = torch.arange(B, device=y.device) if rows is None else rows
    y_r, keep_r = y[rows], keep[rows]
    if forced_rows is not None:
        keep_r = torch.where(forced_rows, L, keep_r)
    nfe, logp = 1, []
    for t in range(L):
        forced = torch.where(t < keep_r, y_r[:, t], -1)
        ar, info = ar_step(_uniform_at(u, torch.full_like(keep_r, t), ar), ar, model, sampling,
                           advance=t < L - 1, forced=forced)
        nfe += info.nfe
        logp.append(info.logp)
        if info.n_active == 0 and t < L - 1:  # every row has ended: pad with EOS (log-probs 0)
            ar = ar._replace(
                tokens=torch.nn.functional.pad(ar.tokens, (0, L - 1 - t), value=model.eos_id),
                logprobs=torch.nn.functional.pad(ar.logprobs, (0, L - 1 - t)))
            break
    logp = torch.nn.functional.pad(torch.stack(logp, 1), (0, L - len(logp)))  # [R, L]
    return ar.tokens, logp, ar.logprobs, nfe


def _prefix_prompts(prompt_ids, attention_mask, y, keep):
    """Prompt + y_<keep per row as one left-padded prompt batch: ``[B, P + max keep]`` ids and
    mask (each row's real tokens moved to the right end, in order)."""
    K = int(keep.max())
    pos = torch.arange(K, device=y.device)
    ids = torch.cat([prompt_ids, y[:, :K]], dim=1)
    mask = torch.cat([attention_mask.to(y.device).long(),
                      (pos[None] < keep[:, None]).long()], dim=1)  # [B, P + K]
    order = torch.sort(mask, dim=1, stable=True).indices  # padding first, real tokens in order
    return ids.gather(1, order), mask.gather(1, order)


def _regenerate_cached(u, keep, y, logp_old, logq_old, model, prompt_ids, attention_mask,
                       sampling, rows=None, forced_rows=None):
    """:func:`_regenerate` with the kept prefix prefilled together with the prompt (one call
    per chain): row r then generates positions keep, keep + 1, ... of its chain from uniforms
    at those positions (forced rows: their chain's tokens). The kept positions' log p and
    log q are the current state's (same tokens, same prefix)."""
    ar = _start(model, *_prefix_prompts(prompt_ids.to(y.device), attention_mask, y, keep), rows)
    rows = torch.arange(y.shape[0], device=y.device) if rows is None else rows
    tokens, logp, logq, nfe, _ = _generate_suffix(ar, 1, u, keep, y, logp_old, logq_old, model,
                                                  sampling, rows, forced_rows)
    return tokens, logp, logq, nfe


def _generate_suffix(ar, nfe, u, keep, y, logp_old, logq_old, model, sampling, rows,
                     forced_rows=None):
    """Generate each row's positions keep, keep + 1, ... from ``ar``, an engine state whose
    next-token logits are those of position ``keep[rows]`` (``nfe`` calls spent on it): tokens,
    log p, log q ``[R, L]`` (the kept positions' from the current state), the calls, and the
    engine state after the last step (the model's cache holds every token fed)."""
    L = y.shape[1]
    y_r, keep_r, R = y[rows], keep[rows], rows.shape[0]
    pos = torch.arange(L, device=y.device)
    kept = pos[None] < keep_r[:, None]  # [R, L]
    tokens = torch.where(kept, y_r, y_r if model.eos_id is None else model.eos_id)
    logp = torch.where(kept, logp_old[rows], 0.0)
    logq = torch.where(kept, logq_old[rows], 0.0)
    idx, steps = torch.arange(R, device=y.device), L - int(keep.min())
    for j in range(steps):
        t = keep_r + j  # [R] each row's position
        at = t.clamp(max=L - 1)
        forced = None if forced_rows is None else torch.where(forced_rows, y_r[idx, at], -1)
        ar, info = ar_step(_uniform_at(u, t, ar), ar, model, sampling, advance=j < steps - 1,
                           forced=forced)
        nfe += info.nfe
        live = t < L  # rows past position L - 1 have no more tokens to draw
        tokens[idx[live], at[live]] = ar.tokens[live, -1]
        logq[idx[live], at[live]] = ar.logprobs[live, -1]
        logp[idx[live], at[live]] = info.logp[live].to(logp.dtype)
        if info.n_active == 0:  # every row has ended: the rest stays EOS (log-probs 0)
            break
    return tokens, logp, logq, nfe, ar


def init(y: torch.Tensor, reward, model, prompt_ids: torch.Tensor,
         attention_mask: torch.Tensor, sampling: SamplingConfig, *,
         keep_cache: bool = False) -> QuestState:
    """Start chains at ``y [B, L]`` (e.g. ancestral samples, or any tokens). When q differs from
    p (temperature, top-p), y's tokens are scored under both by one teacher-forced pass (L model
    calls); when q = p the correction vanishes and nothing is computed.

    ``keep_cache``: prefill each chain's prompt and y once (one more call) and keep the cache
    across moves: a move then attends to its kept prefix in place instead of prefilling it
    (see :func:`step`). Needs a model with ``keeps_columns`` (transformers causal LMs with full
    attention)."""
    L = y.shape[1]
    _check(sampling, L)
    if sampling.q_is_p:
        zero = torch.zeros(y.shape, dtype=torch.float64, device=y.device)
        logp = logq = zero
    else:
        u = torch.zeros(y.shape, dtype=torch.float64, device=y.device)  # unused: all forced
        y, logp, logq, _ = _regenerate(u, torch.full((y.shape[0],), L, device=y.device), y,
                                       model, prompt_ids, attention_mask, sampling)
    cache = _kept_start(y, model, prompt_ids, attention_mask) if keep_cache else None
    return QuestState(y, reward(y).to(torch.float64), lengths_with_eos(y, model.eos_id),
                      logp, logq, cache)


def require_kept(model) -> None:
    """Refuse ``keep_cache=True`` for a model without ``keeps_columns``."""
    if not getattr(model, "keeps_columns", False):
        raise InputError(f"keep_cache=True needs a model whose cache can be attended to by "
                         f"columns (keeps_columns: transformers causal LMs with full "
                         f"attention); {type(model).__name__} has none: use keep_cache=False.")


def _kept_start(y, model, prompt_ids, attention_mask) -> KeptCache:
    """One prefill of prompt + y per chain; y_t sits in column P + t."""
    require_kept(model)
    (B, L), P = y.shape, prompt_ids.shape[1]
    ids = torch.cat([prompt_ids.to(y.device), y], dim=1)
    mask = torch.cat([attention_mask.to(y.device).long(), torch.ones_like(y)], dim=1)
    _, state = model.start(ids, mask)
    cols = torch.cat([torch.full((B, 1), P - 1, device=y.device),
                      P + torch.arange(L, device=y.device).expand(B, L)], dim=1)  # [B, L + 1]
    return KeptCache(state, cols, P + L)


def _regenerate_kept(u, cut, state: QuestState, model, prompt_ids, attention_mask, sampling):
    """:func:`_regenerate_cached` on the kept cache: each row attends to the columns of its
    prompt and y_<cut - 1, and feeds token cut of (last prompt token, y_0, ...) again at its
    position (one call for every row, whatever its cut), then generates its suffix. Returns
    tokens, log p, log q, calls and the proposal's :class:`KeptCache`."""
    y, kc = state.y, state.cache
    (B, L), P, S = y.shape, prompt_ids.shape[1], state.cache.width
    dev = y.device
    s = torch.arange(L + 1, device=dev)
    keep = torch.zeros(B, S, dtype=torch.bool, device=dev)
    keep[:, :P - 1] = attention_mask[:, :P - 1].to(dev).bool()
    b, j = ((s[None] < cut[:, None]) & (kc.cols >= 0)).nonzero(as_tuple=True)
    keep[b, kc.cols[b, j]] = True
    seq = torch.cat([prompt_ids[:, -1:].to(dev), y], dim=1)  # [B, L + 1]
    plen = attention_mask.to(dev).long().sum(1)  # [B] real prompt tokens
    logits, ms = model.refeed(kc.model_state, keep, seq.gather(1, cut[:, None])[:, 0],
                              plen - 1 + cut)
    ar = AncestralState(tokens=torch.empty(B, 0, dtype=torch.long, device=dev),
                        logprobs=torch.empty(B, 0, dtype=torch.float64, device=dev),
                        logits=logits, cache=ms, done=torch.zeros(B, dtype=torch.bool,
                                                                  device=dev))
    tokens, logp, logq, nfe, ar = _generate_suffix(ar, 1, u, cut, y, state.logp, state.logq,
                                                   model, sampling, torch.arange(B, device=dev))
    fed = nfe - 1  # tokens fed after the first: columns S + 1, S + 2, ...
    step = s[None] - cut[:, None] - 1  # [B, L + 1] the step that fed token s (s > cut)
    cols = torch.where(s[None] < cut[:, None], kc.cols,
                       torch.where(s[None] == cut[:, None], S,
                                   torch.where((step >= 0) & (step < fed), S + 1 + step, -1)))
    return tokens, logp, logq, nfe, KeptCache(ar.cache, cols, S + 1 + fed)


def _kept_settle(proposal: KeptCache, current: KeptCache, acc: torch.Tensor, model,
                 prompt_len: int) -> KeptCache:
    """The cache after the MH test: the proposal's columns where accepted, the current ones
    elsewhere (both live in the same append-only cache). When the cache has grown past four
    sequences' worth of columns it is compacted to prompt + y (one gather per layer)."""
    cols = torch.where(acc[:, None], proposal.cols, current.cols)  # [B, L + 1]
    B, L1 = cols.shape
    if proposal.width <= prompt_len + 4 * L1:
        return KeptCache(proposal.model_state, cols, proposal.width)
    head = torch.arange(prompt_len - 1, device=cols.device).expand(B, prompt_len - 1)
    src = torch.cat([head, cols.clamp(min=0)], dim=1)  # [B, P + L]
    state = model.gather_columns(proposal.model_state, src)
    new = torch.where(cols >= 0, prompt_len - 1 + torch.arange(L1, device=cols.device), -1)
    return KeptCache(state, new, prompt_len + L1 - 1)


def _check(sampling: SamplingConfig, L: int) -> None:
    if sampling.max_new_tokens != L:
        raise InputError(f"sampling.max_new_tokens={sampling.max_new_tokens} must equal the "
                         f"sequence length {L}.")


def use_cache(model, cached: bool | None, prompt_len: int, L: int) -> bool:
    """Whether a move prefills its kept prefix with the prompt: ``cached`` (None: whenever the
    model can). It needs ``model.pads_exactly``, and room in the context for the prompt and 2L
    tokens (the rows of a batch step on until its smallest cut's suffix is done)."""
    able = bool(getattr(model, "pads_exactly", False))
    limit = getattr(model, "max_length", None)
    room = limit is None or prompt_len + 2 * L <= limit
    if cached is None:
        return able and room
    if cached and not able:
        raise InputError(f"cached QUEST needs a model whose prefill honours left padding "
                         f"(pads_exactly); {type(model).__name__} does not: use cached=False.")
    if cached and not room:
        raise InputError(f"cached QUEST needs prompt + 2 x {L} tokens = {prompt_len + 2 * L} "
                         f"of context, the model has {limit}: use cached=False.")
    return bool(cached)


def _suffix(x: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """sum_{t >= cut} x[:, t]: ``[B, L], [B] -> [B]``."""
    pos = torch.arange(x.shape[1], device=x.device)
    return torch.where(pos[None] >= cut[:, None], x, 0.0).sum(1)


def step(u: torch.Tensor, state: QuestState, model, prompt_ids: torch.Tensor,
         attention_mask: torch.Tensor, reward, beta: float, sampling: SamplingConfig,
         cached: bool | None = None) -> tuple[QuestState, QuestInfo]:
    """One QUEST move per chain; ``u [B, L + 2]``; ``prompt_ids [B, P]`` one row per chain.
    ``cached``: prefill the kept prefix with the prompt (default: when ``model.pads_exactly``);
    False feeds it back token by token (the reference; the same chain). A state from
    ``init(..., keep_cache=True)`` always moves on its kept cache (``cached`` is not used)."""
    if not beta > 0:
        raise InputError(f"beta={beta} must be > 0 (pi ~ p exp(r / beta)).")
    L = state.y.shape[1]
    _check(sampling, L)
    u = u.to(state.y.device)
    cut = (u[:, 0] * state.length).long().clamp(max=L - 1)  # uniform in {0..|y|-1}
    if state.cache is not None:
        y_new, logp_new, logq_new, nfe, kept = _regenerate_kept(
            u[:, 1:L + 1], cut, state, model, prompt_ids, attention_mask, sampling)
    elif use_cache(model, cached, prompt_ids.shape[1], L):
        y_new, logp_new, logq_new, nfe = _regenerate_cached(
            u[:, 1:L + 1], cut, state.y, state.logp, state.logq, model, prompt_ids,
            attention_mask, sampling)
    else:
        y_new, logp_new, logq_new, nfe = _regenerate(u[:, 1:L + 1], cut, state.y, model,
                                                     prompt_ids, attention_mask, sampling)
    r_new = reward(y_new).to(torch.float64)
    len_new = lengths_with_eos(y_new, model.eos_id)
    outside = torch.isinf(state.logq).any(1)  # y has a token q can never draw (top-p)
    # the proposal correction sum [log p - log q] over the regenerated and the replaced suffix
    # (0 when q = p); computed only for states inside q's support, where it is finite
    safe = lambda x: torch.where(outside[:, None], 0.0, x)  # noqa: E731
    correction = (_suffix(safe(logp_new - logq_new), cut)
                  - _suffix(safe(state.logp - state.logq), cut))
    log_ratio = ((r_new - state.reward) / beta + torch.log(state.length.double())
                 - torch.log(len_new.double()) + correction)
    # from outside the support, move to any proposal inside it (pi is zero where it stands)
    into = ~torch.isinf(logq_new).any(1)
    log_ratio = torch.where(outside, torch.where(into, math.inf, -math.inf), log_ratio)
    log_ratio = torch.where(torch.isnan(r_new), math.nan, log_ratio)
    acc = mh_accept(log_ratio, u[:, L + 1])
    keep = lambda new, old: torch.where(acc.view(-1, *[1] * (new.dim() - 1)), new, old)  # noqa
    cache = None if state.cache is None else _kept_settle(kept, state.cache, acc, model,
                                                            prompt_ids.shape[1])
    new = QuestState(keep(y_new, state.y), keep(r_new, state.reward),
                     keep(len_new, state.length), keep(logp_new, state.logp),
                     keep(logq_new, state.logq), cache)
    return new, QuestInfo(acc, torch.isnan(r_new), nfe)
