"""The stride estimator (QuasiMoTTo): one correlated group of K samples gives K/m estimates of
the sampler's pass@m, one per aligned block of m rows, where the source ``splits_into(K, m)``.

Unbiasedness is tested against the exact pass@m of each sampler on the toy AR LM, computed from
the geometry of its code points; the variance is never above the prefix-only estimator's.
"""

from __future__ import annotations

import pytest
import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.metrics.passk import batch_values
from parasample.noise import SOURCES, make_source
from parasample.targets import ToyARLM, exact_distribution, state_index

K, GROUPS = 16, 1500
MS = [1, 2, 4, 8, 16]


def _intervals(probs: torch.Tensor, correct: torch.Tensor) -> list[tuple[float, float]]:
    """Code-point intervals [a, b) of the correct sequences (lexicographic order)."""
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), probs.cumsum(0)])
    return [(float(edges[i]), float(edges[i + 1])) for i in range(len(probs)) if correct[i]]


def _measure(intervals, lo, hi) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


def _union_length(pieces: list[tuple[float, float]]) -> float:
    total, end = 0.0, -1.0
    for a, b in sorted(pieces):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def exact_passk(sampler: str, m: int, probs: torch.Tensor, correct: torch.Tensor) -> float:
    """pass@m of one m-group of ``sampler`` when correctness is a function of one code point
    (one token, or a code-point sampler carrying its residual through the whole sequence)."""
    A, p = _intervals(probs, correct), float(probs[correct].sum())
    if sampler == "iid":
        return 1 - (1 - p) ** m
    if sampler in ("lattice", "arithmetic"):  # the shifted grid frac(Delta + t / m)
        folded = [(max(a, t / m) - t / m, min(b, (t + 1) / m) - t / m)
                  for a, b in A for t in range(m) if min(b, (t + 1) / m) > max(a, t / m)]
        return m * _union_length(folded)
    if sampler in ("sobol", "stratified"):  # one independent uniform point in each 1/m stratum
        miss = 1.0
        for t in range(m):
            miss *= 1 - m * _measure(A, t / m, (t + 1) / m)
        return 1 - miss
    if sampler == "antithetic":  # m/2 independent pairs (u, 1 - u)
        pair = _union_length(A + [(1 - b, 1 - a) for a, b in A])
        return 1 - (1 - pair) ** (m // 2)
    raise AssertionError(sampler)


def _draw(sampler: str, model, length: int, seed: int) -> torch.Tensor:
    """``correct``-ready state indices ``[GROUPS, K]`` of GROUPS independent K-groups."""
    src = make_source(sampler, GROUPS * K, K, generator=torch.Generator().manual_seed(seed))
    ids = torch.zeros(GROUPS * K, 1, dtype=torch.long)
    out = generate(model, ids, torch.ones_like(ids), src, SamplingConfig(max_new_tokens=length))
    return state_index(out.tokens, model.vocab_size).reshape(GROUPS, K)


def _check_unbiased(sampler, model, length, correct_states, seed):
    probs = exact_distribution(model)
    correct = correct_states(torch.arange(len(probs)))
    ok = correct[_draw(sampler, model, length, seed)][None]  # [1, GROUPS, K]
    checked = 0
    for m in MS:
        if not SOURCES[sampler].splits_into(K, m):
            continue
        stride = batch_values(ok, m, blocks=True)[0]  # [GROUPS]
        prefix = batch_values(ok, m, blocks=False)[0]
        want = exact_passk(sampler, m, probs, correct)
        se = float(stride.std()) / GROUPS ** 0.5
        assert abs(float(stride.mean()) - want) <= 4.5 * se + 1e-12, (sampler, m, want)
        assert stride.var() <= prefix.var() * 1.02 + 1e-12, (sampler, m)
        checked += 1
    assert checked >= (1 if sampler == "stratified" else 3)


@pytest.mark.parametrize("sampler", list(SOURCES))
def test_stride_estimator_is_unbiased_for_the_exact_passk_of_one_token(sampler):
    """One token over 8 symbols: every sampler's pass@m is exact from its 1-D code points."""
    model = ToyARLM(8, 1, generator=torch.Generator().manual_seed(3), sharpness=2.0)
    _check_unbiased(sampler, model, 1, lambda s: (s == 0) | (s == 2) | (s == 5), seed=11)


@pytest.mark.parametrize("sampler", ["arithmetic", "stratified"])
def test_stride_estimator_is_unbiased_over_whole_sequences(sampler):
    """Three tokens: the code-point samplers carry one code point through the whole sequence, so
    their exact pass@m follows from the sequences' lexicographic intervals."""
    model = ToyARLM(4, 3, generator=torch.Generator().manual_seed(0), sharpness=2.0)
    _check_unbiased(sampler, model, 3, lambda s: s % 5 == 2, seed=12)


@pytest.mark.parametrize("sampler", ["sobol", "lattice", "antithetic"])
def test_stride_estimator_agrees_with_the_prefix_over_whole_sequences(sampler):
    """Three tokens, three dimensions: the blocks' mean equals the prefix estimator's (itself
    unbiased by construction) on independent draws, with a smaller spread."""
    model = ToyARLM(4, 3, generator=torch.Generator().manual_seed(0), sharpness=2.0)
    correct = (torch.arange(64) % 5 == 2)
    a = correct[_draw(sampler, model, 3, seed=13)][None]
    b = correct[_draw(sampler, model, 3, seed=14)][None]
    for m in (2, 4, 8):
        stride = batch_values(a, m, blocks=True)[0]
        prefix = batch_values(b, m, blocks=False)[0]
        se = (stride.var() / GROUPS + prefix.var() / GROUPS).sqrt()
        assert abs(float(stride.mean() - prefix.mean())) <= 4.5 * float(se), (sampler, m)
        assert stride.var() < prefix.var(), (sampler, m)


def test_which_sources_split_into_blocks():
    assert SOURCES["iid"].splits_into(12, 3)
    for name in ("sobol", "lattice", "arithmetic"):
        assert SOURCES[name].splits_into(16, 4) and not SOURCES[name].splits_into(12, 4)
        assert not SOURCES[name].splits_into(16, 3)
    assert SOURCES["antithetic"].splits_into(12, 4) and not SOURCES["antithetic"].splits_into(8, 1)
    assert SOURCES["stratified"].splits_into(8, 8) and not SOURCES["stratified"].splits_into(8, 4)


def test_batch_values_statistics_and_errors():
    ok = torch.tensor([[[True, True, False, False], [True, True, True, True]]])  # [1, 2, 4]
    assert batch_values(ok, 2, blocks=True).tolist() == [[0.5, 1.0]]
    assert batch_values(ok, 2, blocks=False).tolist() == [[1.0, 1.0]]
    assert batch_values(ok, 2, blocks=True, statistic="constant").tolist() == [[1.0, 1.0]]
    assert batch_values(ok, 4, blocks=True, statistic="constant").tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="do not split into blocks"):
        batch_values(ok, 3, blocks=True)
    with pytest.raises(ValueError, match="choose 'any'"):
        batch_values(ok, 2, blocks=True, statistic="mean")
