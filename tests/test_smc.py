import math

import pytest
import torch

from parasample.ancestral import SamplingConfig
from parasample.noise import make_source
from parasample.smc import multinomial, smc, stratified, systematic
from parasample.targets import (
    TiltedTarget,
    ToyARLM,
    count_reward,
    enumerate_states,
    exact_distribution,
    state_index,
)


def test_systematic_copies_are_floor_or_ceil_of_n_w():
    w = torch.tensor([[0.5, 0.0, 0.3, 0.2]])
    for u in torch.linspace(0, 0.999, 50):
        idx = systematic(w, u[None])
        copies = torch.bincount(idx[0], minlength=4).double()
        assert torch.all(copies >= torch.floor(4 * w[0]) - 1e-9)
        assert torch.all(copies <= torch.ceil(4 * w[0]) + 1e-9) and copies[1] == 0


@pytest.mark.parametrize("fn,dims", [(stratified, 5), (multinomial, 5)])
def test_resamplers_are_unbiased(fn, dims):
    w = torch.tensor([0.1, 0.0, 0.6, 0.05, 0.25])
    R = 40000
    u = torch.rand(R, dims, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx = fn(w.expand(R, 5), u)
    mean_copies = torch.bincount(idx.reshape(-1), minlength=5).double() / R
    assert torch.allclose(mean_copies, 5 * w.double(), atol=0.03) and mean_copies[1] == 0


def _run_smc(base, reward, beta, R, N, seed, L=3):
    cfg = smc.SMCConfig(n_particles=N, beta=beta)
    sampling = SamplingConfig(max_new_tokens=L)
    B = R * N
    ids = torch.zeros(B, 1, dtype=torch.long)
    st = smc.init(base, ids, torch.ones_like(ids), cfg, reward)
    tok = make_source("iid", B, generator=torch.Generator().manual_seed(seed))
    res = make_source("iid", R, generator=torch.Generator().manual_seed(seed + 1))
    for t in range(L):
        st, info = smc.step(tok.uniform(), res.uniform(smc.noise_dims(cfg)), st, base, reward,
                            cfg, sampling, advance=t < L - 1)
    return st


def test_smc_is_properly_weighted_and_its_evidence_unbiased():
    base = ToyARLM(3, 3, generator=torch.Generator().manual_seed(5))
    beta = 0.5
    target = TiltedTarget(base, count_reward(1), beta)
    R, N = 6000, 8
    st = _run_smc(base, count_reward(1), beta, R, N, seed=0)
    log_z = smc.final_log_evidence(st)  # [R]
    states = enumerate_states(3, 3)
    z_true = float((exact_distribution(base) * torch.exp((states == 1).sum(1) / beta)).sum())
    z_hat = torch.exp(log_z)
    se = float(z_hat.std() / math.sqrt(R))
    assert abs(float(z_hat.mean()) - z_true) < 4 * se
    # E[Z_hat * sum_i wbar_i 1(y_i = y)] = gamma(y): the weighted histogram is unbiased for pi
    wbar = torch.softmax(st.logw, -1) * z_hat[:, None]  # [R, N]
    idx = state_index(st.ar.tokens, 3).view(R, N)
    est = torch.zeros(27, dtype=torch.float64).scatter_add_(0, idx.reshape(-1), wbar.reshape(-1))
    est = est / est.sum()
    assert 0.5 * float((est - exact_distribution(target)).abs().sum()) < 0.03


def test_smc_gives_nan_reward_particles_zero_weight():
    base = ToyARLM(3, 3, generator=torch.Generator().manual_seed(5))

    class NaNReward:
        def __call__(self, y):
            return self.partial(y)

        def partial(self, y):
            r = (y == 1).sum(-1).double()
            return torch.where((y == 2).any(-1), math.nan, r) if y.shape[1] else r

    st = _run_smc(base, NaNReward(), 1.0, 200, 8, seed=3)
    has2 = (st.ar.tokens == 2).any(-1).view(200, 8)
    assert has2.any() and not torch.isnan(st.logw).any()
    assert torch.all(st.logw[has2] == -math.inf)  # zero weight, and the run went on
    alive = torch.isfinite(st.logw).any(-1)
    assert alive.any() and torch.all(torch.isfinite(smc.final_log_evidence(st)[alive]))
    assert torch.all(smc.final_log_evidence(st)[~alive] == -math.inf)


def test_smc_config_errors():
    with pytest.raises(ValueError, match="beta=0"):
        smc.SMCConfig(beta=0)
    with pytest.raises(ValueError, match="resampler='bogus'"):
        smc.SMCConfig(resampler="bogus")


@pytest.mark.parametrize("tries,temperature,eos", [(1, 1.0, None), (4, 0.6, None), (1, 1.0, 0)])
def test_resample_move_smc_is_properly_weighted_and_its_evidence_unbiased(tries, temperature,
                                                                          eos):
    """Token SMC with QUEST (tries = 1) or mt-QUEST rejuvenation after every step: the evidence
    stays unbiased and the evidence-weighted histogram matches the exact tilted target (under
    temperature too, and with EOS); the moves do move particles."""
    from parasample.smc import resample_move as rm

    base = ToyARLM(3, 3, generator=torch.Generator().manual_seed(5), eos_id=eos)
    beta, L, R, N = 0.5, 3, 4000, 8
    target = TiltedTarget(base, count_reward(1), beta)
    cfg = smc.SMCConfig(n_particles=N, beta=beta)
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=L)
    B = R * N
    ids = torch.zeros(B, 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    reward = count_reward(1)
    st = smc.init(base, ids, mask, cfg, reward)
    tok = make_source("iid", B, generator=torch.Generator().manual_seed(0))
    res = make_source("iid", R, generator=torch.Generator().manual_seed(1))
    mv = make_source("iid", B, generator=torch.Generator().manual_seed(2))
    accepted = []
    for t in range(L):
        st, _ = smc.step(tok.uniform(), res.uniform(smc.noise_dims(cfg)), st, base, reward, cfg,
                         sampling, advance=t < L - 1)
        st, info = rm.rejuvenate(mv.uniform(rm.noise_dims(t + 1, 1, tries)), st, base, ids,
                                 mask, reward, beta, sampling, tries=tries, advance=t < L - 1)
        accepted.append(float(info.accepted.mean()))
    states = enumerate_states(3, 3)
    p = exact_distribution(base)
    z_true = float((p * torch.exp((states == 1).sum(1) / beta)).sum())
    z_hat = torch.exp(smc.final_log_evidence(st))
    se = float(z_hat.std() / math.sqrt(R))
    assert abs(float(z_hat.mean()) - z_true) < 4 * se
    wbar = torch.softmax(st.logw, -1) * z_hat[:, None]
    idx = state_index(st.ar.tokens, 3).view(R, N)
    est = torch.zeros(27, dtype=torch.float64).scatter_add_(0, idx.reshape(-1), wbar.reshape(-1))
    est = est / est.sum()
    assert 0.5 * float((est - exact_distribution(target)).abs().sum()) < 0.03
    assert min(accepted) > 0.1
    # the moved particles carry the log q of their own tokens (what SMC's next weight reads)
    from parasample.mcmc.quest import _regenerate

    y = st.ar.tokens
    _, _, logq, _ = _regenerate(torch.zeros(B, L, dtype=torch.float64),
                                torch.full((B,), L), y, base, ids, mask, sampling)
    assert torch.allclose(st.ar.logprobs.double(), logq, atol=1e-6)


def test_resample_move_prefilled_and_fed_back_give_the_same_particles():
    """With a transformers model the moved prefixes are prefilled in one call, or the moves run
    on the particles' own kept cache (reordered by resampling, gathered back after the moves);
    fed back token by token they give the same particles, weights and evidence."""
    from types import SimpleNamespace

    from parasample.smc import resample_move as rm
    from parasample.targets.hf import HFCausalLM
    from tests.test_targets import _tiny_llama

    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0))

    class Threes:
        def __call__(self, y):
            return (y % 3 == 0).sum(-1).double()

        partial = __call__

    R, N, L, beta = 2, 4, 5, 0.5
    cfg = smc.SMCConfig(n_particles=N, beta=beta)
    sampling = SamplingConfig(temperature=0.8, max_new_tokens=L)
    # the N particles of a system share its prompt (resampling moves caches within a system)
    ids = torch.randint(3, 50, (R, 4), generator=torch.Generator().manual_seed(0))
    ids = ids.repeat_interleave(N, dim=0)
    mask = torch.ones_like(ids)
    mask[:N, :1] = 0  # the first system's prompt is one token shorter (left padding)
    runs = {}
    for cached in (False, True, "kept"):
        st = smc.init(lm, ids, mask, cfg, Threes())
        src = make_source("iid", R * N, generator=torch.Generator().manual_seed(1))
        res = make_source("iid", R, generator=torch.Generator().manual_seed(2))
        for t in range(L):
            st, _ = smc.step(src.uniform(), res.uniform(smc.noise_dims(cfg)), st, lm, Threes(),
                             cfg, sampling, advance=t < L - 1)
            st, _ = rm.rejuvenate(src.uniform(rm.noise_dims(t + 1)), st, lm, ids, mask,
                                  Threes(), beta, sampling, cached=cached is True,
                                  keep_cache=cached == "kept", advance=t < L - 1)
        runs[cached] = st
    for other in (True, "kept"):
        a, b = runs[False], runs[other]
        assert torch.equal(a.ar.tokens, b.ar.tokens)
        assert torch.allclose(a.logw, b.logw, atol=1e-4)
        assert torch.allclose(smc.final_log_evidence(a), smc.final_log_evidence(b), atol=1e-4)
