"""Exact speculative decoding of masked diffusion LMs: token-identical to one-token-per-step
decoding S (same source, same seed) for every score, temperature, source and draft length,
with batches whose rows run at different steps and blocks crossed; a drafter that is always
wrong still returns S's tokens at one step per call; bad configurations are refused."""

from __future__ import annotations

import itertools

import pytest
import torch

from parasample.diffusion import (
    DecodeConfig,
    DualCache,
    FixedSteps,
    Threshold,
    decode,
    low_confidence,
    random_confidence,
    top_prob,
)
from parasample.diffusion.speculative import SpecDecodeConfig
from parasample.diffusion.speculative import decode as spec_decode
from parasample.errors import InputError
from parasample.noise import SOURCES, make_source

SCORES = [low_confidence, random_confidence, top_prob]
CASES = [(s, T, name) for s, T, name in itertools.product(SCORES, [0.0, 0.5, 1.0], sorted(SOURCES))
         # carried code points need a score that does not read the draw (decode refuses it)
         if not (name in ("arithmetic", "stratified") and s is low_confidence and T > 0)]


def _both(model, prompt, cfg, name, k, adaptive=False, drafter=None):
    B = prompt.shape[0]

    def src():
        return make_source(name, B, 4 if B % 4 == 0 else B,
                           generator=torch.Generator().manual_seed(3))

    seq = decode(model, prompt, cfg, src())
    kw = {} if drafter is None else {"drafter": drafter}
    spec = spec_decode(model, prompt, cfg, SpecDecodeConfig(draft_len=k, adaptive=adaptive),
                       src(), **kw)
    return seq, spec


def _tiny():
    from parasample.models import MaskedLMAdapter, TinyTransformer, TransformerConfig

    torch.manual_seed(0)  # weight init of a throwaway model of another shape
    m = TinyTransformer(TransformerConfig(vocab_size=9, d_model=24, n_layers=3, n_heads=3,
                                          max_len=40))
    return MaskedLMAdapter(m.double(), mask_id=8)


@pytest.mark.parametrize("score,temperature,name", CASES,
                         ids=[f"{s.name}-T{T}-{n}" for s, T, n in CASES])
def test_token_identical_to_one_token_per_step_on_a_random_masked_lm(score, temperature, name):
    """Another shape than the shipped model (random weights, float64), 8 rows, blocks of 4
    over 12 positions, k = 1, 2, 4, 8 and the adaptive k."""
    model = _tiny()
    prompt = torch.randint(0, 8, (8, 5), generator=torch.Generator().manual_seed(1))
    cfg = DecodeConfig(gen_length=12, block_length=4, steps=12, rule=FixedSteps(),
                       score=score, temperature=temperature)
    for k, adaptive in ((1, False), (2, False), (4, False), (8, False), (2, True)):
        seq, spec = _both(model, prompt, cfg, name, k, adaptive)
        assert torch.equal(seq.tokens, spec.tokens), (k, adaptive)
        assert spec.nfe <= seq.nfe and sum(spec.committed) == 8 * 12


#: the shipped model (slower): every source and score at T = 1, every score at T = 0 and 0.5
SHIPPED = [c for c in CASES if c[1] == 1.0 or c[2] in ("iid", "arithmetic")]


@pytest.mark.parametrize("score,temperature,name", SHIPPED,
                         ids=[f"{s.name}-T{T}-{n}" for s, T, n in SHIPPED])
def test_token_identical_on_the_shipped_dllm(score, temperature, name):
    """The shipped dLLM in float64 on held-out chains: 4 rows (groups of 4 correlated rows),
    16 answer positions in blocks of 8, k = 2 and 8."""
    from parasample.bench.dllm import arith_task

    task = arith_task("dllm-chain", 4, 0, dtype=torch.float64)
    prompt, _ = task.encode(task.problems)
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=16, rule=FixedSteps(),
                       score=score, temperature=temperature)
    for k in (2, 8):
        seq, spec = _both(task.model, prompt, cfg, name, k)
        assert torch.equal(seq.tokens, spec.tokens), k
        assert spec.nfe < seq.nfe


def test_a_drafter_that_is_always_wrong_costs_one_call_per_step_and_nothing_else():
    model = _tiny()
    prompt = torch.randint(0, 8, (4, 5), generator=torch.Generator().manual_seed(1))
    cfg = DecodeConfig(gen_length=12, block_length=4, steps=12, rule=FixedSteps(),
                       score=low_confidence, temperature=0.0)
    seq, spec = _both(model, prompt, cfg, "iid", 4, drafter=lambda stale: -stale)
    assert torch.equal(seq.tokens, spec.tokens)
    assert spec.nfe == seq.nfe and set(spec.committed) == {1}


def test_speculation_saves_calls_where_the_stale_logits_are_right():
    """On the shipped dLLM at T = 0 most drafts hold: fewer calls than tokens."""
    from parasample.bench.dllm import arith_task

    task = arith_task("dllm-chain", 2, 0)
    prompt, _ = task.encode(task.problems)
    cfg = DecodeConfig(gen_length=64, block_length=32, steps=64, rule=FixedSteps())
    seq, spec = _both(task.model, prompt, cfg, "iid", 4)
    assert torch.equal(seq.tokens, spec.tokens)
    assert spec.nfe * 2 < seq.nfe and max(spec.committed) == 5


@pytest.mark.parametrize("cfg,message", [
    (DecodeConfig(gen_length=12, block_length=4, steps=6), "steps = gen_length = 12"),
    (DecodeConfig(gen_length=12, block_length=4, steps=12, rule=Threshold(0.9)),
     "got Threshold"),
    (DecodeConfig(gen_length=12, block_length=4, steps=12, cache=DualCache()),
     "cannot verify against the dual cache"),
])
def test_what_speculation_cannot_reproduce_is_refused(cfg, message):
    with pytest.raises(InputError, match=message):
        spec_decode(_tiny(), torch.zeros(2, 5, dtype=torch.long), cfg, SpecDecodeConfig())
    with pytest.raises(InputError, match="draft_len=0 must be an integer in 1..16"):
        SpecDecodeConfig(draft_len=0)
