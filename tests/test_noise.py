import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from parasample.noise import (
    SOURCES,
    AntitheticSource,
    IIDSource,
    LatticeSource,
    SobolSource,
    gumbel_argmax,
    icdf_categorical,
    make_source,
)
from tests.helpers import chi2_pvalue

ALL = list(SOURCES)


@pytest.mark.parametrize("name", ALL)
def test_every_row_is_marginally_uniform(name, gen):
    k, groups, d = 8, 3000, 3
    u = make_source(name, k * groups, k, generator=gen).uniform(d).reshape(groups, k, d)
    assert u.dtype == torch.float64 and u.min() >= 0 and u.max() < 1
    for row in (0, 3, k - 1):  # one row of every group: independent draws across groups
        for dim in range(d):
            assert stats.kstest(u[:, row, dim].numpy(), "uniform").pvalue > 1e-3
        # joint uniformity of two dimensions of the same row (a 4x4 grid)
        cell = (u[:, row, 0] * 4).long() * 4 + (u[:, row, 1] * 4).long()
        assert chi2_pvalue(torch.bincount(cell, minlength=16), torch.full((16,), 1 / 16)) > 1e-3


@pytest.mark.parametrize("name", ["sobol", "lattice"])
def test_qmc_sources_stratify_each_dimension(name, gen):
    k = 16
    u = make_source(name, 4 * k, k, generator=gen, dim_block=8).uniform(20)  # crosses blocks
    strata = (u.reshape(4, k, 20) * k).long().sort(dim=1).values
    assert torch.equal(strata, torch.arange(k)[None, :, None].expand(4, k, 20))


def test_sobol_groups_are_scrambled_nets_in_two_dimensions(gen):
    """The first two Sobol coordinates of 2^m points form a (0, m, 2)-net: every elementary box
    of volume 2^-m (2^-a by 2^-(m-a)) holds exactly one point; Owen's scramble keeps that, and
    each prefix of 2^j rows is again such a net."""
    k, groups = 16, 50
    u = SobolSource(groups * k, k, generator=gen).uniform(2).reshape(groups, k, 2)
    for rows in (2, 4, 16):
        m = rows.bit_length() - 1
        v = u[:, :rows]
        for a in range(m + 1):
            cell = (v[..., 0] * 2 ** a).long() * 2 ** (m - a) + (v[..., 1] * 2 ** (m - a)).long()
            assert torch.equal(cell.sort(dim=1).values, torch.arange(rows).expand(groups, rows))


def test_stratified_code_points_fill_every_stratum_in_random_order(gen):
    k = 6  # any k: one row per 1/k stratum, the strata in a random order
    u = make_source("stratified", 500 * k, k, generator=gen).uniform(4).reshape(500, k, 4)
    strata = (u[:, :, 0] * k).long()
    assert torch.equal(strata.sort(dim=1).values, torch.arange(k).expand(500, k))
    first = torch.bincount(strata[:, 0], minlength=k)  # row 0's stratum is uniform
    assert chi2_pvalue(first, torch.full((k,), 1 / k)) > 1e-3
    later = (u[:, :, 1] * k).long().sort(dim=1).values  # later dimensions are independent
    assert not torch.equal(later, torch.arange(k).expand(500, k))


def test_antithetic_pairs_sum_to_one(gen):
    u = AntitheticSource(8, 4, generator=gen).uniform(5)
    assert torch.allclose(u[0::2] + u[1::2], torch.ones(4, 5, dtype=torch.float64), atol=1e-12)


def test_dimensions_are_consumed_in_order(gen):
    """Two calls of d/2 dims give the same numbers as one call of d dims (same seed)."""
    for name in ALL:
        a = make_source(name, 8, 4, generator=torch.Generator().manual_seed(5)).uniform(6)
        s = make_source(name, 8, 4, generator=torch.Generator().manual_seed(5))
        b = torch.cat([s.uniform(3), s.uniform(3)], dim=1)
        assert torch.equal(a, b), name


def test_source_errors(gen):
    with pytest.raises(ValueError, match="power-of-two.*use k=8"):
        SobolSource(6, 6, generator=gen)
    with pytest.raises(ValueError, match="k must be even; use k=4"):
        AntitheticSource(3, 3, generator=gen)
    with pytest.raises(ValueError, match="unknown sampler 'qmc'.*iid, sobol, lattice"):
        make_source("qmc", 4, generator=gen)
    with pytest.raises(ValueError, match="not a whole number of groups"):
        IIDSource(10, 4, generator=gen)
    with pytest.raises(ValueError, match="at least one row"):
        LatticeSource(0, generator=gen)
    with pytest.raises(TypeError, match="torch.Generator"):
        IIDSource(4, generator=0)


def test_icdf_matches_probabilities_on_a_uniform_grid():
    probs = torch.tensor([0.1, 0.0, 0.25, 0.65])
    N = 1000
    u = (torch.arange(N, dtype=torch.float64) + 0.5) / N
    counts = torch.bincount(icdf_categorical(probs.expand(N, 4), u), minlength=4)
    assert counts.tolist() == [100, 0, 250, 650]


def test_icdf_float32_cumsum_below_one():
    """Bug caught: float32 probs whose sum is < 1 and u close to 1 indexed past the end."""
    probs = torch.tensor([0.3, 0.3, 0.39, 0.0], dtype=torch.float32)  # sums to 0.99
    u = torch.tensor([0.0, 0.5, 0.999999, 1 - 1e-16], dtype=torch.float64)
    assert icdf_categorical(probs.expand(4, 4), u).tolist() == [0, 1, 2, 2]


def test_icdf_zero_probability_first_token_and_u_zero():
    probs = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    assert icdf_categorical(probs, torch.zeros(1)).item() == 2


def test_icdf_all_zero_row_has_clear_error():
    with pytest.raises(ValueError, match="all -inf"):
        icdf_categorical(torch.zeros(2, 3), torch.zeros(2))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1e-30, 1e-7, 0.1, 0.5, 3.0]), min_size=1, max_size=12)
       .filter(lambda p: sum(p) > 0),
       st.floats(0.0, 1.0, exclude_max=True))
def test_icdf_never_returns_a_zero_probability_token(p, u):
    probs = torch.tensor(p, dtype=torch.float32)
    i = icdf_categorical(probs[None], torch.tensor([u], dtype=torch.float64)).item()
    assert 0 <= i < len(p) and p[i] > 0


def test_gumbel_argmax_is_softmax_distributed(gen):
    logits = torch.tensor([0.0, 1.0, float("-inf"), -0.5])
    N = 20000
    u = torch.rand(N, 4, generator=gen, dtype=torch.float64)
    y = gumbel_argmax(logits.expand(N, 4), u)
    counts = torch.bincount(y, minlength=4)
    assert counts[2] == 0
    assert chi2_pvalue(counts, torch.softmax(logits.double(), 0)) > 1e-3


def test_icdf_many_equals_one_draw_at_a_time(gen):
    from parasample.noise import icdf_categorical_many

    probs = torch.rand(3, 5, 6, generator=gen) * (torch.rand(3, 5, 6, generator=gen) > 0.3)
    probs[..., 0] += 0.01  # every row has mass
    u = torch.rand(3, 5, 4, generator=gen, dtype=torch.float64)
    many = icdf_categorical_many(probs, u)
    one = torch.stack([icdf_categorical(probs, u[..., j]) for j in range(4)], -1)
    assert torch.equal(many, one)
