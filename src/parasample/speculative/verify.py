"""The verification pass of exact speculative decoding (see :mod:`parasample.speculative.engine`
for both verifiers and the proof of exactness): the token sequential sampling draws at a
position (:func:`draw_token`), and the window of tokens a row emits after one verification
forward (:func:`verify_window`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from parasample.ancestral import AncestralState, SamplingConfig, sampling_probs
from parasample.ancestral import step as ancestral_step
from parasample.noise import icdf_categorical

if TYPE_CHECKING:  # annotations only: the engine imports this module
    from parasample.speculative.engine import DraftContext, SpecConfig, SpecNoise

__all__ = ["draw_token", "verify_window", "rejection_token", "adapt_draft_len"]


def adapt_draft_len(draft_len: int, committed: torch.Tensor, drafted: int, max_len: int) -> int:
    """The adaptive rule of both speculative decoders (autoregressive and masked diffusion):
    the next call's draft length from this call's ``committed [B']`` tokens per running row
    (1 .. drafted + 1). Doubles (up to ``max_len``) when every row kept all ``drafted`` drafts,
    halves (down to 1) when every row kept fewer than half of them, else stays. It reads only
    the past, so it changes the calls' shapes, never the law or the tokens of either verifier."""
    if not drafted:
        return draft_len
    if bool((committed == drafted + 1).all()):
        return min(max_len, 2 * draft_len)
    if bool((committed - 1 < (drafted + 1) // 2).all()):
        return max(1, draft_len // 2)
    return draft_len


def draw_token(u: torch.Tensor, logits: torch.Tensor, logq: torch.Tensor,
               residual: torch.Tensor | None, done: torch.Tensor, model,
               config: SamplingConfig, forced: torch.Tensor | None = None,
               carry_bits: int | None = None) -> AncestralState:
    """One token per row exactly as sequential sampling draws it: :func:`ancestral.step` with
    no model call, on ``logits [B, V]`` and the row's running ``logq [B]`` and ``residual``.
    Returns the one-token state (``tokens [B, 1]``, ``logprobs [B, 1]``, done, residual)."""
    state = AncestralState(tokens=logits.new_empty(logits.shape[0], 0, dtype=torch.long),
                           logprobs=logq[:, None], logits=logits, cache=None, done=done,
                           residual=residual, carry_bits=carry_bits)
    new, _ = ancestral_step(u, state, model, config, advance=False, forced=forced)
    return new._replace(logprobs=new.logprobs[:, 1:])


def verify_window(ctx: DraftContext, rows: torch.Tensor, logits: torch.Tensor, draft: torch.Tensor,
            q: torch.Tensor | None, noise: SpecNoise, model, spec: SpecConfig):
    """The tokens each running row emits this step: ``window [B', D+1]`` with ``n_new [B']``
    valid, their log q, the drafts kept ``[B']`` (an accepted EOS ends the row, so kept may
    equal n_new), and the row's done flag and residual after them."""
    B, D = draft.shape
    dev, config = logits.device, ctx.config
    n = ctx.count[:, None] + torch.arange(D + 1, device=dev)  # [B', D+1] token indices
    u_draw = noise.draw(n, rows).to(dev)
    u_test = noise.test(n, rows).to(dev) if spec.verify == "rejection" else None
    logq, residual, done = ctx.logq, ctx.residual, ctx.done
    # Without a carried residual a position's token depends only on its own logits and
    # uniforms, so positions are drawn in batched calls (row by row the same functions as one
    # call per position, so the same tokens; tests/test_speculative.py checks identity with
    # sequential sampling for every source): position 0 alone, since at low acceptance it is
    # often the only one a row takes, then the rest of the window at once. A carried residual
    # (arithmetic sampling) chains the positions: they are drawn one by one.
    chunks = ({0: 1, 1: D + 1} if residual is None else {j: j + 1 for j in range(D + 1)})
    taking = torch.ones(B, dtype=torch.bool, device=dev)  # the row still accepts tokens
    n_new = torch.zeros(B, dtype=torch.long, device=dev)
    kept = torch.zeros(B, dtype=torch.long, device=dev)
    window, window_lq = [], []
    for j in range(D + 1):
        if j in chunks:  # a chunk of columns j .. chunks[j] - 1 starts here
            lo = j
            drawn = _draw_columns(logits, draft, q, u_draw, u_test, logq, residual, done, lo,
                                  chunks[j], noise, model, spec, config)
        tok, lq, tok_done = (drawn.tokens[:, j - lo], drawn.logprobs[:, j - lo],
                             drawn.done[:, j - lo])
        if residual is not None:  # one-column chunks: the residual after this token
            residual = torch.where(taking, drawn.residual, residual)
        window.append(tok)
        window_lq.append(lq)
        n_new += taking.long()
        logq = torch.where(taking, logq + lq, logq)
        done = torch.where(taking, tok_done, done)
        if j < D:
            kept += (taking & (tok == draft[:, j])).long()
            taking = taking & (tok == draft[:, j]) & ~tok_done
            if not bool(taking.any()):  # every row has its tokens: skip the rest of the window
                break
    pad = D + 1 - len(window)  # columns no row takes
    window = torch.stack(window, 1)
    window_lq = torch.stack(window_lq, 1)
    if pad:
        window = torch.cat([window, window.new_zeros(B, pad)], 1)
        window_lq = torch.cat([window_lq, window_lq.new_zeros(B, pad)], 1)
    return window, window_lq, n_new, kept, done, residual


def _draw_columns(logits, draft, q, u_draw, u_test, logq, residual, done, lo: int, hi: int,
                  noise, model, spec, config) -> AncestralState:
    """The tokens of window columns ``lo .. hi - 1`` in one call: ``tokens``, ``logprobs`` and
    ``done``, each ``[B', hi - lo]``, as :func:`draw_token` gives them column by column from the
    row's running ``logq [B']``, ``residual`` and ``done`` at the chunk's start (a carried
    residual chains the columns, so it takes one column at a time), and the residual after a
    one-column chunk. Columns before D test their draft (rejection); column D, the bonus, is
    drawn from p itself."""
    B, V = logits.shape[0], logits.shape[2]
    D = draft.shape[1]
    W = hi - lo
    if residual is not None and W != 1:
        raise ValueError(f"a carried residual chains the columns: draw one at a time, not {W}")
    flat = logits[:, lo:hi].reshape(B * W, V)
    forced = None
    tested_hi = min(hi, D)  # columns lo .. tested_hi - 1 test a draft
    if spec.verify == "rejection" and tested_hi > lo:
        T = tested_hi - lo
        tested = rejection_token(
            sampling_probs(logits[:, lo:tested_hi].reshape(B * T, V), config),
            draft[:, lo:tested_hi].reshape(-1),
            None if q is None else q[:, lo:tested_hi].reshape(B * T, V),
            u_test[:, lo:tested_hi].reshape(-1), u_draw[:, lo:tested_hi].reshape(-1))
        forced = torch.cat([tested.view(B, T), tested.new_full((B, W - T), -1)], 1).reshape(-1)
    one = draw_token(u_draw[:, lo:hi].reshape(-1), flat, logq.repeat_interleave(W), residual,
                     done.repeat_interleave(W), model, config, forced, noise.carry_bits)
    return one._replace(tokens=one.tokens.view(B, W), logprobs=one.logprobs.view(B, W),
                        done=one.done.view(B, W))


def rejection_token(p: torch.Tensor, d: torch.Tensor, q: torch.Tensor | None,
                     u_test: torch.Tensor, u_draw: torch.Tensor) -> torch.Tensor:
    """Speculative sampling's token at one position: ``d [B]`` if ``u_test < p(d) / q(d)``,
    else a draw from (p - q)+ (``q [B, V]``; None: the point mass at d)."""
    if q is None:
        q = torch.zeros_like(p).scatter(1, d[:, None], 1.0)
    q = q.to(p.dtype)
    pd, qd = p.gather(1, d[:, None])[:, 0], q.gather(1, d[:, None])[:, 0]
    keep = u_test * qd < pd  # u < min(1, p/q), without dividing by a zero q
    residual = (p - q).clamp(min=0.0)
    # p = q leaves no residual mass; the draft is then always kept and this draw is unused
    residual = torch.where(residual.sum(1, keepdim=True) > 0, residual, p)
    return torch.where(keep, d, icdf_categorical(residual, u_draw))
