"""Shared test helpers: brute-force references and statistical tolerances."""

import itertools

import torch
from scipy import stats

from parasample.ancestral import sampling_probs
from parasample.noise import icdf_categorical
from parasample.targets import enumerate_states, state_index


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square p-value of ``counts`` against ``probs``, pooling cells with tiny
    expected counts (< 5) into one so the asymptotic law holds."""
    counts, probs = counts.double(), probs.double()
    n = counts.sum()
    exp = probs * n
    big = exp >= 5
    obs_c = torch.cat([counts[big], counts[~big].sum()[None]])
    exp_c = torch.cat([exp[big], exp[~big].sum()[None]])
    keep = exp_c > 0
    assert torch.all(obs_c[~keep] == 0), "counts on states of probability zero"
    obs_c, exp_c = obs_c[keep], exp_c[keep]
    stat = float(((obs_c - exp_c) ** 2 / exp_c).sum())
    return float(stats.chi2.sf(stat, df=max(1, len(obs_c) - 1)))


def state_counts(x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each state of V^L occurs among the rows of ``x`` [B, L], in enumeration order
    (the order of ``exact_distribution``): [V^L] int64."""
    return torch.bincount(state_index(x, vocab_size), minlength=vocab_size ** x.shape[1])


def exact_draws(probs: torch.Tensor, vocab_size: int, length: int, n: int, seed: int
                ) -> torch.Tensor:
    """``n`` independent exact draws [n, L] from the law ``probs`` [V^L] over enumerated states
    (to test stationarity: a chain started at pi must still be at pi)."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return enumerate_states(vocab_size, length)[icdf_categorical(probs.expand(n, -1), u)]


def brute_force_ar(model, length, config):
    """q(y) for every y in V^L by multiplying the engine's per-step sampling probabilities,
    one sequence at a time (no batching, no caching): the reference for exactness tests."""
    V = model.vocab_size
    probs = torch.zeros(V**length, dtype=torch.float64)
    for i, seq in enumerate(itertools.product(range(V), repeat=length)):
        logits, state = model.start(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1))
        p = 1.0
        for t, tok in enumerate(seq):
            p *= float(sampling_probs(logits, config)[0, tok])
            if p == 0:
                break
            if t < length - 1:
                logits, state = model.advance(state, torch.tensor([tok]))
        probs[i] = p
    return probs


def design_power(n: int, df: int, tvd: float, level: float = 1e-3) -> float:
    """Power of a chi-square test at ``level`` with n draws against any law at TVD ``tvd``:
    sum (p' - p)^2 / p >= (sum |p' - p|)^2 = 4 tvd^2 (Cauchy-Schwarz, sum p = 1), so the
    noncentrality is at least 4 n tvd^2."""
    return float(stats.ncx2.sf(stats.chi2.isf(level, df), df, 4 * n * tvd ** 2))
