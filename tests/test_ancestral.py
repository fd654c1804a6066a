import pytest
import torch

from parasample.ancestral import SamplingConfig, generate, sampling_probs, top_p_mask_by_sort
from parasample.noise import SOURCES as ALL_SOURCES
from parasample.noise import make_source
from parasample.targets import ToyARLM, exact_distribution, state_index
from tests.helpers import brute_force_ar, chi2_pvalue

SOURCES = list(ALL_SOURCES)


def _draw(model, name, k, groups, config, seed, **source_kw):
    n = k * groups
    src = make_source(name, n, k, generator=torch.Generator().manual_seed(seed), **source_kw)
    ids = torch.zeros(n, 1, dtype=torch.long)
    out = generate(model, ids, torch.ones_like(ids), src, config)
    return out


@pytest.mark.parametrize("name", SOURCES)
def test_each_sample_is_an_exact_draw(name):
    """Marginal exactness: row j of every k-batch (independent across batches) follows p."""
    model = ToyARLM(4, 3, generator=torch.Generator().manual_seed(0))
    k, groups = 8, 3000
    out = _draw(model, name, k, groups, SamplingConfig(max_new_tokens=3), seed=1)
    idx = state_index(out.tokens, 4).reshape(groups, k)
    exact = exact_distribution(model)
    for row in (0, k - 1):
        counts = torch.bincount(idx[:, row], minlength=64)
        assert chi2_pvalue(counts, exact) > 1e-3, (name, row)
    # all rows pooled: TVD within a bound derived from N (E TVD <= 0.5 sqrt(S / N))
    pooled = torch.bincount(idx.reshape(-1), minlength=64).double() / idx.numel()
    assert 0.5 * (pooled - exact).abs().sum() < 0.5 * (64 / idx.numel()) ** 0.5


@pytest.mark.parametrize("name", ["sobol", "lattice", "arithmetic"])
def test_correlated_sources_give_fewer_duplicates_than_iid(name):
    model = ToyARLM(4, 3, generator=torch.Generator().manual_seed(0), sharpness=2.5)
    k, groups = 8, 400
    cfg = SamplingConfig(max_new_tokens=3)

    def distinct(src_name):
        idx = state_index(_draw(model, src_name, k, groups, cfg, seed=2).tokens, 4)
        return torch.tensor([len(set(r.tolist())) for r in idx.reshape(groups, k)]).double()

    d_iid, d_corr = distinct("iid"), distinct(name)
    # a 5-standard-error margin on the difference of means
    se = (d_iid.var() / groups + d_corr.var() / groups).sqrt()
    assert d_corr.mean() - d_iid.mean() > 5 * se, (d_iid.mean(), d_corr.mean())


def test_antithetic_pairs_collide_less_often_than_iid_pairs():
    """Antithetic correlation acts within each pair (u, 1-u): fewer identical pairs."""
    model = ToyARLM(4, 3, generator=torch.Generator().manual_seed(0), sharpness=2.5)
    cfg = SamplingConfig(max_new_tokens=3)
    pairs = 4000

    def same(src_name):
        idx = state_index(_draw(model, src_name, 2, pairs, cfg, seed=5).tokens, 4)
        return (idx[0::2] == idx[1::2]).double()

    s_iid, s_anti = same("iid"), same("antithetic")
    se = (s_iid.var() / pairs + s_anti.var() / pairs).sqrt()
    assert s_iid.mean() - s_anti.mean() > 5 * se, (s_iid.mean(), s_anti.mean())


@pytest.mark.parametrize("name", SOURCES)
def test_temperature_and_top_p_are_applied_identically_and_exactly(name):
    """With temperature and top-p every source samples the same transformed distribution."""
    model = ToyARLM(3, 3, generator=torch.Generator().manual_seed(3))
    cfg = SamplingConfig(temperature=0.7, top_p=0.8, max_new_tokens=3)
    q = brute_force_ar(model, 3, cfg)
    k, groups = 4, 3000
    idx = state_index(_draw(model, name, k, groups, cfg, seed=4).tokens, 3).reshape(groups, k)
    assert chi2_pvalue(torch.bincount(idx[:, 0], minlength=27), q) > 1e-3
    assert torch.all(q[idx.reshape(-1)] > 0)  # never a token outside the nucleus


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    p = sampling_probs(logits, SamplingConfig(top_p=0.8))
    assert torch.allclose(p, torch.tensor([[0, 0.625, 0, 0.375]], dtype=torch.float64))
    # a tiny top_p keeps the single most likely token
    assert sampling_probs(logits, SamplingConfig(top_p=1e-9))[0].tolist() == [0, 1, 0, 0]


@pytest.mark.parametrize("first", [1, 2, 64])
def test_top_p_mask_equals_the_full_sort_rule(monkeypatch, first):
    """Exhaustive on small vocabularies: every weight vector in {0..3}^V (V <= 5; ties, zeros,
    one-hot) at every top_p in a grid that includes each vector's own cumulative masses (the
    boundary cases) keeps the full stable sort's set, so every uniform draws the same token.
    ``first`` candidates: 1 and 2 run the growth rounds, 64 the first round alone."""
    import itertools

    from parasample.ancestral import engine

    monkeypatch.setattr(engine, "TOP_P_FIRST_CANDIDATES", first)
    grid = [0.01, 0.1, 0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.75, 0.9, 0.99, 0.999999]
    for V in range(1, 6):
        w = torch.tensor(list(itertools.product(range(4), repeat=V)), dtype=torch.float64)
        probs = w[w.sum(1) > 0]
        probs = probs / probs.sum(1, keepdim=True)  # [N, V]
        masses = torch.unique(torch.cumsum(torch.sort(probs, 1, descending=True).values, 1))
        for top_p in [*grid, *[float(m) for m in masses if 0 < m < 1]]:
            assert torch.equal(engine.top_p_mask(probs, top_p),
                               top_p_mask_by_sort(probs, top_p)), (V, top_p)


@pytest.mark.parametrize("first", [8, 64])
def test_top_p_mask_equals_the_full_sort_rule_on_a_49k_vocabulary(monkeypatch, first):
    """SmolLM2's vocabulary size (49,152) with logits rounded to bfloat16, as a bfloat16 model's
    are (many exact ties), at temperatures from sharp to flat and top_p from 0.1 to 0.99: the
    rows range from one candidate to thousands (the growth rounds and the full-sort fallback)."""
    from parasample.ancestral import engine

    monkeypatch.setattr(engine, "TOP_P_FIRST_CANDIDATES", first)
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(16, 49152, generator=g)).to(torch.bfloat16)  # [16, V]
    logits[0, :5] = 20.0  # a five-way tie at the top
    for temperature in (0.3, 1.0, 3.0):
        for top_p in (0.1, 0.5, 0.9, 0.95, 0.99):
            probs = torch.softmax(logits.to(torch.float64) / temperature, -1)
            assert torch.equal(engine.top_p_mask(probs, top_p),
                               top_p_mask_by_sort(probs, top_p)), (temperature, top_p)


def test_a_workspace_gives_the_same_bits_as_fresh_tensors():
    """sampling_probs, icdf_categorical and icdf_residual with one Workspace reused across calls
    (the engine's and the processors' per-step path) and with none, against the plain formulas
    on freshly allocated tensors (softmax of nan_to_num(logits) / T; searchsorted in the
    cumulative sum, the last positive token where it passes the end): equal bits for float32,
    bfloat16 and float64 logits with -inf and NaN entries, T below, at and above 1, top-p,
    batches that shrink and grow between calls (views of one buffer), and uniforms at 0 and at
    1 (where u * total is the total and searchsorted passes the end)."""
    from parasample.ancestral import top_p_mask
    from parasample.noise import icdf_categorical, icdf_residual
    from parasample.workspace import Workspace

    def reference_probs(logits, temperature, top_p):  # the formula, fresh tensors throughout
        x = torch.nan_to_num(logits.to(torch.float64), nan=float("-inf"))
        p = torch.softmax(x / temperature, dim=-1)
        if top_p < 1.0:
            p = torch.where(top_p_mask(p, top_p), p, 0.0)
            p = p / p.sum(-1, keepdim=True)
        return p

    def reference_token(p, u):
        cdf = torch.cumsum(p.to(torch.float64), dim=-1)
        idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
        last = p.shape[-1] - 1 - torch.argmax((p > 0).flip(-1).to(torch.int8), dim=-1)
        return torch.minimum(idx, last)

    g, work = torch.Generator().manual_seed(0), Workspace()
    for B, V, dtype in [(16, 4099, torch.float32), (5, 4099, torch.bfloat16),
                        (24, 1000, torch.float64), (3, 50, torch.float32)]:
        logits = (4 * torch.randn(B, V, generator=g, dtype=torch.float64)).to(dtype)  # [B, V]
        logits[0, V // 2:] = float("-inf")  # a tail of zero-probability tokens
        logits[1, 3] = float("nan")
        u = torch.rand(B, generator=g, dtype=torch.float64)
        u[0], u[-1] = 1.0, 0.0
        for temperature in (0.7, 1.0, 2.5):
            for top_p in (1.0, 0.9):
                config = SamplingConfig(temperature=temperature, top_p=top_p)
                ref = reference_probs(logits, temperature, top_p)
                assert torch.equal(sampling_probs(logits, config), ref)
                reused = sampling_probs(logits, config, work)
                assert torch.equal(reused, ref), (dtype, temperature, top_p)
                tok = reference_token(ref, u)
                assert torch.equal(icdf_categorical(ref, u), tok)
                assert torch.equal(icdf_categorical(reused, u, work), tok)
                cdf = torch.cumsum(ref, dim=-1)
                p_tok = ref.gather(1, tok[:, None])[:, 0]
                residual = ((u * cdf[:, -1] - (cdf.gather(1, tok[:, None])[:, 0] - p_tok))
                            / p_tok).clamp(0.0, 1.0 - 2.0**-53)
                assert torch.equal(icdf_residual(ref, u, tok), residual)
                assert torch.equal(icdf_residual(reused, u, tok, work), residual)
                assert ref[0, tok[0]] > 0 and ref[0, tok[0] + 1:].sum() == 0  # the last


def test_a_step_drawn_in_row_chunks_gives_the_same_bits(monkeypatch):
    """step draws its rows in chunks of DRAW_ELEMENTS // V (memory: 2048 rows of a 152k
    vocabulary in one draw take 2.5 GB per float64 buffer). Chunks of 3 rows, the last one
    ragged, against one chunk: equal tokens, log q, log p and arithmetic residuals, bit for bit,
    on a 4099-token vocabulary with -inf and NaN logits (T below, at and above 1, top-p, forced
    tokens, finished rows, carried residuals whole and to 4 bits), and every source's whole
    generation on the toy AR LM."""
    from types import SimpleNamespace

    from parasample.ancestral import AncestralState, engine, step

    g = torch.Generator().manual_seed(1)
    B, V = 10, 4099
    logits = 4 * torch.randn(B, V, generator=g)  # [B, V]
    logits[0, V // 2:] = float("-inf")
    logits[1, 3] = float("nan")
    u = torch.rand(B, generator=g, dtype=torch.float64)
    forced = torch.where(torch.rand(B, generator=g) < 0.3, 5, -1)
    residual = torch.rand(B, generator=g, dtype=torch.float64)
    residual[2] = torch.nan  # a fresh row
    model = SimpleNamespace(eos_id=7)

    def run(elements, config, carry, bits, force):
        monkeypatch.setattr(engine, "DRAW_ELEMENTS", elements)
        state = AncestralState(
            tokens=torch.zeros(B, 2, dtype=torch.long),
            logprobs=torch.full((B, 2), -3.0, dtype=torch.float64), logits=logits, cache=None,
            done=torch.arange(B) == 4, residual=residual if carry else None, carry_bits=bits)
        new, info = step(u, state, model, config, advance=False,
                         forced=forced if force else None)
        return new.tokens, new.logprobs, new.residual, info.logp

    for temperature in (0.7, 1.0, 2.5):
        for top_p in (1.0, 0.9):
            config = SamplingConfig(temperature=temperature, top_p=top_p)
            for carry, bits, force in [(False, None, False), (False, None, True),
                                       (True, None, False), (True, 4, True)]:
                one = run(1 << 24, config, carry, bits, force)
                chunked = run(3 * V, config, carry, bits, force)
                for a, b in zip(one, chunked, strict=True):
                    if a is None:
                        assert b is None
                    else:  # NaN residuals: fresh rows and rows with a forced token
                        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True,
                                                   msg=str((temperature, top_p, carry, bits)))

    toy = ToyARLM(6, 5, generator=torch.Generator().manual_seed(0), eos_id=5)
    for name in SOURCES:
        outs = []
        for elements in (1 << 24, 3 * 6):
            monkeypatch.setattr(engine, "DRAW_ELEMENTS", elements)
            outs.append(_draw(toy, name, 4, 5, SamplingConfig(max_new_tokens=5, top_p=0.9),
                              seed=2))
        assert torch.equal(outs[0].tokens, outs[1].tokens), name
        assert torch.equal(outs[0].logprobs, outs[1].logprobs), name


@pytest.mark.slow
def test_top_p_mask_equals_the_full_sort_rule_on_smollm2_logits():
    """SmolLM2-135M's own next-token logits (float32 and bfloat16 weights) after three prompts."""
    from parasample.ancestral import top_p_mask
    from parasample.targets.hf import smollm2

    for dtype in (torch.float32, torch.bfloat16):
        lm = smollm2(dtype=dtype)
        ids, mask = lm.encode_prompts(["Natalia sold clips to 48 of her friends.",
                                       "def fibonacci(n):", "The capital of France is"])
        logits, _ = lm.start(ids, mask)  # [3, V]
        for temperature in (0.5, 1.0, 2.0):
            probs = torch.softmax(logits.to(torch.float64) / temperature, -1)
            for top_p in (0.5, 0.9, 0.95, 0.99):
                assert torch.equal(top_p_mask(probs, top_p), top_p_mask_by_sort(probs, top_p))


def test_bench_engines_topp_table_times_both_rules_on_the_models_distribution(tmp_path):
    """topp.csv: one row per (rows, T, top_p), both rules keep the same tokens, the nucleus
    size is the model's (here a stub LM whose next-token logits are fixed)."""
    import csv

    from parasample.bench.topp import TOPP_HEADER, topp_rows

    class StubLM:
        name, device = "stub", torch.device("cpu")
        model = torch.nn.Linear(1, 1)

        def encode_prompts(self, prompts):
            return torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long)

        def start(self, ids, mask):
            return 2 * torch.randn(1, 1000, generator=torch.Generator().manual_seed(0)), None

    rows = topp_rows(StubLM(), "hi", tmp_path, rows=(1, 4), temperatures=(1.0,),
                     top_ps=(0.5, 0.9), reps=2)
    with open(tmp_path / "topp.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == TOPP_HEADER and len(table) == len(rows) == 4
    assert all(r["same_mask"] == "True" and float(r["ms_sort"]) > 0 for r in table)
    kept = {(r["rows"], r["top_p"]): float(r["kept"]) for r in table}
    assert kept[("1", "0.5")] == kept[("4", "0.5")] < kept[("1", "0.9")]


def test_rows_stop_at_eos_and_are_padded(gen):
    model = ToyARLM(4, 5, generator=gen, eos_id=0)
    out = _draw(model, "iid", 4, 50, SamplingConfig(max_new_tokens=5), seed=0)
    for row, n in zip(out.tokens, out.lengths, strict=True):
        hits = (row == 0).nonzero()
        if len(hits):
            first = int(hits[0])
            assert n == first + 1 and torch.all(row[first:] == 0)
        else:
            assert n == row.shape[0]
    assert 1 <= out.nfe <= 5
    exact = exact_distribution(model)
    assert torch.all(exact[state_index(
        torch.nn.functional.pad(out.tokens, (0, 5 - out.tokens.shape[1])), 4)] > 0)


def test_config_errors():
    with pytest.raises(ValueError, match="temperature=0 must be > 0"):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError, match=r"top_p=1.5 must lie in \(0, 1\]"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        SamplingConfig(max_new_tokens=0)


def test_source_row_count_must_match(gen):
    model = ToyARLM(4, 3, generator=gen)
    src = make_source("iid", 4, generator=gen)
    ids = torch.zeros(5, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="serves 4 rows but there are 5"):
        generate(model, ids, torch.ones_like(ids), src, SamplingConfig(max_new_tokens=3))


def test_arithmetic_sampling_stratifies_whole_sequences():
    """Each sequence of probability p appears floor(kp) or ceil(kp) times in a group of k
    (one code point per row carried through the inverse CDFs), unlike i.i.d. sampling."""
    model = ToyARLM(3, 3, generator=torch.Generator().manual_seed(0), sharpness=2.0)
    exact = exact_distribution(model)
    k, groups = 16, 50
    idx = state_index(_draw(model, "arithmetic", k, groups, SamplingConfig(max_new_tokens=3),
                            seed=7).tokens, 3).reshape(groups, k)
    lo, hi = torch.floor(k * exact), torch.ceil(k * exact)
    for g in range(groups):
        counts = torch.bincount(idx[g], minlength=27).double()
        assert torch.all((counts >= lo) & (counts <= hi)), g
    iid = state_index(_draw(model, "iid", k, groups, SamplingConfig(max_new_tokens=3),
                            seed=7).tokens, 3).reshape(groups, k)
    off = [bool(torch.any((c < lo) | (c > hi))) for c in
           (torch.bincount(r, minlength=27).double() for r in iid)]
    assert sum(off) > groups // 2


def test_stratified_sampling_stratifies_whole_sequences():
    """A stratified group of k carries one code point per 1/k stratum through the sequence: a
    sequence of probability p appears k p times on average and within [floor(kp) - 1,
    ceil(kp) + 1] times (its interval meets at most two partly covered strata), with a smaller
    spread than i.i.d. sampling's."""
    model = ToyARLM(3, 3, generator=torch.Generator().manual_seed(0), sharpness=2.0)
    exact = exact_distribution(model)
    k, groups = 12, 400
    cfg = SamplingConfig(max_new_tokens=3)

    def counts(name):
        idx = state_index(_draw(model, name, k, groups, cfg, seed=8).tokens, 3)
        return torch.stack([torch.bincount(r, minlength=27) for r in idx.reshape(groups, k)]
                           ).double()  # [groups, 27]

    strat, iid = counts("stratified"), counts("iid")
    lo, hi = torch.floor(k * exact) - 1, torch.ceil(k * exact) + 1
    assert torch.all((strat >= lo) & (strat <= hi))
    assert chi2_pvalue(strat.sum(0), exact) > 1e-3  # k p on average
    assert strat.var(0).sum() < 0.7 * iid.var(0).sum()


@pytest.mark.parametrize("name", ["arithmetic", "stratified"])
@pytest.mark.parametrize("bits", [5, 12])
def test_a_residual_carried_to_a_few_bits_keeps_every_row_exact_and_the_strata(name, bits):
    """carry_bits: only the residual's top bits carry on, the rest is the row's own fresh
    uniform. Each row is still an exact draw, and a group of k = 8 still stratifies whole
    sequences (at most ceil(k p) + 1 copies of a sequence of probability p)."""
    model = ToyARLM(4, 3, generator=torch.Generator().manual_seed(0), sharpness=2.5)
    k, groups = 8, 3000
    out = _draw(model, name, k, groups, SamplingConfig(max_new_tokens=3), seed=1,
                carry_bits=bits)
    idx = state_index(out.tokens, 4).reshape(groups, k)
    exact = exact_distribution(model)
    for row in (0, k - 1):
        assert chi2_pvalue(torch.bincount(idx[:, row], minlength=64), exact) > 1e-3
    counts = torch.stack([torch.bincount(r, minlength=64) for r in idx])  # [groups, 64]
    assert bool((counts <= torch.ceil(k * exact) + 1).all())
