import pytest
import torch

from parasample.diffusion import (
    DecodeConfig,
    FixedSteps,
    Threshold,
    decode,
    num_transfer_tokens,
    random_confidence,
)
from parasample.models import MaskedLMAdapter, TinyTransformer, TransformerConfig
from parasample.noise import make_source
from tests.helpers import chi2_pvalue

MASK = 9


class TableModel:
    """A masked LM whose logits at answer position j are a fixed row ``table[j]`` (any input)."""

    mask_id, vocab_size = MASK, 10

    def __init__(self, top_probs, prompt_len=2):
        self.prompt_len = prompt_len
        L = prompt_len + len(top_probs)
        probs = torch.full((L, 10), 0.0)
        for j, p in enumerate(top_probs):  # token (j % 8) gets p, the rest spread evenly
            probs[prompt_len + j] = (1 - p) / 8
            probs[prompt_len + j, j % 8] = p
            probs[prompt_len + j, MASK] = 0.0
        probs[:prompt_len] = 0.1
        self.table = torch.log(probs.clamp_min(1e-30))
        self.calls = 0

    def logits(self, x):
        self.calls += 1
        return self.table.expand(x.shape[0], -1, -1)


def _prompt(B=1, P=2):
    return torch.zeros(B, P, dtype=torch.long)


def test_llada_schedule_counts():
    out = num_transfer_tokens(torch.tensor([10, 3, 0, 8]), 4)
    assert out.tolist() == [[3, 3, 2, 2], [1, 1, 1, 0], [0, 0, 0, 0], [2, 2, 2, 2]]


def test_threshold_commits_all_confident_positions():
    conf = torch.tensor([[0.95, 0.5, float("-inf"), 0.92]])
    assert Threshold(0.9).select(conf, 0, None).tolist() == [[True, False, False, True]]


def test_threshold_always_commits_one_when_none_clears_it():
    conf = torch.tensor([[0.3, 0.5, float("-inf")], [float("-inf")] * 3])
    sel = Threshold(0.9).select(conf, 0, None)
    assert sel.tolist() == [[False, True, False], [False, False, False]]


def test_fixed_steps_commits_top_k_by_confidence():
    conf = torch.tensor([[0.1, 0.7, float("-inf"), 0.4]])
    plan = torch.tensor([[2, 1]])
    assert FixedSteps().select(conf, 0, plan).tolist() == [[False, True, False, True]]


def test_threshold_decoding_order_and_nfe():
    # block 1: 0.95 and 0.97 clear 0.9 together, then 0.5, then 0.2; block 2 all at once
    model = TableModel([0.95, 0.5, 0.97, 0.2, 0.99, 0.99, 0.99, 0.99])
    cfg = DecodeConfig(gen_length=8, block_length=4, steps=2, rule=Threshold(0.9))
    out = decode(model, _prompt(), cfg)
    assert out.nfe == 4 and model.calls == 4
    assert out.tokens[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert out.tokens_per_step == pytest.approx(2.0)


def test_fixed_steps_one_token_per_step_in_confidence_order():
    cfg = DecodeConfig(gen_length=4, block_length=4, steps=4)
    seen = []

    class Spy(TableModel):
        def logits(self, x):
            seen.append((x[0, 2:] != MASK).tolist())
            return super().logits(x)

    out = decode(Spy([0.3, 0.8, 0.5, 0.9]), _prompt(), cfg)
    assert out.nfe == 4 and out.tokens[0].tolist() == [0, 1, 2, 3]
    # committed order by confidence: position 3 (0.9), 1 (0.8), 2 (0.5), 0 (0.3)
    assert seen == [[False] * 4, [False, False, False, True], [False, True, False, True],
                    [False, True, True, True]]


def test_fixed_steps_two_tokens_per_step():
    cfg = DecodeConfig(gen_length=8, block_length=4, steps=4)  # 2 steps per block
    out = decode(TableModel([0.5] * 8), _prompt(), cfg)
    assert out.nfe == 4 and out.tokens_per_step == pytest.approx(2.0)


def test_sampled_proposals_follow_the_tempered_softmax():
    model = TableModel([0.6])
    cfg = DecodeConfig(gen_length=1, block_length=1, steps=1, temperature=1.0)
    B = 4000
    src = make_source("iid", B, generator=torch.Generator().manual_seed(0))
    out = decode(model, _prompt(B), cfg, src)
    counts = torch.bincount(out.tokens[:, 0], minlength=10)
    assert chi2_pvalue(counts, torch.softmax(model.table[2].double(), 0)) > 1e-3


def test_random_remasking_needs_a_source_and_commits_everything():
    cfg = DecodeConfig(gen_length=8, block_length=4, steps=4, score=random_confidence)
    with pytest.raises(ValueError, match="needs a uniform source"):
        decode(TableModel([0.5] * 8), _prompt(), cfg)
    src = make_source("iid", 1, generator=torch.Generator().manual_seed(0))
    out = decode(TableModel([0.5] * 8), _prompt(), cfg, src)
    assert out.nfe == 4 and (out.tokens != MASK).all()


def _tiny_model():
    torch.manual_seed(0)  # weight init of a throwaway test model
    m = TinyTransformer(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=2,
                                          max_len=64))
    return MaskedLMAdapter(m, mask_id=11)


@pytest.mark.parametrize("rule,steps", [(Threshold(0.3), 4), (FixedSteps(), 16)])
def test_batched_decoding_equals_per_example(rule, steps):
    model = _tiny_model()
    prompts = torch.randint(0, 11, (5, 6), generator=torch.Generator().manual_seed(1))
    cfg = DecodeConfig(gen_length=16, block_length=4, steps=steps, rule=rule)
    batched = decode(model, prompts, cfg).tokens
    single = torch.cat([decode(model, prompts[i:i + 1], cfg).tokens for i in range(5)])
    assert torch.equal(batched, single)


@pytest.mark.parametrize("kwargs,message", [
    ({"block_length": 48}, "block_length=48 does not divide gen_length=256"),
    ({"block_length": 32, "steps": 12}, "steps=12 is not a multiple of the number of blocks"),
    ({"temperature": -1}, "temperature=-1"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**kwargs)


@pytest.mark.parametrize("thr", [0.0, 1.5, -0.1])
def test_threshold_range(thr):
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        Threshold(thr)


def test_prompt_longer_than_context():
    cfg = DecodeConfig(gen_length=32, block_length=32, steps=1)
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        decode(_tiny_model(), torch.zeros(1, 40, dtype=torch.long), cfg)


def test_causal_model_is_not_a_masked_lm():
    m = TinyTransformer(TransformerConfig(vocab_size=12, d_model=32, n_layers=1, n_heads=2,
                                          causal=True))
    with pytest.raises(ValueError, match="not a masked LM"):
        MaskedLMAdapter(m, mask_id=11)


def test_mask_token_is_never_proposed():
    """Bug caught: a model whose argmax is the mask token would never finish decoding."""

    class MaskLover(TableModel):
        def logits(self, x):
            out = super().logits(x).clone()
            out[..., MASK] = 50.0
            return out

    out = decode(MaskLover([0.5] * 4), _prompt(), DecodeConfig(4, 4, 4, rule=Threshold(0.9)))
    assert (out.tokens != MASK).all() and out.nfe == 4


def test_decoding_through_a_random_hf_masked_lm():
    """The real-model path: an HF masked LM (BERT, randomly initialised from a config) through
    HFMaskedLM, with both rules, batched == per example."""
    from transformers import BertConfig, BertForMaskedLM

    from parasample.targets.hf_masked import HFMaskedLM

    torch.manual_seed(0)  # weight init of a throwaway model
    cfg = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=40)
    lm = HFMaskedLM(BertForMaskedLM(cfg), mask_id=3)
    prompts = torch.randint(4, 30, (3, 8), generator=torch.Generator().manual_seed(0))
    for rule, steps in ((Threshold(0.5), 2), (FixedSteps(), 16)):
        dc = DecodeConfig(gen_length=16, block_length=8, steps=steps, rule=rule)
        out = decode(lm, prompts, dc)
        assert out.tokens.shape == (3, 16) and (out.tokens != 3).all()
        single = torch.cat([decode(lm, prompts[i:i + 1], dc).tokens for i in range(3)])
        assert torch.equal(out.tokens, single)
    with pytest.raises(ValueError, match="exceeds the model's context of 40"):
        decode(lm, torch.zeros(1, 30, dtype=torch.long), DecodeConfig(16, 8, 2))
