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
           "samples_saved_bootstrap", "iid_curve", "union_bound", "batch_values", "sampling_se",
           "BELOW", "ABOVE", "FLAT", "UNSTABLE", "MAX_SHIFT"]


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


#: why a k of the correlated curve has no samples-saved value
BELOW = "below i.i.d. pass@1"
ABOVE = "above the i.i.d. curve"
FLAT = "i.i.d. curve flat there"
UNSTABLE = "one problem moves the matched count by more than 1.5x"

#: a k whose matched i.i.d. count moves by more than this factor when its pass@k moves by one
#: problem (+-1/P) is left out: near saturation the i.i.d. curve is so flat that a single
#: problem would decide the figure
MAX_SHIFT = 1.5
_TOL = 1e-12  # float rounding of equal curves (e.g. pass@1 of two samplers)


def _matched_count(y: np.ndarray, c: float) -> float | None:
    """The fractional i.i.d. count m with pass@m = c on the non-decreasing curve ``y`` (y[m-1]
    at count m, linear between consecutive counts); None outside the curve or on a flat
    stretch (no single count matches)."""
    if c < y[0] - _TOL or c > y[-1] + _TOL:
        return None
    m = int(np.searchsorted(y, c - _TOL, side="left"))  # y[m] >= c > y[m - 1]
    if m == 0:  # c is pass@1 itself; on a flat start every count up to the rise matches
        return None if len(y) > 1 and y[1] <= y[0] + _TOL else 1.0
    if y[m] - y[m - 1] <= _TOL:
        return None
    return m + (min(c, y[m]) - y[m - 1]) / (y[m] - y[m - 1])


def samples_saved(ks: list[int], corr: list[float], iid_curve: list[float],
                  problems: int | None = None) -> tuple[list[float | None], dict[int, str]]:
    """For each k of the correlated curve, 1 - k / k_iid where k_iid is the (fractional) number
    of i.i.d. samples with the same pass@k, and the ks left out with the reason.

    ``iid_curve[m - 1]`` is the i.i.d. pass@m at *every* integer m = 1..M (the unbiased
    estimator exists at each), so k_iid is read off by linear interpolation between consecutive
    counts, not across a power-of-two grid (which biases k_iid upwards on a concave curve). A k
    is left out (its reason in the returned dict) where its pass@k is below the i.i.d. pass@1
    (k correlated samples do worse than one i.i.d. sample: no count matches), above the i.i.d.
    curve, on a flat stretch of it, or, given the number of ``problems`` P, where one problem
    more or fewer solved (pass@k +- 1/P) moves the matched count by more than a factor
    :data:`MAX_SHIFT` between the two (near saturation, where the i.i.d. curve is flat, or with
    so few problems solved that each is a large share; tested: one problem's flip moves the
    mean over k by at most 0.05 where the power-of-two log interpolation moved it by up to
    1.2).
    """
    y = np.maximum.accumulate(np.asarray(iid_curve, dtype=float))  # non-decreasing in m
    out: list[float | None] = []
    dropped: dict[int, str] = {}
    for k, c in zip(ks, corr, strict=True):
        k_iid = _matched_count(y, c)
        if k_iid is None:
            dropped[k] = BELOW if c < y[0] - _TOL else ABOVE if c > y[-1] + _TOL else FLAT
        elif problems is not None:
            lo = _matched_count(y, max(c - 1.0 / problems, float(y[0])))
            hi = _matched_count(y, c + 1.0 / problems)
            if lo is None or hi is None or hi > MAX_SHIFT * lo:
                dropped[k] = UNSTABLE
        out.append(None if k in dropped else float(1.0 - k / k_iid))
    return out, dropped


def iid_curve(correct: torch.Tensor, M: int) -> torch.Tensor:
    """Per-problem unbiased i.i.d. pass@m for every m = 1..M: ``correct [P, R, K]`` ->
    ``[P, M]`` (the estimator over all R * K samples of each problem)."""
    return per_problem_passk(correct, list(range(1, M + 1)), iid=True)


def union_bound(p: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """The highest pass@k any exact sampler can reach: ``min(1, k p)`` per problem.

    Each row of an exact sampler (every source here) is correct with the model's probability
    p, so whatever the dependence between the k rows of a batch, P(some row correct) <= the
    expected number of correct rows = k p (the union bound). A sampler attains it where its k
    draws are evenly spaced over one interval that holds all the correct answers' mass (the
    first coordinate of a lattice group; arithmetic sampling where one string is the only
    right answer), tested in ``tests/test_metrics.py``. ``p [P]`` per-problem pass@1 ->
    ``[P, len(ks)]`` float64.
    """
    p = p.double()
    return torch.stack([(k * p).clamp(max=1.0) for k in ks], dim=1)


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
                                       float | None, dict[int, str]]:
    """Samples saved per k with bootstrap standard errors, their mean over k >= 2, and the ks
    left out of the point estimate (k -> reason, see :func:`samples_saved`).

    ``iid``: per-problem i.i.d. pass@m at every m = 1..M, ``[P, M]`` (:func:`iid_curve`);
    ``corr``: per-problem pass@k of the correlated sampler at ``ks``, ``[P, len(ks)]``, of the
    same problems. Problems are resampled with replacement ``n_boot`` times (the problems are
    the random units, and the pairing of the two curves is kept); the SE of a k is the spread
    over the resamples where it is defined. Returns (saved per k, SE per k, mean over k >= 2 of
    the defined values, its SE, dropped).
    """
    P = iid.shape[0]

    def point(idx):
        return samples_saved(ks, corr[idx].mean(0).tolist(), iid[idx].mean(0).tolist(), P)

    est, dropped = point(torch.arange(P))
    use = [j for j, k in enumerate(ks) if k >= 2 and est[j] is not None]
    boots, heads = [], []
    for _ in range(n_boot):
        b, _ = point(torch.randint(0, P, (P,), generator=generator))
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
    return est, se, head, head_se, dropped


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

