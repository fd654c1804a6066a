"""The batched KV-cached AR engine: cache vs no-cache reference, k samples from one prefill,
fixed-length runs, power-of-two prefixes of correlated groups, and its input errors."""

from types import SimpleNamespace

import pytest
import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.models import CausalLMAdapter, TinyTransformer, TransformerConfig
from parasample.noise import SOURCES, make_source
from tests.test_targets import _tiny_llama

SAMPLERS = list(SOURCES)


def _tiny_causal(use_cache):
    torch.manual_seed(0)  # weight init of a throwaway test model, not a sampler
    model = TinyTransformer(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=2,
                                              max_len=32, causal=True))
    return CausalLMAdapter(model, eos_id=2, use_cache=use_cache)


def _hf(use_cache):
    from parasample.targets.hf import HFCausalLM

    return HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0),
                      use_cache=use_cache)


def _run(lm, ids, mask, sampler, k, config, seed=0):
    src = make_source(sampler, ids.shape[0] * k, k, generator=torch.Generator().manual_seed(seed))
    return generate(lm, ids, mask, src, config, samples_per_prompt=k)


# The code-point samplers (arithmetic, stratified) are left out on purpose: they refine one code
# point by 1/p(token) at every draw, so the 1e-6 logit differences between two float32 code
# paths grow into different tokens after ~20 bits of entropy (their exactness and
# stratification are tested in test_ancestral).
@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if not SOURCES[s].carries_residual])
@pytest.mark.parametrize("build", [_tiny_causal, _hf], ids=["tiny", "hf-llama"])
def test_kv_cache_and_no_cache_reference_draw_the_same_tokens(build, sampler):
    """Same uniforms -> same tokens and log-probs, with and without the KV cache (left-padded
    prompts for the HF model; k samples per prompt from one prefill)."""
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    config = SamplingConfig(temperature=1.3, top_p=0.9, max_new_tokens=12)
    a = _run(build(True), ids, mask, sampler, 4, config, seed=3)
    b = _run(build(False), ids, mask, sampler, 4, config, seed=3)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert torch.equal(a.lengths, b.lengths) and a.nfe == b.nfe


@pytest.mark.parametrize("build", [_tiny_causal, _hf], ids=["tiny", "hf-llama"])
def test_one_prefill_per_prompt_equals_repeated_rows(build):
    """samples_per_prompt=k is the same computation as k copies of each prompt row."""
    lm = build(True)
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    config = SamplingConfig(max_new_tokens=10)
    shared = _run(lm, ids, mask, "sobol", 8, config, seed=1)
    src = make_source("sobol", 16, 8, generator=torch.Generator().manual_seed(1))
    rows = torch.arange(2).repeat_interleave(8)
    repeated = generate(lm, ids[rows], mask[rows], src, config)
    assert torch.equal(shared.tokens, repeated.tokens)
    assert shared.nfe == repeated.nfe


def test_ignore_eos_runs_every_row_to_max_new_tokens():
    lm = _tiny_causal(True)
    ids = torch.tensor([[1, 5, 6]])
    out = _run(lm, ids, torch.ones_like(ids), "iid", 16,
               SamplingConfig(max_new_tokens=9, ignore_eos=True))
    assert out.tokens.shape == (16, 9) and torch.all(out.lengths == 9) and out.nfe == 9


@pytest.mark.parametrize("sampler", ["sobol", "lattice"])
def test_power_of_two_prefixes_of_a_group_are_stratified(sampler, gen):
    """The first 2^j rows of a 64-row group stratify every dimension into 2^j intervals, so
    pass@k for every k <= 64 can be read off one group (bench passk relies on it)."""
    u = make_source(sampler, 128, 64, generator=gen).uniform(8).view(2, 64, 8)
    for j in range(7):
        k = 1 << j
        cells = (u[:, :k] * k).floor().long()  # [groups, k, dims]
        for g in range(2):
            for d in range(8):
                assert sorted(cells[g, :, d].tolist()) == list(range(k)), (sampler, k, g, d)


def test_engine_input_errors():
    lm = _tiny_causal(True)
    ids = torch.tensor([[1, 5, 6]])
    src = make_source("iid", 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="1 prompts x 3 samples = 3 rows; build the source "
                       "with n=3"):
        generate(lm, ids, torch.ones_like(ids), src, SamplingConfig(max_new_tokens=4),
                 samples_per_prompt=3)
    with pytest.raises(ValueError, match="samples_per_prompt=0 must be an integer >= 1"):
        generate(lm, ids, torch.ones_like(ids), src, SamplingConfig(max_new_tokens=4),
                 samples_per_prompt=0)
    with pytest.raises(ValueError, match="k=48: a scrambled Sobol net needs a power-of-two "
                       "number of points; use k=64"):
        make_source("sobol", 48, 48, generator=torch.Generator())
    with pytest.raises(ValueError, match="a prompt of 30 tokens plus max_new_tokens=5 does not "
                       "fit the model's context of 32 tokens"):
        _run(lm, torch.ones(1, 30, dtype=torch.long), torch.ones(1, 30, dtype=torch.long),
             "iid", 1, SamplingConfig(max_new_tokens=5, ignore_eos=True))


class _CharTok:
    """A stand-in tokenizer: letters -> ids, everything else dropped."""

    eos_token_id, pad_token_id, chat_template = 2, 0, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(c) % 40 for c in text if c.isalpha()]}


def test_empty_prompts_are_refused_with_a_clear_message():
    from parasample.targets.hf import HFCausalLM

    lm = HFCausalLM(_tiny_llama(), _CharTok())
    ids, mask = lm.encode_prompts(["abc", "de"])
    assert ids.shape == (2, 3) and mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    with pytest.raises(ValueError, match="prompt 1 is empty; give a non-empty prompt text"):
        lm.encode_prompts(["abc", "  "])
    with pytest.raises(ValueError, match="tokenises to nothing; give a non-empty prompt"):
        lm.encode_prompts(["123"])
    with pytest.raises(ValueError, match="no prompts given"):
        lm.encode_prompts([])


def test_sample_cli_refuses_bad_input_before_loading_a_model():
    from typer.testing import CliRunner

    from parasample.cli import app

    runner = CliRunner()
    for args, msg in [(["--prompt", " "], "--prompt is empty"),
                      (["--prompt", "hi", "--top-p", "0"], "'--top-p': 0.0 is not in (0.0, 1.0]"),
                      (["--prompt", "hi", "--max-new-tokens", "0"], "'--max-new-tokens'"),
                      (["--prompt", "hi", "-k", "6", "--sampler", "sobol"], "use k=8")]:
        res = runner.invoke(app, ["sample", *args])
        assert res.exit_code == 2 and msg in res.output, (args, res.output)

