"""Turning explicit uniforms into categorical draws.

Both functions are deterministic given ``u``: the randomness lives in the caller's
:class:`~parasample.noise.UniformSource`, so correlated sources, common random numbers and
reference-vs-fast equivalence tests all work by passing the same ``u``.
"""

from __future__ import annotations

import math

import torch

from parasample.workspace import Workspace

__all__ = ["icdf_categorical", "icdf_categorical_many", "icdf_residual", "carry_code_point",
           "gumbel_argmax", "EPS_UNIFORM", "DEEP_LOGQ"]

#: Smallest uniform used inside a log (keeps -log(-log u) finite for u = 0).
EPS_UNIFORM = 1e-12


def icdf_categorical(probs: torch.Tensor, u: torch.Tensor,
                     workspace: Workspace | None = None) -> torch.Tensor:
    """Inverse-CDF draw: the index y with F(y-1) <= u * F(V-1) < F(y), F the cumulative sum.

    If u ~ U[0, 1) then y ~ probs / probs.sum(-1) exactly. Robust to

    * a float32 cumulative sum that ends below (or above) 1: u is scaled by the row total, which
      is computed in float64;
    * zero-probability tokens: they own an empty interval, so they are never returned, even
      for u = 0 or u rounding to the row total.

    Args:
        probs: ``[..., V]`` non-negative weights (need not be normalised); each row must have
            a positive, finite sum.
        u: ``[...]`` uniforms in [0, 1).
        workspace: where given, the cumulative sum goes into its reused buffer (the same
            bits; see :mod:`parasample.workspace`).

    Returns:
        ``[...]`` int64 indices into the last dimension of ``probs``.
    """
    if probs.shape[:-1] != u.shape:
        raise ValueError(
            f"icdf_categorical: probs {tuple(probs.shape)} needs u of shape "
            f"{tuple(probs.shape[:-1])}, got {tuple(u.shape)}."
        )
    return icdf_categorical_many(probs, u.unsqueeze(-1), workspace).squeeze(-1)


def icdf_categorical_many(probs: torch.Tensor, u: torch.Tensor,
                          workspace: Workspace | None = None) -> torch.Tensor:
    """m inverse-CDF draws per row of ``probs [..., V]`` from ``u [..., m]`` -> ``[..., m]``.

    The cumulative sum is computed once per row (multiple-try samplers draw k tries from one
    proposal); same guarantees as :func:`icdf_categorical`.
    """
    if probs.shape[:-1] != u.shape[:-1]:
        raise ValueError(
            f"icdf_categorical_many: probs {tuple(probs.shape)} needs u of shape "
            f"{tuple(probs.shape[:-1])} + (m,), got {tuple(u.shape)}."
        )
    cdf = _cumsum64(probs, workspace)  # [..., V]
    total = cdf[..., -1:]  # [..., 1]
    if not torch.all(torch.isfinite(total) & (total > 0)):
        raise ValueError(
            "icdf_categorical: a row of probs sums to zero, NaN or inf; check for a logits row "
            "that is all -inf or contains NaN."
        )
    target = (u.to(device=cdf.device, dtype=torch.float64) * total).contiguous()  # [..., m]
    idx = torch.searchsorted(cdf, target, right=True)  # [..., m]
    # u * total can reach total (u = 1, or a rounding) and idx = V; the answer is then the
    # last token with positive mass. Any idx < V is already at or before it (the cdf is flat
    # after it), so the reverse scan runs only on a batch that needs it.
    V = probs.shape[-1]
    if not bool((idx >= V).any()):
        return idx
    last = V - 1 - torch.argmax((probs > 0).flip(-1).to(torch.int8), dim=-1, keepdim=True)
    return torch.minimum(idx, last)


def _cumsum64(probs: torch.Tensor, workspace: Workspace | None) -> torch.Tensor:
    """The float64 cumulative sum of ``probs [..., V]``, in ``workspace``'s buffer (a fresh
    one when None)."""
    out = (Workspace() if workspace is None else workspace).get("cdf", probs.shape,
                                                                 torch.float64, probs.device)
    return torch.cumsum(probs, dim=-1, dtype=torch.float64, out=out)


def icdf_residual(probs: torch.Tensor, u: torch.Tensor, tok: torch.Tensor,
                  workspace: Workspace | None = None) -> torch.Tensor:
    """Where ``u`` fell inside the interval of the token it selected, rescaled to [0, 1).

    For ``tok = icdf_categorical(probs, u)`` with u ~ U[0, 1), the residual
    ``(u * F(V-1) - F(tok-1)) / p(tok)`` is again U[0, 1) and independent of ``tok``: the
    arithmetic-coding step that lets one code point drive a whole sequence (arithmetic sampling).
    ``probs [B, V]``, ``u [B]``, ``tok [B]`` -> ``[B]`` float64; ``workspace`` as in
    :func:`icdf_categorical`.
    """
    p = probs.to(torch.float64)
    cdf = _cumsum64(p, workspace)  # [B, V]
    p_tok = p.gather(-1, tok[:, None])[:, 0]  # [B]
    lo = cdf.gather(-1, tok[:, None])[:, 0] - p_tok
    r = (u.to(device=p.device, dtype=torch.float64) * cdf[:, -1] - lo) / p_tok
    return r.clamp(0.0, 1.0 - 2.0**-53)  # rounding can leave the interval by an ulp


#: Prefix log-probability below which arithmetic sampling stops carrying the bare residual.
DEEP_LOGQ = -20 * math.log(2)


def carry_code_point(residual: torch.Tensor, u: torch.Tensor, logq: torch.Tensor,
                     bits: int | None = None) -> torch.Tensor:
    """The uniform of arithmetic sampling's next draw, ``[B]`` (the AR engine's next token, or
    the next committed token of diffusion decoding).

    NaN residual (a fresh row): the source's uniform. Otherwise, with ``bits`` None, the
    residual itself, which keeps the k code points of a group an exact grid over whole
    sequences, as long as the row's prefix has probability >= 2^-20: each draw divides the code
    point by p(token), so float64 keeps 33+ bits there. Deeper, the residual is rotated by the
    source's fresh uniform shared by the group, frac(r + u): exactly uniform whatever float64 did
    to r. (A prefix that rare holds at most one row of a group for k <= 2^20, so there is no
    stratification left to keep.)

    With ``bits`` = b, only the residual's top b bits are carried and the rest is the row's
    fresh uniform: (floor(r 2^b) + u) / 2^b. floor(r 2^b) is uniform on 0..2^b - 1 and
    independent of the tokens so far, and u is fresh, so the next uniform is exactly U[0, 1) and
    the row stays an exact draw; rows whose residuals differ by more than 2^-b keep their order
    (the stratification of k rows needs about log2 k bits), and a last-bits difference in the
    logits (another engine, batch shape or verification pass) changes the carried value only
    when it crosses a multiple of 2^-b, instead of being divided by p(token) at every token.
    ``u`` must then be the row's own uniform (:class:`ArithmeticSource` with ``carry_bits``
    serves per-row dimensions after the first).
    """
    u = u.to(device=residual.device, dtype=torch.float64)
    if bits is not None:
        scale = float(2 ** bits)
        carried = (torch.floor(residual * scale) + u) / scale
    else:
        rotated = torch.remainder(residual + u, 1.0)
        carried = torch.where(logq < DEEP_LOGQ, rotated, residual)
    return torch.where(torch.isnan(residual), u, carried)


def gumbel_argmax(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Gumbel-max draw: argmax_v logits_v - log(-log u_v) ~ softmax(logits).

    Args:
        logits: ``[..., V]`` (entries may be -inf; at least one finite per row).
        u: ``[..., V]`` uniforms in [0, 1), one per category.

    Returns:
        ``[...]`` int64 indices.
    """
    if logits.shape != u.shape:
        raise ValueError(
            f"gumbel_argmax: u must have the shape of logits {tuple(logits.shape)}, "
            f"got {tuple(u.shape)}."
        )
    u = u.to(device=logits.device, dtype=torch.float64).clamp(EPS_UNIFORM, 1.0 - EPS_UNIFORM)
    g = -torch.log(-torch.log(u))
    return torch.argmax(logits.to(torch.float64) + g, dim=-1)
