"""Masked-diffusion decoding at temperature > 0, its caches, and batched real-model decoding.

* Sampling is exact: one-token-per-step decoding with random remasking draws from the model's
  any-order law (enumerated on a toy masked LM), at T = 1 and T = 0.5, for every source,
  including arithmetic sampling's carried code point; k samples of one prompt differ.
* A prefix / dual cache refreshed at every step decodes exactly the no-cache tokens; a window
  pass against a fresh cache gives the full pass's logits.
* Left-padded prompts of different lengths decode batched exactly as one by one (HF BERT).
"""

from __future__ import annotations

import pytest
import torch

from parasample.diffusion import (
    DecodeConfig,
    DualCache,
    FixedSteps,
    NoCache,
    PrefixCache,
    Threshold,
    decode,
    low_confidence,
    random_confidence,
    top_prob,
)
from parasample.metrics import iid_tvd_floor, tvd
from parasample.models import MaskedLMAdapter, TinyTransformer, TransformerConfig
from parasample.noise import make_source
from parasample.targets import ToyMaskedLM, any_order_distribution, state_index
from tests.helpers import chi2_pvalue

G = 4  # answer positions of the toy


def _toy():
    return ToyMaskedLM(3, G, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("block,temperature", [(4, 1.0), (2, 1.0), (4, 0.5)])
@pytest.mark.parametrize("sampler", ["iid", "lattice", "arithmetic"])
def test_one_token_per_step_random_remasking_draws_the_exact_any_order_law(
        block, temperature, sampler):
    """Every row of every source decodes from the same exact law (the joint law of a group is
    what the correlated sources change)."""
    model, B, k = _toy(), 16384, 4
    prompt = torch.zeros(B, 1, dtype=torch.long)
    cfg = DecodeConfig(gen_length=G, block_length=block, steps=G, rule=FixedSteps(),
                       score=random_confidence, temperature=temperature)
    src = make_source(sampler, B, k, generator=torch.Generator().manual_seed(1))
    out = decode(model, prompt, cfg, src)
    exact = any_order_distribution(model, prompt[:1], G, block, temperature)
    idx = state_index(out.tokens, 3)
    # one row per group: i.i.d. draws of the row's law, so a chi-square test is valid
    assert chi2_pvalue(torch.bincount(idx[::k], minlength=3**G), exact) > 1e-3
    # all rows: identically distributed, correlated within groups of k, so the histogram's
    # error is at most that of B / k i.i.d. draws
    emp = torch.bincount(idx, minlength=3**G).double() / B
    assert float(tvd(emp, exact)) < 2 * iid_tvd_floor(exact, B // k)


def _one_step_draws(score, rule, steps, temperature, sampler, start):
    """One decoding step of B rows from the same state: the step's probabilities ``[G, V]``
    (every row's logits are the same), which positions each row committed ``[B, G]`` and the
    tokens there ``[B, G]``. ``start`` pre-commits answer positions (a later step's state)."""
    model, B, k = _toy(), 16384, 4
    cfg = DecodeConfig(gen_length=G, block_length=G, steps=steps, rule=rule, score=score,
                       temperature=temperature)
    from parasample.diffusion.decode import init, step

    prompt = torch.zeros(B, 1, dtype=torch.long)
    state = init(model, prompt, cfg)
    x = state.x.clone()
    for j, tok in start.items():
        x[:, 1 + j] = tok
    masked = (x[:, 1:] == model.mask_id).sum(1)
    state = state._replace(x=x, plan=cfg.rule.plan_block(masked, cfg.steps_per_block))
    src = make_source(sampler, B, k, generator=torch.Generator().manual_seed(5))
    new, _ = step(src.uniform(2, G), state, model, cfg)
    probs = torch.softmax(model.logits(x[:1])[0, 1:, :3].double() / temperature, -1)  # [G, 3]
    committed = (new.x[:, 1:] != model.mask_id) & (x[:, 1:] == model.mask_id)
    rows = torch.arange(B // k) * k + torch.arange(B // k) % k  # one row per group
    return probs, committed[rows], new.x[rows, 1:]


@pytest.mark.parametrize("temperature", [0.5, 1.0])
@pytest.mark.parametrize("sampler", ["iid", "lattice", "arithmetic"])
@pytest.mark.parametrize("rule,steps", [(FixedSteps(), 2), (FixedSteps(), 4), (Threshold(0.5), 1)])
@pytest.mark.parametrize("score", [random_confidence, top_prob], ids=lambda s: s.name)
def test_each_committed_token_is_an_exact_draw_from_the_tempered_conditional(
        score, rule, steps, sampler, temperature):
    """The exactness every sampled row of bench dllm rests on, whatever the rule commits per
    step (one token, several, a threshold): a token committed at position j is distributed as
    softmax(logits_j / T) of the step's logits, for scores that do not read the draw. Checked
    at a block's first step and at a step with two positions already committed."""
    for start in ({}, {0: 1, 2: 0}):
        probs, committed, tokens = _one_step_draws(score, rule, steps, temperature, sampler,
                                                   start)
        assert committed.any(0).sum() >= 1
        for j in committed.any(0).nonzero().flatten().tolist():
            counts = torch.bincount(tokens[committed[:, j], j], minlength=3)
            assert chi2_pvalue(counts, probs[j]) > 1e-3, (start, j)


def test_low_confidence_at_positive_temperature_commits_biased_tokens():
    """LLaDA's low-confidence remasking scores a position by the probability of the token it
    drew, so which position is committed depends on the draw: the committed token is biased
    towards likely tokens (not a draw from the tempered conditional), which is why bench dllm's
    sampled rows use top_prob or random scores. At T = 0 the draw is the argmax either way."""
    probs, committed, tokens = _one_step_draws(low_confidence, FixedSteps(), 4, 1.0, "iid", {})
    j = int(committed.sum(0).argmax())
    counts = torch.bincount(tokens[committed[:, j], j], minlength=3)
    assert chi2_pvalue(counts, probs[j]) < 1e-6


def test_k_samples_of_one_prompt_differ_at_every_temperature():
    """LLaDA / Dream users report identical samples of one prompt at T > 0; here every row has
    its own uniforms."""
    model = _toy()
    for t, at_least in ((0.3, 2), (1.0, 9)):
        cfg = DecodeConfig(gen_length=G, block_length=G, steps=1, rule=Threshold(0.9),
                           score=top_prob, temperature=t)
        src = make_source("iid", 64, generator=torch.Generator().manual_seed(0))
        out = decode(model, torch.zeros(64, 1, dtype=torch.long), cfg, src)
        assert len({tuple(r) for r in out.tokens.tolist()}) >= at_least


def test_arithmetic_sampling_stratifies_the_first_committed_token():
    """k rows of one prompt share a shifted grid of code points: the first committed token's
    counts are floor(k p) or ceil(k p) (the AR engine's guarantee, carried into diffusion)."""
    model, k = _toy(), 64
    cfg = DecodeConfig(gen_length=G, block_length=1, steps=G, rule=FixedSteps(),
                       score=top_prob, temperature=1.0)
    src = make_source("arithmetic", k, k, generator=torch.Generator().manual_seed(3))
    out = decode(model, torch.zeros(k, 1, dtype=torch.long), cfg, src)
    p0 = torch.softmax(model.logits(torch.tensor([[0, 3, 3, 3, 3]]))[0, 1, :3].double(), 0)
    counts = torch.bincount(out.tokens[:, 0], minlength=3).double()
    assert torch.all((counts >= torch.floor(k * p0)) & (counts <= torch.ceil(k * p0)))


def test_arithmetic_sampling_refuses_a_score_that_reads_the_draw():
    cfg = DecodeConfig(gen_length=G, block_length=G, steps=G, score=low_confidence,
                       temperature=1.0)
    src = make_source("arithmetic", 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="score=top_prob or random_confidence"):
        decode(_toy(), torch.zeros(4, 1, dtype=torch.long), cfg, src)


# -- caches ------------------------------------------------------------------------------------
def _tiny(seed=0):
    torch.manual_seed(seed)  # weight init of a throwaway test model
    m = TinyTransformer(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=2,
                                          max_len=64))
    return MaskedLMAdapter(m, mask_id=11)


@pytest.mark.parametrize("cache", [PrefixCache(refresh_every=1), DualCache(refresh_every=1)])
@pytest.mark.parametrize("rule,steps,temperature", [(Threshold(0.3), 4, 0.0),
                                                    (FixedSteps(), 16, 0.0),
                                                    (FixedSteps(), 16, 1.0)])
def test_a_cache_refreshed_at_every_step_decodes_exactly_the_no_cache_tokens(
        cache, rule, steps, temperature):
    model = _tiny()
    prompts = torch.randint(0, 11, (5, 6), generator=torch.Generator().manual_seed(1))
    outs = []
    for c in (NoCache(), cache):
        cfg = DecodeConfig(gen_length=16, block_length=4, steps=steps, rule=rule,
                           temperature=temperature, cache=c)
        src = make_source("iid", 5, generator=torch.Generator().manual_seed(2))
        outs.append(decode(model, prompts, cfg, src))
    assert torch.equal(outs[0].tokens, outs[1].tokens) and outs[0].nfe == outs[1].nfe


def test_a_window_pass_against_a_fresh_cache_gives_the_full_pass_logits():
    model = _tiny()
    x = torch.randint(0, 12, (3, 20), generator=torch.Generator().manual_seed(0))
    full, kv = model.logits_and_kv(x)
    assert torch.equal(full, model.logits(x))  # the refreshing pass is the plain pass
    for lo, hi in ((8, 12), (8, 20), (0, 20)):
        win = model.logits_window(x[:, lo:hi], lo, kv)
        assert torch.allclose(win, full[:, lo:hi], atol=1e-5)


def test_block_boundary_caches_call_the_model_as_often_and_decode_everything():
    """Refreshed at block boundaries only (Fast-dLLM): one full pass per block, then windows."""
    from parasample.targets import NFECounter

    model = NFECounter(_tiny())
    prompts = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(1))
    calls = {}
    for cache in (PrefixCache(), DualCache()):
        model.reset()
        out = decode(model, prompts, DecodeConfig(16, 4, 16, cache=cache))
        assert out.nfe == 16 and (out.tokens != 11).all()
        calls[cache.name] = model.nfe
    assert calls == {"prefix": 16, "dual": 16}


def test_a_model_without_cache_hooks_is_refused_by_name():
    from transformers import BertConfig, BertForMaskedLM

    from parasample.targets.hf_masked import HFMaskedLM

    torch.manual_seed(0)
    lm = HFMaskedLM(BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=32,
                                               num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=64)), mask_id=3)
    with pytest.raises(ValueError, match="BertForMaskedLM does not support the dual cache.*"
                                         "--cache none"):
        decode(lm, torch.zeros(1, 4, dtype=torch.long), DecodeConfig(8, 4, 2, cache=DualCache()))


# -- batched real-model decoding -----------------------------------------------------------------
def _bert():
    from transformers import BertConfig, BertForMaskedLM

    from parasample.targets.hf_masked import HFMaskedLM

    torch.manual_seed(0)  # weight init of a throwaway model
    cfg = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    return HFMaskedLM(BertForMaskedLM(cfg), mask_id=3)


@pytest.mark.parametrize("rule,steps", [(Threshold(0.5), 2), (FixedSteps(), 16)])
def test_left_padded_prompts_decode_batched_as_one_by_one(rule, steps):
    lm = _bert()
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, 30, (n,), generator=g) for n in (3, 7, 5)]
    P = max(len(r) for r in rows)
    ids = torch.zeros(3, P, dtype=torch.long)
    mask = torch.zeros(3, P, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r):], mask[i, P - len(r):] = r, 1
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=steps, rule=rule)
    batched = decode(lm, ids, cfg, attention_mask=mask).tokens
    single = torch.cat([decode(lm, r[None], cfg).tokens for r in rows])
    assert torch.equal(batched, single)
