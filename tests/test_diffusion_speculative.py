"""Exact speculative decoding of masked diffusion LMs: token-identical to one-token-per-step
decoding S (same source, same seed) for every score, temperature, source and draft length,
with batches whose rows run at different steps and blocks crossed; a drafter that is always
wrong still returns S's tokens at one step per call; the law-exact (rejection) variant draws
S's exact law on an enumerable masked LM; bad configurations are refused."""

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
from parasample.targets import ToyMaskedLM, any_order_distribution, state_index
from tests.helpers import chi2_pvalue, design_power

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


def _law_of_s(model, gen_length: int, block: int, temperature: float, score) -> torch.Tensor:
    """S's exact law ``[V^G]`` on a toy masked LM (prompt one token 0), by recursion over its
    steps: the current block's masked positions, the one S commits (uniformly random under
    ``random``; the largest top probability of the model's own softmax under ``top_prob``, the
    decoder's default confidence), its token from the tempered softmax."""
    V = model.vocab_size - 1
    law = torch.zeros(V ** gen_length, dtype=torch.float64)

    def rec(x, prob):
        masked = (x[0, 1:] == model.mask_id).nonzero().flatten()
        if not len(masked):
            law[state_index(x[:, 1:], V)] += prob
            return
        b = int(masked[0]) // block
        cand = [int(j) for j in masked if int(j) // block == b]
        logits = model.logits(x)[0, 1:, :V].double()  # [G, V]
        if score is random_confidence:
            picks = [(j, 1 / len(cand)) for j in cand]
        else:
            top = torch.softmax(logits[cand], -1).max(-1).values
            picks = [(cand[int(top.argmax())], 1.0)]
        for j, pj in picks:
            p = torch.softmax(logits[j] / temperature, -1)
            for v in range(V):
                y = x.clone()
                y[0, 1 + j] = v
                rec(y, prob * pj * float(p[v]))

    rec(torch.tensor([[0] + [model.mask_id] * gen_length]), 1.0)
    return law


def test_the_reference_law_of_s_is_the_any_order_law_under_random_order():
    model = ToyMaskedLM(2, 4, generator=torch.Generator().manual_seed(0))
    ref = any_order_distribution(model, torch.zeros(1, 1, dtype=torch.long), 4, 2, 0.7)
    assert torch.allclose(_law_of_s(model, 4, 2, 0.7, random_confidence), ref, atol=1e-12)


REJECTION_CASES = [(score, name, drafter) for score in (random_confidence, top_prob)
                   for name in sorted(SOURCES) for drafter in ("stale", "inverted")]


@pytest.mark.parametrize("score,name,drafter", REJECTION_CASES,
                         ids=[f"{s.name}-{n}-{d}" for s, n, d in REJECTION_CASES])
def test_rejection_variant_draws_the_exact_law_of_s(score, name, drafter):
    """The law-exact verifier (accept S's action with min(1, K / q), else draw from the
    residual) on a toy masked LM whose logits depend on every revealed position: 4 answer
    positions of 2 tokens in blocks of 2 (drafts cross them), k = 3, T = 1 with the stale
    drafter and T = 0.7 with an inverted one (-stale: most drafts rejected). 2^16 groups of two
    rows; group g contributes its row g mod 2 (independent draws, both rows tested); chi-square
    at level 1e-3 over 16 cells against S's closed-form law: any deviation of TVD 0.02 is
    detected with probability >= 0.98 (computed below)."""
    model = ToyMaskedLM(2, 4, generator=torch.Generator().manual_seed(0), sharpness=2.0)
    T = 1.0 if drafter == "stale" else 0.7
    cfg = DecodeConfig(gen_length=4, block_length=2, steps=4, rule=FixedSteps(), score=score,
                       temperature=T)
    k, groups = 2, 2 ** 16
    prompt = torch.zeros(groups * k, 1, dtype=torch.long)
    src = make_source(name, groups * k, k, generator=torch.Generator().manual_seed(4))
    kw = {} if drafter == "stale" else {"drafter": lambda stale: -stale}
    out = spec_decode(model, prompt, cfg, SpecDecodeConfig(3, verify="rejection"), src, **kw)
    rows = torch.arange(groups) * k + torch.arange(groups) % k
    counts = torch.bincount(state_index(out.tokens[rows], 2), minlength=16)
    assert design_power(groups, 15, 0.02) >= 0.98
    assert chi2_pvalue(counts, _law_of_s(model, 4, 2, T, score)) > 1e-3
    # both paths ran: drafts kept, and drafts rejected (residual draws)
    assert 1 < sum(out.committed) / len(out.committed) < 4


def test_the_rejection_variant_accepts_more_often_than_the_identical_verifier():
    """Its maximal coupling keeps a draft with probability sum min(p, q); the inverse-CDF
    coupling of the identical verifier keeps it at most that often, strictly less over more than
    two tokens (with two the couplings agree): fewer calls on the same 4096 rows (V = 6: 12242
    row-calls against 12654 at this seed; the test asks for any saving)."""
    model = ToyMaskedLM(6, 4, generator=torch.Generator().manual_seed(0), sharpness=2.0)
    cfg = DecodeConfig(gen_length=4, block_length=4, steps=4, rule=FixedSteps(),
                       score=random_confidence, temperature=1.0)
    prompt = torch.zeros(4096, 1, dtype=torch.long)
    calls = {}
    for verify in ("identical", "rejection"):
        src = make_source("iid", 4096, generator=torch.Generator().manual_seed(4))
        out = spec_decode(model, prompt, cfg, SpecDecodeConfig(3, verify=verify), src)
        calls[verify] = len(out.committed)  # one entry per row and call
    assert calls["rejection"] < calls["identical"]


@pytest.mark.parametrize("cfg,message", [
    (DecodeConfig(gen_length=12, block_length=4, steps=12, temperature=0.0,
                  score=random_confidence), "at temperature 0 S is deterministic"),
    (DecodeConfig(gen_length=12, block_length=4, steps=12, temperature=1.0,
                  score=low_confidence), "not low_confidence"),
])
def test_what_the_rejection_variant_cannot_verify_is_refused(cfg, message):
    with pytest.raises(InputError, match=message):
        spec_decode(_tiny(), torch.zeros(2, 5, dtype=torch.long), cfg,
                    SpecDecodeConfig(verify="rejection"),
                    make_source("iid", 2, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(InputError, match="verify='exact': choose one of identical, rejection"):
        SpecDecodeConfig(verify="exact")
