"""Resampling schemes, each driven by explicit uniforms (so they compose with any UniformSource).

All take normalised or unnormalised ``weights [R, N]`` (R independent systems of N particles) and
return ancestor indices ``[R, N]``; each is unbiased: E[#copies of i] = N w_i / sum(w).
"""

from __future__ import annotations

import torch

__all__ = ["systematic", "stratified", "multinomial", "RESAMPLERS"]


def _search(weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Indices i with F(i-1) <= point < F(i) of the normalised CDF; zero-weight particles are
    never chosen."""
    w = weights.to(torch.float64)
    cdf = torch.cumsum(w, dim=-1)
    cdf = cdf / cdf[..., -1:]
    # contiguous: searchsorted warns (once per call) on a non-contiguous input, which flooded a
    # run's output at every resampling step
    idx = torch.searchsorted(cdf.contiguous(), points.to(torch.float64).contiguous(), right=True)
    last = w.shape[-1] - 1 - torch.argmax((w > 0).flip(-1).to(torch.int8), dim=-1, keepdim=True)
    return torch.minimum(idx, last)


def systematic(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Systematic resampling: points (j + u) / N with one uniform per system, ``u [R]`` or
    ``[R, 1]``."""
    N = weights.shape[-1]
    u = u.to(device=weights.device, dtype=torch.float64).reshape(-1, 1)  # [R, 1]
    points = (torch.arange(N, dtype=torch.float64, device=u.device)[None] + u) / N
    return _search(weights, points)


def stratified(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Stratified resampling: points (j + u_j) / N, ``u [R, N]``."""
    N = weights.shape[-1]
    u = u.to(device=weights.device, dtype=torch.float64)
    j = torch.arange(N, dtype=torch.float64, device=u.device)
    return _search(weights, (j[None] + u) / N)


def multinomial(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Multinomial resampling: N independent inverse-CDF draws, ``u [R, N]``."""
    return _search(weights, u.to(weights.device))


#: name -> (function, uniforms needed per system as a function of N)
RESAMPLERS = {"systematic": (systematic, lambda n: 1), "stratified": (stratified, lambda n: n),
              "multinomial": (multinomial, lambda n: n)}
