import math
import re

import pytest
import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.mcmc import mh_accept, mtm, pncg, quest
from parasample.mcmc.proposal import pncg_logits, seq_log_prob, value_and_grad
from parasample.metrics import iid_tvd_floor, tvd
from parasample.noise import make_source
from parasample.targets import (
    IsingChain,
    TiltedTarget,
    ToyARLM,
    count_reward,
    enumerate_states,
    exact_distribution,
)
from tests.helpers import chi2_pvalue, exact_draws, state_counts


def _pncg_kernel(target, alpha, p):
    """The exact p-NCG transition matrix K[x, y] on an enumerable target."""
    S = enumerate_states(target.vocab_size, target.length)  # [n, L]
    logp, g = value_and_grad(target, S)
    q = pncg_logits(S, g, target.embedding, alpha, p)  # [n, L, V]
    n = S.shape[0]
    logq = torch.stack([seq_log_prob(q, S[j].expand_as(S)) for j in range(n)], 1)  # [x, y]
    log_a = (logp[None] - logp[:, None] + logq.T - logq).clamp(max=0)
    K = torch.exp(logq + log_a).double()
    K.fill_diagonal_(0)
    K += torch.diag(1 - K.sum(1))
    return K


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("make", [
    lambda: IsingChain(3, beta=1.0),
    lambda: TiltedTarget(ToyARLM(3, 2, generator=torch.Generator().manual_seed(0)),
                         count_reward(1), beta=0.5),
])
def test_pncg_kernel_leaves_the_target_exactly_invariant(p, make):
    target = make()
    pi = exact_distribution(target)
    K = _pncg_kernel(target, alpha=2.0, p=p)
    assert torch.all(K >= -1e-12) and torch.allclose(K.sum(1), torch.ones(len(pi)).double())
    assert torch.allclose(pi @ K, pi, atol=1e-10)


def _run(kernel_step, state, dims, B, steps, seed, **kw):
    src = make_source("iid", B, generator=torch.Generator().manual_seed(seed))
    acc = 0.0
    for _ in range(steps):
        state, info = kernel_step(src.uniform(dims), state, **kw)
        acc += float(info.accepted.double().mean())
    return state, acc / steps


@pytest.mark.parametrize("p", [1, 2])
def test_pncg_chains_reach_the_ising_distribution(p):
    target = IsingChain(4, beta=1.0)
    B = 20000
    x0 = torch.randint(0, 2, (B, 4), generator=torch.Generator().manual_seed(0))
    st = pncg.init(x0, target, alpha=1.0, p=p)
    st, acc = _run(pncg.step, st, 5, B, 25, 1, target=target, alpha=1.0, p=p)
    counts = state_counts(st.x, 2)
    assert chi2_pvalue(counts, exact_distribution(target)) > 1e-3
    assert 0 < acc < 1


@pytest.mark.parametrize("weights,steps", [("lambda1", 100), ("importance", 30)])
def test_multiple_try_pncg_is_exact(weights, steps):
    target = TiltedTarget(ToyARLM(3, 3, generator=torch.Generator().manual_seed(1)),
                          count_reward(2), beta=0.7)
    B, k = 10000, 3
    x0 = torch.randint(0, 3, (B, 3), generator=torch.Generator().manual_seed(0))
    st = mtm.init(x0, target, alpha=1.0)
    # from a uniform start the lambda = 1 chains mix slower (TVD 0.06 at 20 steps, 0.006 at 100)
    st, acc = _run(mtm.step, st, mtm.noise_dims(3, k), B, steps, 2, target=target, alpha=1.0,
                   tries=k, weights=weights)
    counts = state_counts(st.x, 3)
    assert chi2_pvalue(counts, exact_distribution(target)) > 1e-3


class _ConstrainedIsing(IsingChain):
    """The Ising chain restricted to states with at most two +1 spins: log pi is ``outside``
    (-inf, or NaN as from a broken energy, which weighs zero too) elsewhere, with a finite
    gradient, so most tries of a move weigh zero."""

    outside = -math.inf

    def log_prob_embedded(self, e):
        ones = (e[..., 0] > 0).sum(-1)
        return super().log_prob_embedded(e) + torch.where(ones <= 2, 0.0, self.outside)


@pytest.mark.parametrize("outside", [-math.inf, math.nan])
@pytest.mark.parametrize("weights", ["lambda1", "importance"])
def test_multiple_try_pncg_rejects_a_move_whose_tries_all_weigh_zero(weights, outside):
    """With NaN weights it failed with 'a row of probs sums to zero ... all -inf' (an internal
    error that read as bad input); such a move is rejected, and the chains still sample the
    constrained target."""
    target = _ConstrainedIsing(5, beta=0.8)
    object.__setattr__(target, "outside", outside)  # a frozen dataclass
    B, k = 8000, 3
    x0 = torch.zeros(B, 5, dtype=torch.long)  # all -1: allowed
    st = mtm.init(x0, target, alpha=8.0)
    src = make_source("iid", B, generator=torch.Generator().manual_seed(0))
    dead_seen = False
    for _ in range(30):
        u = src.uniform(mtm.noise_dims(5, k))
        new, info = mtm.step(u, st, target, alpha=8.0, tries=k, weights=weights)
        ys = mtm.draw_many(st.q_logits, u[:, :k * 5].view(B, k, 5))
        dead = ((ys == 1).sum(-1) > 2).all(1)  # every try breaks the constraint
        assert not info.accepted[dead].any() and torch.equal(new.x[dead], st.x[dead])
        dead_seen |= bool(dead.any())
        st = new
    assert dead_seen
    assert bool(((st.x == 1).sum(-1) <= 2).all())
    allowed = (enumerate_states(2, 5) == 1).sum(-1) <= 2
    pi = torch.softmax(torch.where(allowed, IsingChain(5, beta=0.8).log_prob(
        enumerate_states(2, 5)).double(), -math.inf), 0)
    counts = state_counts(st.x, 2)
    assert chi2_pvalue(counts, pi) > 1e-3


def test_single_try_mtm_with_lambda1_is_pncg():
    """k = 1 and lambda = 1 reduce the MTM ratio to the p-NCG MH ratio: same chain."""
    target = IsingChain(5, beta=0.8)
    x0 = torch.randint(0, 2, (64, 5), generator=torch.Generator().manual_seed(0))
    a = pncg.init(x0, target, alpha=3.0)
    b = mtm.init(x0, target, alpha=3.0)
    src = make_source("iid", 64, generator=torch.Generator().manual_seed(1))
    for _ in range(10):
        u = src.uniform(7)  # p-NCG takes [L + 1], MTM with k = 1 takes [L + 2]: drop u[:, L]
        a, _ = pncg.step(torch.cat([u[:, :5], u[:, 6:]], 1), a, target, alpha=3.0)
        b, _ = mtm.step(u, b, target, alpha=3.0, tries=1)
        assert torch.equal(a.x, b.x)


def _toy_with_eos():
    base = ToyARLM(3, 3, generator=torch.Generator().manual_seed(4), eos_id=0)
    return base, TiltedTarget(base, count_reward(1), beta=0.5)


def _exact_draws(target, B, seed):
    """B exact draws from an enumerable target (to test stationarity: pi in, pi out)."""
    return exact_draws(exact_distribution(target), target.vocab_size, target.length, B, seed)


def test_quest_leaves_the_tilted_target_invariant():
    """Chains started at exact draws of pi are still distributed as pi after 10 moves."""
    base, target = _toy_with_eos()
    B, L = 20000, 3
    cfg = SamplingConfig(max_new_tokens=L)
    ids = torch.zeros(B, 1, dtype=torch.long)
    ids = torch.zeros(B, 1, dtype=torch.long)
    st = quest.init(_exact_draws(target, B, 0), target.reward, base, ids, torch.ones_like(ids),
                    cfg)
    src = make_source("iid", B, generator=torch.Generator().manual_seed(1))
    acc = 0.0
    for _ in range(10):
        st, info = quest.step(src.uniform(L + 2), st, base, ids, torch.ones_like(ids),
                              target.reward, 0.5, cfg)
        acc += float(info.accepted.double().mean()) / 10
    counts = state_counts(st.y, 3)
    assert chi2_pvalue(counts, exact_distribution(target)) > 1e-3
    assert 0.2 < acc < 1  # it moves


def test_quest_converges_from_lm_samples():
    base, target = _toy_with_eos()
    B, L = 4000, 3
    cfg = SamplingConfig(max_new_tokens=L)
    ids = torch.zeros(B, 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    y0 = generate(base, ids, mask, make_source("iid", B, generator=torch.Generator()
                                               .manual_seed(0)), cfg).tokens
    y0 = torch.nn.functional.pad(y0, (0, L - y0.shape[1]), value=0)
    st = quest.init(y0, target.reward, base, ids, mask, cfg)
    src = make_source("iid", B, generator=torch.Generator().manual_seed(1))
    for _ in range(150):  # TVD 0.25 after 1 move, 0.06 after 15, 0.009 after 100
        st, _ = quest.step(src.uniform(L + 2), st, base, ids, mask, target.reward, 0.5, cfg)
    emp = state_counts(st.y, 3).double() / B
    assert 0.5 * float((emp - exact_distribution(target)).abs().sum()) < 0.5 * (27 / B) ** 0.5


def test_quest_rejects_and_counts_nan_rewards():
    base, _ = _toy_with_eos()

    def reward(y):  # NaN whenever the last token is 2
        r = (y == 1).sum(-1).double()
        return torch.where(y[:, -1] == 2, math.nan, r)

    B, L = 512, 3
    cfg = SamplingConfig(max_new_tokens=L)
    ids = torch.zeros(B, 1, dtype=torch.long)
    y0 = torch.ones(B, L, dtype=torch.long)
    st = quest.init(y0, reward, base, ids, torch.ones_like(ids), cfg)
    src = make_source("iid", B, generator=torch.Generator().manual_seed(2))
    nan = 0
    for _ in range(5):
        st, info = quest.step(src.uniform(L + 2), st, base, ids, torch.ones_like(ids), reward,
                              1.0, cfg)
        nan += int(info.nan_rejected.sum())
        assert not torch.any(info.accepted & info.nan_rejected)
    assert nan > 0 and torch.all(st.y[:, -1] != 2) and not torch.isnan(st.reward).any()


@pytest.mark.parametrize("temperature,top_p", [(0.5, 1.0), (1.0, 0.9), (0.5, 0.9)])
def test_quest_is_exact_under_temperature_and_top_p(temperature, top_p):
    """QUEST regenerates suffixes from the tempered / nucleus q, not p: its ratio corrects for
    that, so the chain leaves p exp(r / beta) invariant (restricted to q's support under top-p)
    instead of drifting to q exp(r / beta), the law the uncorrected ratio targets. Chains start
    at exact draws of the target and must still be there after 10 moves (the uncorrected ratio
    fails this in every case, checked by hand)."""
    from tests.helpers import brute_force_ar

    base, target = _toy_with_eos()
    B, L = 20000, 3
    cfg = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=L)
    q = brute_force_ar(base, L, cfg)  # [27]
    pi = exact_distribution(target) * (q > 0)
    pi = pi / pi.sum()
    ids = torch.zeros(B, 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    pi_draws = exact_draws(pi, 3, L, B, seed=0)
    st = quest.init(pi_draws, target.reward, base, ids, mask, cfg)
    src = make_source("iid", B, generator=torch.Generator().manual_seed(1))
    acc = 0.0
    for _ in range(10):
        st, info = quest.step(src.uniform(L + 2), st, base, ids, mask, target.reward, 0.5, cfg)
        acc += float(info.accepted.double().mean()) / 10
    emp = state_counts(st.y, 3).double()
    assert chi2_pvalue(emp, pi) > 1e-3
    assert float(tvd(emp / B, pi)) < 2 * iid_tvd_floor(pi, B)
    assert 0.2 < acc < 1  # it moves


def test_quest_leaves_a_state_outside_the_nucleus_for_one_inside():
    """A chain started where top-p's q is zero (pi_S = 0 there) moves into q's support."""
    base, target = _toy_with_eos()
    B, L = 2000, 3
    cfg = SamplingConfig(top_p=0.5, max_new_tokens=L)
    ids = torch.zeros(B, 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    st = quest.init(torch.full((B, L), 2), target.reward, base, ids, mask, cfg)
    src = make_source("iid", B, generator=torch.Generator().manual_seed(3))
    for _ in range(20):
        st, _ = quest.step(src.uniform(L + 2), st, base, ids, mask, target.reward, 0.5, cfg)
    assert not torch.isinf(st.logq).any()


def test_mh_accept_rejects_nan():
    out = mh_accept(torch.tensor([math.nan, 0.0, -math.inf, 1.0]), torch.full((4,), 0.5))
    assert out.tolist() == [False, True, False, True]


@pytest.mark.parametrize("call,message", [
    (lambda t, x: pncg.init(x, t, alpha=0.0), "alpha=0.0 must be > 0"),
    (lambda t, x: pncg.init(x, t, alpha=1.0, p=3), "p=3"),
    (lambda t, x: mtm.step(torch.zeros(4, 20), mtm.init(x, t, 1.0), t, 1.0, tries=0),
     "tries=0 must be an integer >= 1"),
    (lambda t, x: IsingChain(4, beta=-1.0), "beta=-1.0"),
])
def test_bad_input(call, message):
    t = IsingChain(4)
    x = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        call(t, x)


@pytest.mark.parametrize("temperature,top_p,eos", [(1.0, 1.0, 2), (0.7, 0.9, 2),
                                                   (1.0, 1.0, None)])
def test_cached_quest_gives_the_chain_of_token_by_token_quest_in_fewer_calls(temperature, top_p,
                                                                             eos):
    """Prefilling the kept prefix with the prompt (one call), and attending to it in the cache
    kept across moves (``keep_cache``: ragged cuts by masks, rejected proposals dropped, the
    cache compacted as it grows), draw the same suffixes from the same uniforms as feeding it
    back token by token; a batch of chains whose prompts differ in length (left padding), with
    EOS, temperature and top-p."""
    from types import SimpleNamespace

    from parasample.targets.hf import HFCausalLM
    from tests.test_targets import _tiny_llama

    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=eos, pad_token_id=0))
    B, L = 6, 12
    cfg = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=L)
    ids = torch.randint(3, 50, (B, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[::2, :2] = 0  # every other prompt is 2 tokens shorter
    y0 = generate(lm, ids, mask, make_source("iid", B, generator=torch.Generator()
                                             .manual_seed(1)), cfg).tokens
    y0 = torch.nn.functional.pad(y0, (0, L - y0.shape[1]), value=eos or 0)

    def reward(y):  # EOS padding (token 2) counts: the tilt favours sequences that end early
        return (y % 3 == 2).sum(-1).double()

    chains, calls, widths = {}, {}, []
    for cached in (False, True, "kept"):
        st = quest.init(y0, reward, lm, ids, mask, cfg, keep_cache=cached == "kept")
        src = make_source("iid", B, generator=torch.Generator().manual_seed(2))
        traj, calls[cached] = [], 0
        for _ in range(12):
            st, info = quest.step(src.uniform(L + 2), st, lm, ids, mask, reward, 0.5, cfg,
                                  cached=cached is True)
            traj.append((st.y.clone(), info.accepted.clone()))
            calls[cached] += info.nfe
            if st.cache is not None:
                widths.append(st.cache.width)
        chains[cached] = (traj, st)
    for other in (True, "kept"):
        for (y_a, acc_a), (y_b, acc_b) in zip(chains[False][0], chains[other][0], strict=True):
            assert torch.equal(y_a, y_b) and torch.equal(acc_a, acc_b)
    assert any(bool(a.any()) for _, a in chains[True][0])  # the chains move
    assert calls["kept"] == calls[True]  # one re-fed token per row instead of the prefill
    # the cache grows by each move's fed tokens and is compacted back to prompt + L columns
    drops = [b == 5 + L < a for a, b in zip(widths[:-1], widths[1:], strict=True)]
    assert max(widths) > 2 * (5 + L) and any(drops)
    if eos is not None:
        assert bool((chains[True][1].length < L).any())  # and some end before L
    if not cfg.q_is_p:  # the kept log-probs carry over exactly where they matter
        a, b = chains[False][1], chains[True][1]
        assert torch.allclose(a.logp, b.logp, atol=1e-4) and torch.allclose(a.logq, b.logq,
                                                                             atol=1e-4)
    # a batch runs L - (its smallest cut) steps: fewer calls unless some chain is cut at 0 in
    # every move (here: a chain of length 1 under EOS)
    assert calls[True] <= calls[False] and (eos is not None or calls[True] < calls[False])


def test_cached_quest_refuses_a_model_without_exact_padding():
    base, target = _toy_with_eos()
    cfg = SamplingConfig(max_new_tokens=3)
    ids = torch.zeros(2, 1, dtype=torch.long)
    st = quest.init(torch.ones(2, 3, dtype=torch.long), target.reward, base, ids,
                    torch.ones_like(ids), cfg)
    with pytest.raises(ValueError, match="use cached=False"):
        quest.step(torch.rand(2, 5, dtype=torch.float64), st, base, ids, torch.ones_like(ids),
                   target.reward, 0.5, cfg, cached=True)


@pytest.mark.parametrize("source,weights,tries,temperature,chains,moves", [
    ("iid", "lambda1", 4, 1.0, 12000, 6), ("iid", "importance", 4, 1.0, 12000, 6),
    ("lattice", "lambda1", 4, 1.0, 12000, 6), ("lattice", "importance", 3, 0.5, 200000, 20),
    ("antithetic", "lambda1", 4, 0.5, 12000, 6), ("antithetic", "importance", 2, 1.0, 12000, 6),
    ("iid", "lambda1", 1, 0.5, 12000, 6)])
def test_mt_quest_leaves_the_tilted_target_invariant(source, weights, tries, temperature, chains,
                                                     moves):
    """Multiple-try QUEST (i.i.d. or correlated tries, both weightings, under temperature too):
    chains started at exact draws of pi are still distributed as pi after the moves.

    Power, measured with deliberately wrong reverse sets: a fresh lattice shift instead of the
    conditional one moves lambda1 / K = 4 / T = 1 chains by TVD 0.02 (p = 5e-6 at 12000 x 6),
    but importance / K = 3 / T = 0.5 chains only by about 0.0015, which 12000 x 6 missed (p =
    0.01) and 100000 x 6 barely saw (p = 2e-3); that case runs 200000 chains for 20 moves,
    where the wrong set gives p = 3e-9 and 9e-9 for two seeds and the right one 0.23 and 1.0."""
    from parasample.mcmc import mtquest

    base, target = _toy_with_eos()
    B, L = chains, 3
    cfg = SamplingConfig(temperature=temperature, max_new_tokens=L)
    ids = torch.zeros(B, 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    pi = exact_distribution(target)
    st = mtquest.init(_exact_draws(target, B, 0), target.reward, base, ids, mask, cfg)
    src = make_source("iid", B, generator=torch.Generator().manual_seed(1))
    acc = 0.0
    for _ in range(moves):
        st, info = mtquest.step(src.uniform(mtquest.noise_dims(L, tries)), st, base, ids, mask,
                                target.reward, 0.5, cfg, tries=tries, source=source,
                                weights=weights)
        acc += float(info.accepted.double().mean()) / moves
    emp = state_counts(st.y, 3).double()
    assert chi2_pvalue(emp, pi) > 1e-3
    assert float(tvd(emp / B, pi)) < 2 * iid_tvd_floor(pi, B)
    assert 0.2 < acc < 1  # it moves


@pytest.mark.parametrize("kw,message", [
    (dict(tries=0), "tries=0 must be"), (dict(source="sobol"), "choose one of iid, lattice"),
    (dict(source="antithetic", tries=3), "use 4"), (dict(weights="x"), "weights 'x'"),
    (dict(beta=0.0), "beta=0.0 must be > 0")])
def test_mt_quest_bad_input(kw, message):
    from parasample.mcmc import mtquest

    base, target = _toy_with_eos()
    cfg = SamplingConfig(max_new_tokens=3)
    ids = torch.zeros(2, 1, dtype=torch.long)
    st = mtquest.init(torch.ones(2, 3, dtype=torch.long), target.reward, base, ids,
                      torch.ones_like(ids), cfg)
    beta = kw.pop("beta", 0.5)
    with pytest.raises(ValueError, match=re.escape(message)):
        mtquest.step(torch.rand(2, mtquest.noise_dims(3, kw.get("tries", 4)) if
                                kw.get("tries", 4) > 0 else 3, dtype=torch.float64), st, base,
                     ids, torch.ones_like(ids), target.reward, beta, cfg, **kw)


@pytest.mark.parametrize("source", ["iid", "lattice"])
def test_cached_mt_quest_gives_the_chain_of_token_by_token_mt_quest(source):
    """mt-QUEST's 2k rows per chain continue the prefilled prefix exactly as when it is fed
    back token by token: the same uniforms give the same chain (transformers model, left
    padding, EOS, temperature and top-p)."""
    from types import SimpleNamespace

    from parasample.mcmc import mtquest
    from parasample.targets.hf import HFCausalLM
    from tests.test_targets import _tiny_llama

    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0))
    B, L, k = 3, 8, 4
    cfg = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=L)
    ids = torch.randint(3, 50, (B, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[::2, :2] = 0
    y0 = generate(lm, ids, mask, make_source("iid", B, generator=torch.Generator()
                                             .manual_seed(1)), cfg).tokens
    y0 = torch.nn.functional.pad(y0, (0, L - y0.shape[1]), value=2)

    def reward(y):
        return (y % 3 == 2).sum(-1).double()

    runs = {}
    for cached in (False, True):
        st = mtquest.init(y0, reward, lm, ids, mask, cfg)
        src = make_source("iid", B, generator=torch.Generator().manual_seed(2))
        runs[cached] = []
        for _ in range(6):
            st, info = mtquest.step(src.uniform(mtquest.noise_dims(L, k)), st, lm, ids, mask,
                                    reward, 0.5, cfg, tries=k, source=source, cached=cached)
            runs[cached].append((st.y.clone(), info.accepted.clone(), info.nfe))
    for (y_a, acc_a, n_a), (y_b, acc_b, n_b) in zip(runs[False], runs[True], strict=True):
        assert torch.equal(y_a, y_b) and torch.equal(acc_a, acc_b) and n_b <= n_a
    assert any(bool(a.any()) for _, a, _ in runs[True])


def test_cached_quest_falls_back_where_the_context_is_short():
    """A batch's rows step on past their own ends (to the smallest cut's suffix), so the cached
    move needs prompt + 2L tokens of context: without it the default is token by token, and
    asking for the cache says what to do."""
    from types import SimpleNamespace

    from parasample.targets.hf import HFCausalLM
    from tests.test_targets import _tiny_llama

    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0))  # 64
    assert quest.use_cache(lm, None, 40, 12) and not quest.use_cache(lm, None, 41, 12)
    assert not quest.use_cache(lm, False, 10, 12)
    with pytest.raises(ValueError, match="use cached=False"):
        quest.use_cache(lm, True, 41, 12)
    base, _ = _toy_with_eos()
    assert not quest.use_cache(base, None, 1, 3)
