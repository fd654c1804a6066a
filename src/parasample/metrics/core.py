"""Sample-quality and cost metrics."""

from __future__ import annotations

import math

import torch

from parasample.errors import InputError

__all__ = ["tvd", "empirical_distribution", "pass_at_k", "ess", "throughput", "iid_tvd_floor"]


def tvd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Total variation distance 1/2 sum |p - q| over the last dimension (float64)."""
    if p.shape != q.shape:
        raise ValueError(f"tvd: shapes differ, {tuple(p.shape)} vs {tuple(q.shape)}.")
    return 0.5 * (p.to(torch.float64) - q.to(torch.float64)).abs().sum(-1)


def empirical_distribution(indices: torch.Tensor, n_states: int) -> torch.Tensor:
    """Histogram of state ``indices [..., N]`` per row: ``[..., n_states]``."""
    flat = indices.reshape(-1, indices.shape[-1]).long()  # [R, N]
    counts = torch.zeros(flat.shape[0], n_states, dtype=torch.float64)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    return (counts / flat.shape[1]).reshape(*indices.shape[:-1], n_states)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n i.i.d. samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as a product (Chen et al., 2021) so large n does not overflow.
    """
    if not 1 <= k <= n:
        raise InputError(f"pass@k needs 1 <= k <= n; got k={k}, n={n}.")
    if not 0 <= c <= n:
        raise InputError(f"c={c} correct samples must lie in 0..n={n}.")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Effective sample size (sum w)^2 / sum w^2 over the last dim, from log-weights.

    Zero-weight (-inf) particles contribute nothing; an all -inf row has ESS 0.
    """
    lw = log_weights.to(torch.float64)
    num = 2 * torch.logsumexp(lw, dim=-1)
    den = torch.logsumexp(2 * lw, dim=-1)
    out = torch.exp(num - den)
    return torch.where(torch.isfinite(den), out, torch.zeros_like(out))


def throughput(tokens: int, seconds: float) -> float:
    """Tokens per second; 0 for an empty or instant run."""
    return tokens / seconds if seconds > 0 else 0.0


def iid_tvd_floor(p: torch.Tensor, n: int) -> float:
    """Expected TVD between ``p [S]`` and the histogram of ``n`` exact i.i.d. draws from it.

    The sampling-error floor of any sampler judged by the TVD of n samples: 1/2 sum_i
    E|X_i / n - p_i| with X_i ~ Binomial(n, p_i), using de Moivre's closed form of the binomial
    mean absolute deviation, E|X - np| = 2 (k + 1) C(n, k + 1) p^(k+1) (1 - p)^(n-k), k =
    floor(np), evaluated in log space (scipy has no vectorised binomial MAD).
    """
    p = p.to(torch.float64).clamp(0, 1)
    k = torch.floor(n * p)
    inner = (p > 0) & (p < 1) & (k + 1 <= n)
    pp, kk = p[inner], k[inner]
    log_mad = (math.log(2) + torch.log(kk + 1) + math.lgamma(n + 1) - torch.lgamma(kk + 2)
               - torch.lgamma(n - kk) + (kk + 1) * torch.log(pp) + (n - kk) * torch.log1p(-pp))
    return float(torch.exp(log_mad).sum() / (2 * n))
