"""The transformers bridge: ``model.generate`` driven by a parasample UniformSource draws, token
for token, what parasample's own engine draws from the same model, source and settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from parasample.ancestral import SamplingConfig
from parasample.ancestral import generate as engine_generate
from parasample.integrations import transformers as bridge
from parasample.noise import SOURCES, make_source
from parasample.targets.hf import HFCausalLM
from tests.test_targets import _tiny_llama


def _both(lm, ids, mask, sampler, cfg, k, seed=0, **source_kw):
    """(engine tokens, bridge tokens), both EOS-padded to the same width.

    The engine runs each of the k rows from its own prefill, as generate's num_return_sequences
    does: a shared prefill computes the same logits up to the last bits of float32, which
    arithmetic sampling's carried residual amplifies (it divides by p(token) at every step);
    the other sources agree either way."""
    P = ids.shape[0]
    src = make_source(sampler, P * k, k, generator=torch.Generator().manual_seed(seed),
                      **source_kw)
    ours = engine_generate(lm, ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), src,
                           cfg).tokens
    src = make_source(sampler, P * k, k, generator=torch.Generator().manual_seed(seed),
                      **source_kw)
    theirs = bridge.generate(lm.model, ids, mask, src, cfg, samples_per_prompt=k,
                             eos_id=lm.eos_id).cpu()
    T = max(ours.shape[1], theirs.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (0, T - t.shape[1]), value=lm.eos_id)  # noqa
    return pad(ours.cpu()), pad(theirs)


@pytest.mark.parametrize("sampler", list(SOURCES))
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
@pytest.mark.parametrize("ignore_eos", [False, True])
def test_generate_with_the_processor_is_token_identical_to_the_engine(sampler, temperature,
                                                                     top_p, ignore_eos):
    """With EOS honoured rows end at it and stay EOS-padded; with ``ignore_eos`` EOS is an
    ordinary token in both (the bridge once forced EOS after the first one: 65% agreement)."""
    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0))
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    cfg = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=24,
                         ignore_eos=ignore_eos)
    ours, theirs = _both(lm, ids, mask, sampler, cfg, k=8)
    assert torch.equal(ours, theirs)
    eos = ours == lm.eos_id
    assert eos.any()
    # after a row's first EOS: only EOS (honoured), or some other token too (ignored)
    after = eos.long().cummax(1).values.bool() & ~eos
    assert bool(after.any()) == ignore_eos


@pytest.mark.parametrize("sampler", ["arithmetic", "stratified"])
def test_the_bridge_carries_a_residual_to_a_few_bits_as_the_engine_does(sampler):
    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0))
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    cfg = SamplingConfig(temperature=0.8, max_new_tokens=24)
    ours, theirs = _both(lm, ids, mask, sampler, cfg, k=8, carry_bits=6)
    assert torch.equal(ours, theirs)


def test_the_processor_checks_the_batch():
    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0))
    ids = torch.tensor([[5, 6, 7]])
    src = make_source("iid", 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="serves 3 rows but generate runs 4"):
        bridge.generate(lm.model, ids, torch.ones_like(ids), src,
                        SamplingConfig(max_new_tokens=4), samples_per_prompt=4, eos_id=2)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", list(SOURCES))
def test_smollm2_through_generate_is_token_identical_to_the_engine(sampler, device):
    from parasample.targets.hf import smollm2

    lm = smollm2(device=device)
    ids, mask = lm.encode_prompts(["What is 17 + 25?", "Name a colour."])
    ids, mask = ids.to(device), mask.to(device)
    cfg = SamplingConfig(temperature=0.8, max_new_tokens=24)
    ours, theirs = _both(lm, ids, mask, sampler, cfg, k=8)
    assert torch.equal(ours, theirs)
