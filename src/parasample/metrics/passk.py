"""pass@k for i.i.d. and correlated k-batches, and samples saved at matched pass@k.

A correlated sampler's k samples are not exchangeable with i.i.d. draws, so its pass@k is not
the unbiased subset estimator over a pool: it is estimated from R independent randomisations of
the k-batch, ``mean_r 1[some sample of batch r is correct]``.

Where a source's group of K splits into K/k blocks that are each distributed as a k-batch
(:meth:`~parasample.noise.UniformSource.splits_into`), the *stride estimator* averages the
K/k block indicators instead of reading the first block only: the same expectation, a variance
no larger (:func:`batch_values`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from parasample.errors import InputError
from parasample.metrics.core import pass_at_k

__all__ = ["mean_and_se", "passk_iid", "passk_batches", "per_problem_passk", "samples_saved",
           "samples_saved_bootstrap", "batch_values", "sampling_se"]


def mean_and_se(per_problem: torch.Tensor) -> tuple[float, float]:
    """Mean of per-problem values ``[P]`` and its standard error (problems are the units, so
    the SE holds both the within-problem sampling and the between-problem variation)."""
    P = per_problem.numel()
    return (float(per_problem.mean()),
            float(per_problem.std() / math.sqrt(P)) if P > 1 else 0.0)


def passk_iid(correct: torch.Tensor, k: int) -> tuple[float, float]:
    """Mean over problems of the unbiased pass@k, with its standard error.

    ``correct [P, n]`` bool: n i.i.d. samples per problem.
    """
    return mean_and_se(per_problem_passk(correct[:, None], [k], iid=True)[:, 0])


def passk_batches(correct: torch.Tensor) -> tuple[float, float]:
    """pass@k from R independent k-batches per problem (``correct [P, R, k]`` bool), with its
    standard error: per problem, the fraction of batches with a correct sample."""
    return mean_and_se(per_problem_passk(correct, [correct.shape[-1]], iid=False)[:, 0])


def samples_saved(ks: list[int], iid: list[float], corr: list[float]) -> list[float | None]:
    """For each k of the correlated curve, 1 - k / k_iid where k_iid is the i.i.d. sample count
    with the same pass@k (linear interpolation in log2 k). None where the i.i.d. curve never
    reaches that pass@k inside the grid, or is flat there (no single k matches).

    ``ks`` increasing; ``iid`` and ``corr`` pass@k at each k. Interpolation is written here
    because it inverts a curve sampled on a log grid, with explicit out-of-range handling.
    """
    logk = np.log2(np.asarray(ks, dtype=float))
    y = np.maximum.accumulate(np.asarray(iid, dtype=float))  # pass@k is non-decreasing in k
    out: list[float | None] = []
    for k, target in zip(ks, corr, strict=True):
        if target < y[0] or target > y[-1]:
            out.append(None)
            continue
        j = int(np.searchsorted(y, target, side="left"))
        if j == 0 and len(y) > 1 and y[1] == y[0]:
            out.append(None)  # a flat start (e.g. all zero): no i.i.d. count is matched
            continue
        if j == 0:
            k_iid = 2 ** logk[0]
        elif y[j] == y[j - 1]:
            out.append(None)
            continue
        else:
            t = (target - y[j - 1]) / (y[j] - y[j - 1])
            k_iid = 2 ** (logk[j - 1] + t * (logk[j] - logk[j - 1]))
        out.append(1.0 - k / k_iid)
    return out


def per_problem_passk(correct: torch.Tensor, ks: list[int], iid: bool) -> torch.Tensor:
    """``correct [P, R, K]`` bool (R batches of K samples per problem) -> ``[P, len(ks)]``.

    i.i.d. samples: the unbiased estimator over all R * K samples of a problem. A correlated
    sampler: the fraction of its R batches whose first k samples contain a correct one (every
    power-of-two prefix of a batch is itself a batch of that sampler, see the noise sources).
    """
    P, R, K = correct.shape
    if max(ks) > K:
        raise InputError(f"k={max(ks)} exceeds the {K} samples per batch.")
    if iid:
        c = correct.reshape(P, R * K).sum(1).tolist()
        return torch.tensor([[pass_at_k(R * K, int(ci), k) for k in ks] for ci in c],
                            dtype=torch.float64)
    return torch.stack([batch_values(correct, k, blocks=False).mean(1) for k in ks], dim=1)


def samples_saved_bootstrap(ks: list[int], iid: torch.Tensor, corr: torch.Tensor, *,
                            n_boot: int, generator: torch.Generator
                            ) -> tuple[list[float | None], list[float | None], float | None,
                                       float | None]:
    """Samples saved per k with bootstrap standard errors, and their mean over k >= 2.

    ``iid``, ``corr``: per-problem pass@k ``[P, len(ks)]`` of the same problems. Problems are
    resampled with replacement ``n_boot`` times (the problems are the random units); the SE of
    a k is the spread over the resamples where the matched i.i.d. count is inside the grid.
    Returns (saved per k, SE per k, mean over k >= 2 of the defined values, its SE).
    """
    P = iid.shape[0]

    def point(idx):
        return samples_saved(ks, iid[idx].mean(0).tolist(), corr[idx].mean(0).tolist())

    est = point(torch.arange(P))
    use = [j for j, k in enumerate(ks) if k >= 2 and est[j] is not None]
    boots, heads = [], []
    for _ in range(n_boot):
        b = point(torch.randint(0, P, (P,), generator=generator))
        boots.append(b)
        vals = [b[j] for j in use if b[j] is not None]
        if vals:
            heads.append(float(np.mean(vals)))
    se = []
    for j in range(len(ks)):
        vals = [b[j] for b in boots if b[j] is not None]
        se.append(float(np.std(vals, ddof=1)) if est[j] is not None and len(vals) > 1 else None)
    head = float(np.mean([est[j] for j in use])) if use else None
    head_se = float(np.std(heads, ddof=1)) if head is not None and len(heads) > 1 else None
    return est, se, head, head_se


def batch_values(correct: torch.Tensor, k: int, blocks: bool, statistic: str = "any"
                 ) -> torch.Tensor:
    """A k-batch statistic for each of the R batches of every problem: ``[P, R]`` float64.

    ``correct [P, R, K]`` bool. ``blocks=False`` reads the first k samples of each batch (the
    prefix); ``blocks=True`` averages the statistic over the K/k aligned blocks of k samples
    (the stride estimator; only valid where the sampler ``splits_into(K, k)``). ``statistic``:
    ``any`` (some sample correct: pass@k) or ``constant`` (all correct or all wrong: a GRPO
    group of k with zero reward variance, which teaches nothing).
    """
    P, R, K = correct.shape
    if k > K or (blocks and K % k):
        raise InputError(f"k={k}: the {K} samples per batch do not split into blocks of k.")
    x = correct[:, :, :k] if not blocks else correct
    x = x.reshape(P, R, -1, k)  # [P, R, blocks, k]
    if statistic == "any":
        stat = x.any(-1)
    elif statistic == "constant":
        stat = x.all(-1) | ~x.any(-1)
    else:
        raise InputError(f"statistic={statistic!r}: choose 'any' or 'constant'.")
    return stat.double().mean(-1)  # [P, R]


def sampling_se(values: torch.Tensor) -> float | None:
    """Standard error of ``values.mean()`` from the sampling alone, given the problems:
    ``values [P, R]`` holds R independent batch estimates per problem. It isolates what an
    estimator controls (the between-problem spread is the same for every estimator of the same
    problems). None when R < 2."""
    P, R = values.shape
    if R < 2:
        return None
    return float(values.var(dim=1).sum().sqrt() / (P * math.sqrt(R)))

