"""The API on a parametrised device (PARASAMPLE_TEST_DEVICES, cpu here): models, caches,
sampler state and uniforms live there, and the samples equal the CPU's for the same uniforms.

Arithmetic sampling divides its carried code point by p(token) at every draw, so the last-bit
differences between a GPU's and the CPU's float32 logits grow until another token is picked: on
another device its samples agree with the CPU's on the first tokens only (each row is exact on
either; see the transformers bridge's tests)."""

from __future__ import annotations

import pytest
import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.devices import dtype_name, resolve_device, resolve_dtype
from parasample.diffusion import DecodeConfig, DualCache, FixedSteps, Threshold, decode, top_prob
from parasample.models import CausalLMAdapter, MaskedLMAdapter, TinyTransformer, TransformerConfig
from parasample.noise import SOURCES, make_source
from parasample.smc import smc
from parasample.targets import count_reward


def _causal(device):
    torch.manual_seed(0)  # weight init of a throwaway model
    m = TinyTransformer(TransformerConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=2,
                                          max_len=48, causal=True))
    return CausalLMAdapter(m.to(device), eos_id=15)


def _masked(device):
    torch.manual_seed(0)
    m = TinyTransformer(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=2,
                                          max_len=64))
    return MaskedLMAdapter(m.to(device), mask_id=11)


@pytest.mark.parametrize("sampler", list(SOURCES))
def test_ancestral_sampling_on_the_device_equals_the_cpu(device, sampler):
    ids = torch.randint(0, 15, (2, 5), generator=torch.Generator().manual_seed(0))
    cfg = SamplingConfig(temperature=0.9, top_p=0.95, max_new_tokens=12)
    outs = []
    for dev in (torch.device("cpu"), device):
        src = make_source(sampler, 8, 4, generator=torch.Generator().manual_seed(1))
        out = generate(_causal(dev), ids, torch.ones_like(ids), src, cfg, samples_per_prompt=4)
        assert out.tokens.device.type == dev.type
        outs.append(out.tokens.cpu())
    _same(outs[0], outs[1], sampler)


def _same(a, b, sampler):
    if SOURCES[sampler].carries_residual:
        a, b = a[:, :2], b[:, :2]
    assert torch.equal(a, b)


@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("sampler", ["iid", "arithmetic"])
def test_diffusion_decoding_on_the_device(device, cache, sampler):
    from parasample.diffusion import make_cache

    prompts = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(1))
    cfg = DecodeConfig(16, 4, 16, rule=Threshold(0.3), score=top_prob, temperature=1.0,
                       cache=make_cache(cache))
    outs = []
    for dev in (torch.device("cpu"), device):
        src = make_source(sampler, 4, 4, generator=torch.Generator().manual_seed(2))
        outs.append(decode(_masked(dev), prompts, cfg, src).tokens.cpu())
    _same(outs[0], outs[1], sampler)
    out = decode(_masked(device), prompts, DecodeConfig(16, 4, 16, rule=FixedSteps(),
                                                        cache=DualCache()))
    assert out.tokens.device.type == device.type


def test_smc_on_the_device(device):
    lm = _causal(device)
    R, N, L = 2, 4, 6
    scfg = smc.SMCConfig(n_particles=N, beta=0.5)
    reward = count_reward(3)
    ids = torch.zeros(R * N, 2, dtype=torch.long, device=device)
    st = smc.init(lm, ids, torch.ones_like(ids), scfg, reward)
    tok = make_source("iid", R * N, generator=torch.Generator().manual_seed(0))
    res = make_source("iid", R, generator=torch.Generator().manual_seed(1))
    for t in range(L):
        st, _ = smc.step(tok.uniform(), res.uniform(smc.noise_dims(scfg)), st, lm, reward, scfg,
                         SamplingConfig(max_new_tokens=L), advance=t < L - 1)
    assert st.logw.device.type == device.type and torch.isfinite(smc.final_log_evidence(st)).all()


def test_device_and_dtype_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert dtype_name(resolve_dtype("bfloat16", torch.device("cpu"))) == "bfloat16"
    with pytest.raises(ValueError, match="not one of float32, bfloat16, float16"):
        resolve_dtype("float64", torch.device("cpu"))
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible here.*--device cpu"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_models_load_in_a_dtype_on_a_device(device):
    from parasample.models import load_dllm

    lm = load_dllm("dllm-arith", device, torch.bfloat16)
    assert lm.device.type == device.type and lm.model.embed.weight.dtype == torch.bfloat16
    x = torch.full((1, 304), 3)
    assert lm.logits(x).dtype == torch.float32  # logits are float32 whatever the weights
