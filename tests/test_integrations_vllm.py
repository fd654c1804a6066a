"""The vLLM bridge (runs where vLLM is installed: its own virtual environment on a CPU, see
scripts/test-vllm.sh; skipped elsewhere). A vLLM V1 engine with parasample's logits processor
draws every token from parasample uniforms:

* per-row marginals are exact (chi-square against the model's own distribution, tiny model);
* its tokens equal parasample's engine's for the same uniforms (float ties aside);
* requests without parasample's arguments are untouched.
"""

from __future__ import annotations

import os

import pytest
import torch

vllm = pytest.importorskip("vllm")

from parasample.ancestral import SamplingConfig  # noqa: E402
from parasample.ancestral import generate as engine_generate  # noqa: E402
from parasample.integrations import vllm as bridge  # noqa: E402
from parasample.noise import SOURCES, make_source  # noqa: E402
from tests.helpers import chi2_pvalue  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
V, EOS = 32, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Llama saved as a transformers directory, served by vLLM, and the same
    weights through parasample's HF adapter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from parasample.targets.hf import HFCausalLM

    torch.manual_seed(0)  # weight init of a throwaway model
    cfg = LlamaConfig(vocab_size=V, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    llm = vllm.LLM(str(path), skip_tokenizer_init=True, enforce_eager=True, dtype="float32",
                   logits_processors=[bridge.ParasampleLogitsProcessor], max_model_len=128,
                   seed=0)
    from types import SimpleNamespace

    ours = HFCausalLM(model, SimpleNamespace(eos_token_id=None, pad_token_id=0))
    yield llm, ours
    del llm


def _exact_two_tokens(ours, prompt, cfg):
    """q(y1, y2) for all V^2 pairs after ``prompt`` (temperature and top-p applied)."""
    from parasample.ancestral import sampling_probs

    ids = torch.tensor([prompt])
    logits, state = ours.start(ids, torch.ones_like(ids))
    p1 = sampling_probs(logits, cfg)[0]  # [V]
    rows = torch.arange(V)
    logits2, _ = ours.advance(ours.reorder(state, torch.zeros(V, dtype=torch.long)), rows)
    p2 = sampling_probs(logits2, cfg)  # [V, V]
    return (p1[:, None] * p2).reshape(-1)


@pytest.mark.parametrize("sampler,temperature,top_p", [("iid", 1.0, 1.0), ("iid", 0.7, 0.9),
                                                       ("lattice", 1.0, 1.0),
                                                       ("arithmetic", 1.0, 1.0)])
def test_per_row_marginals_through_vllm_are_exact(tiny, sampler, temperature, top_p):
    llm, ours = tiny
    prompt, N, k = [1, 5, 6], 4096, 4
    cfg = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=2, ignore_eos=True)
    src = make_source(sampler, N, k, generator=torch.Generator().manual_seed(0))
    toks = torch.tensor(bridge.generate(llm, [prompt], src, cfg, samples_per_prompt=N))
    idx = toks[:, 0] * V + toks[:, 1]
    exact = _exact_two_tokens(ours, prompt, cfg)
    # one row per group of k: i.i.d. draws of the row's law
    assert chi2_pvalue(torch.bincount(idx[::k], minlength=V * V), exact) > 1e-3
    if sampler == "iid":
        assert chi2_pvalue(torch.bincount(idx, minlength=V * V), exact) > 1e-3


@pytest.mark.parametrize("sampler", list(SOURCES))
def test_vllm_draws_the_engines_tokens_from_the_same_uniforms(tiny, sampler):
    llm, ours = tiny
    prompts, k = [[1, 5, 6, 7], [1, 9]], 8
    cfg = SamplingConfig(temperature=0.9, max_new_tokens=16, ignore_eos=True)
    src = make_source(sampler, 2 * k, k, generator=torch.Generator().manual_seed(1))
    theirs = torch.tensor(bridge.generate(llm, prompts, src, cfg, samples_per_prompt=k))
    src = make_source(sampler, 2 * k, k, generator=torch.Generator().manual_seed(1))
    mine = []  # per-row prefill, as vLLM computes each request
    ids = [torch.tensor([p]) for p in prompts]
    u_all = src.uniform(cfg.max_new_tokens)  # the same numbers generate() sent to vLLM
    for p, x in enumerate(ids):
        for j in range(k):
            row = _FixedSource(u_all[p * k + j][None], src.carries_residual, src.carry_bits)
            mine.append(engine_generate(ours, x, torch.ones_like(x), row, cfg).tokens[0])
    mine = torch.stack(mine)
    if src.carries_residual:
        # arithmetic sampling divides its carried code point by p(token) at every step, so the
        # ~1e-7 differences between vLLM's and transformers' float32 logits grow by ~32x per
        # token of this near-uniform model until they pick another token (about the 5th): the
        # draws agree while the code point still holds the difference below a token's interval
        assert torch.equal(mine[:, :3], theirs[:, :3])
    else:
        assert (mine == theirs).double().mean() >= 0.99


class _FixedSource:
    """A one-row source replaying given uniforms (the row generate() sent to vLLM)."""

    k = 1

    def __init__(self, u, carries_residual, carry_bits):
        self.u, self.t, self.n, self.carries_residual = u, 0, 1, carries_residual
        self.carry_bits = carry_bits

    def uniform(self, *shape):
        d = 1
        for s in shape:
            d *= s
        out = self.u[:, self.t:self.t + d]
        self.t += d
        return out.reshape(1, *shape)


def test_requests_without_parasample_arguments_pass_through(tiny):
    llm, _ = tiny
    params = vllm.SamplingParams(max_tokens=4, temperature=0.0)
    out = llm.generate([{"prompt_token_ids": [1, 5, 6]}], [params], use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 4


def _agreement(lm, llm, questions: list[str], k: int, new_tokens: int) -> float:
    """The share of token positions where vLLM with parasample's processor draws the engine's
    token from the same i.i.d. uniforms: k samples of each question, T = 0.8, EOS ignored."""
    ids, mask = lm.encode_prompts(questions)
    cfg = SamplingConfig(temperature=0.8, max_new_tokens=new_tokens, ignore_eos=True)
    n = len(questions) * k
    src = make_source("iid", n, k, generator=torch.Generator().manual_seed(0))
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    theirs = torch.tensor(bridge.generate(llm, prompts, src, cfg, samples_per_prompt=k))
    src = make_source("iid", n, k, generator=torch.Generator().manual_seed(0))
    mine = engine_generate(lm, ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), src,
                           cfg).tokens
    return float((mine == theirs).double().mean())


@pytest.mark.slow
def test_smollm2_through_vllm_draws_the_engines_tokens():
    """SmolLM2 (its GGUF saved once as a transformers directory) through vLLM: >= 99% of the
    token positions equal parasample's engine's for the same uniforms (float ties aside)."""
    from parasample.integrations.vllm import load_llm
    from parasample.targets.hf import smollm2, smollm2_dir

    lm = smollm2()
    llm = load_llm(str(smollm2_dir()), max_num_seqs=32, max_model_len=512)
    assert _agreement(lm, llm, ["What is 17 + 25?", "Name three colours."], 16, 24) >= 0.99


QWEN = "qwen-coder-0.5b"


@pytest.fixture(scope="module")
def qwen():
    """The Qwen 0.5B on parasample's engine and through vLLM (its dense directory, what
    ``--engine vllm`` loads), float32; skipped where the model is not installed."""
    from parasample.integrations.vllm import load_llm
    from parasample.targets import pinned
    from parasample.targets.named import lm_dir

    if pinned.state(pinned.MODELS[QWEN]) != "verified":
        pytest.skip(f"{QWEN} is not installed: {pinned.install_command(pinned.MODELS[QWEN])}")
    return pinned.load(QWEN), load_llm(str(lm_dir(QWEN)), max_num_seqs=16, max_model_len=512)


def test_qwen_through_vllm_draws_the_engines_tokens(qwen):
    """>= 99% of the token positions equal parasample's engine's for the same uniforms (float
    ties aside), on the 151,936-token vocabulary."""
    lm, llm = qwen
    assert _agreement(lm, llm, ["What is 17 * 25?", "Name three colours."], 8, 16) >= 0.99


def test_bench_passk_engine_vllm_draws_the_qwen_rows_through_vllm(qwen, monkeypatch, tmp_path):
    """``bench passk --model qwen-coder-0.5b --engine vllm`` loads the model's dense directory in
    the run's dtype (the preset's bfloat16) and draws its rows through vLLM (rows keyed
    ``qwen-coder-0.5b-vllm``); the engine here is the fixture's, to start vLLM once."""
    import csv

    from typer.testing import CliRunner

    from parasample.cli import app
    from parasample.targets.named import lm_dir

    asked = []

    def load_llm(path, **kw):
        asked.append((path, kw["dtype"]))
        return qwen[1]

    monkeypatch.setattr(bridge, "load_llm", load_llm)
    res = CliRunner().invoke(app, [
        "bench", "passk", "--model", QWEN, "--engine", "vllm", "--add-problems", "2",
        "--gsm8k-problems", "0", "--k-max", "2", "-s", "iid", "-s", "arithmetic",
        "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert asked == [(str(lm_dir(QWEN)), "bfloat16")]
    rows = list(csv.DictReader(open(tmp_path / "passk.csv")))
    assert {r["model"] for r in rows} == {f"{QWEN}-vllm"} and len(rows) == 4
