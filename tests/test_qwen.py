"""Model tier: Qwen2.5-Coder-0.5B-Instruct from its pinned wheels (CI installs it; skipped, with
the install command as the reason, where it is not installed). The chat template's prompt ids,
every source exact per row on the real 151,936-token vocabulary, and the identical verifier
with the 0.5B drafting for itself equal to sequential sampling token for token."""

from __future__ import annotations

import pytest
import torch

from parasample.ancestral import SamplingConfig, generate, sampling_probs
from parasample.noise import SOURCES, make_source
from parasample.speculative import ModelDrafter, NGramDrafter, SpecConfig
from parasample.speculative import generate as spec_generate
from parasample.targets import pinned
from tests.helpers import chi2_pvalue, design_power

NAME = "qwen-coder-0.5b"
pytestmark = pytest.mark.skipif(
    pinned.state(pinned.MODELS[NAME]) != "verified",
    reason=f"{NAME} is not installed: {pinned.install_command(pinned.MODELS[NAME])}")
#: a prompt whose first answer token is uncertain (many cells above 1%)
PROMPT = "Name one random animal. Answer with the single word only."


def test_prompts_go_through_the_chat_template():
    lm = pinned.load(NAME)
    ids, mask = lm.encode_prompts(["What is 2 + 3?", "Hi"])
    text = lm.tokenizer.decode(ids[0][mask[0].bool()])
    assert text.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert lm.vocab_size == 151936 and lm.eos_id == 151645
    assert mask[1, 0] == 0 and mask[1, -1] == 1  # the shorter prompt is left-padded


def test_the_dense_directory_holds_the_gguf_weights():
    """What every load reads (pinned.dense_dir, made on the first load) equals the verified GGUF
    dequantised by transformers, bit for bit in float32, with the same tokenizer ids; the other
    dtypes are casts of these values (checked on SmolLM2 by tests/test_targets.py::
    test_gguf_files_load_as_dense_weights_in_the_asked_dtype)."""
    from parasample.targets import hf

    lm = pinned.load(NAME)
    gguf = hf.load_gguf_causal_lm.__wrapped__(str(pinned.gguf_path(NAME)),
                                              str(pinned.tokenizer_dir(NAME)))  # not cached
    want = gguf.model.state_dict()
    assert lm.model.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in lm.model.state_dict().items())
    prompts = [PROMPT, "What is 2 + 3?"]
    assert all(torch.equal(a, b) for a, b in zip(lm.encode_prompts(prompts),
                                                 gguf.encode_prompts(prompts), strict=True))
    assert (lm.eos_id, lm.pad_id, lm.vocab_size) == (gguf.eos_id, gguf.pad_id, gguf.vocab_size)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_draws_each_row_from_the_model(name):
    """Row 0 and row k - 1 of 512 groups of k = 4 (independent across groups), first answer
    token at T = 0.7 with top-p 0.95, against the model's own law: tokens under 1% merged into
    one cell, chi-square at level 1e-3; each row's test detects a TVD of 0.15 with probability
    >= 0.9 (computed below)."""
    lm = pinned.load(NAME)
    ids, mask = lm.encode_prompts([PROMPT])
    config = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=1)
    k, groups, chunks = 4, 512, 4
    # the groups in 4 calls of 128 (a fresh source each, from one generator: groups stay
    # independent): 2048 rows of a 151,936-token vocabulary in one call peak at 17 GB
    g = torch.Generator().manual_seed(3)
    per = k * groups // chunks
    tokens = torch.cat([generate(lm, ids, mask, make_source(name, per, k, generator=g), config,
                                 samples_per_prompt=per).tokens for _ in range(chunks)])
    logits, _ = lm.start(ids, mask)
    p = sampling_probs(logits.double(), config)[0]  # [V]
    cells = (p >= 0.01).nonzero()[:, 0]
    assert len(cells) >= 3  # an uncertain first token: the test has something to see
    exact = torch.cat([p[cells], (1 - p[cells].sum()).clamp(min=0)[None]])
    index = torch.full_like(p, len(cells), dtype=torch.long)
    index[cells] = torch.arange(len(cells))
    first = index[tokens[:, 0]].view(groups, k)
    df = int((exact > 0).sum()) - 1
    assert design_power(groups, df, 0.15) >= 0.9
    for row in (0, k - 1):
        counts = torch.bincount(first[:, row], minlength=len(exact))
        assert chi2_pvalue(counts, exact) > 1e-3, (name, row)


def test_the_identical_verifier_with_the_model_drafting_for_itself_is_sequential_sampling():
    """Every drafter's rows equal sequential sampling's for i.i.d. and arithmetic sampling (the
    carried residual is the most sensitive), 12 tokens. In float32: this transformers version
    computes GGUF models' matmuls in float32 whatever dtype is asked (it warns so for float64),
    so float64 buys nothing here; a near-tie could flip a float32 row, which these seeded rows
    do not meet, and bench spec measures the float32 identical fraction over 128-token rows."""
    lm = pinned.load(NAME)
    ids, mask = lm.encode_prompts(["What is 17 + 25? Think step by step.", PROMPT])
    config = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=12)
    for name in ("iid", "arithmetic"):
        def src(name=name):
            return make_source(name, 4, 2, generator=torch.Generator().manual_seed(5))

        seq = generate(lm, ids, mask, src(), config, samples_per_prompt=2)
        for drafter in (ModelDrafter(lm, lm.vocab_size), NGramDrafter()):
            out = spec_generate(lm, ids, mask, src(), config, SpecConfig(draft_len=4), drafter,
                                samples_per_prompt=2)
            assert torch.equal(seq.tokens, out.tokens), (name, drafter.name)
            assert out.nfe < seq.nfe  # fewer target calls


def test_bench_align_runs_the_qwen_model_and_keys_its_rows_by_model(tmp_path):
    """``bench align --model qwen-coder-0.5b`` (parts (b) and (c), quick sizes): the model's
    rows on two-digit products, QUEST's cached and kept moves token-identical to the uncached
    ones on this model too, every row keyed by the model."""
    import csv

    from typer.testing import CliRunner

    from parasample.cli import app

    res = CliRunner().invoke(app, ["bench", "align", "--quick", "--skip-toy", "--model", NAME,
                                   "--out", str(tmp_path), "--threads", "2"])
    assert res.exit_code == 0, res.output
    lm = list(csv.DictReader(open(tmp_path / "lm.csv")))
    cache = list(csv.DictReader(open(tmp_path / "quest_cache.csv")))
    assert {r["model"] for r in lm + cache} == {NAME}
    assert {r["sampler"] for r in lm} == {"importance-resampling", "quest", "smc",
                                          "resample-move-smc"}
    assert all(0 <= float(r["expected_reward"]) <= 1.5 for r in lm)
    assert [r["identical_to_uncached"] for r in cache] == ["", "1.0", "1.0"]


def test_vllm_loads_the_dense_directory_of_a_named_model():
    """``--engine vllm`` hands vLLM the model's dense directory (a named model, never a hub id)."""
    from parasample.targets.named import lm_dir

    assert lm_dir(NAME) == pinned.dense_dir(NAME)
    assert (lm_dir(NAME) / "config.json").is_file()
