"""Speculative decoding: token-identical to sequential sampling (identical verifier), exact in
law (rejection verifier), per-row rollback, bad input."""

from types import SimpleNamespace

import pytest
import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.noise import SOURCES, make_source
from parasample.speculative import ModelDrafter, NGramDrafter, SiblingDrafter, SpecConfig
from parasample.speculative import generate as spec_generate
from parasample.targets import NFECounter, ToyARLM, state_index
from tests.helpers import brute_force_ar, chi2_pvalue, design_power
from tests.test_targets import _tiny_llama

FIVE = ["iid", "sobol", "lattice", "antithetic", "arithmetic"]


def _both(model, ids, mask, name, k, config, spec, drafter, seed=1, **source_kw):
    """Sequential and speculative generations from the same source and seed."""
    n = ids.shape[0] * k

    def src():
        return make_source(name, n, k, generator=torch.Generator().manual_seed(seed),
                           **source_kw)

    seq = generate(model, ids, mask, src(), config, samples_per_prompt=k)
    spec_out = spec_generate(model, ids, mask, src(), config, spec, drafter,
                             samples_per_prompt=k)
    return seq, spec_out


def _toy(seed=0, eos=3):
    return ToyARLM(4, 6, generator=torch.Generator().manual_seed(seed), eos_id=eos)


@pytest.mark.parametrize("name", sorted(SOURCES))
@pytest.mark.parametrize("drafter", ["ngram", "sibling", "model"])
def test_identical_verifier_reproduces_sequential_sampling_on_the_toy_lm(name, drafter):
    """Every source (the five of the issue and stratified), batch > 1 with EOS and top-p."""
    model = _toy()
    make = {"ngram": NGramDrafter, "sibling": SiblingDrafter,
            "model": lambda: ModelDrafter(_toy(seed=7), model.vocab_size)}[drafter]
    ids = torch.zeros(2, 1, dtype=torch.long)
    config = SamplingConfig(max_new_tokens=6, top_p=0.9, temperature=0.8)
    specs = [SpecConfig(draft_len=d) for d in (1, 3, 8)] + [
        SpecConfig(draft_len=2, adaptive=True, max_draft_len=8)]
    for spec in specs:
        seq, out = _both(model, ids, torch.ones_like(ids), name, 4, config, spec, make())
        assert torch.equal(seq.tokens, out.tokens), (name, drafter, spec)
        assert torch.allclose(seq.logprobs, out.logprobs)
        assert torch.equal(seq.lengths, out.lengths)


@pytest.mark.parametrize("name", ["arithmetic", "stratified"])
@pytest.mark.parametrize("drafter", ["sibling", "model"])
def test_identical_verifier_with_a_residual_carried_to_a_few_bits(name, drafter):
    model = _toy()
    make = {"sibling": SiblingDrafter,
            "model": lambda: ModelDrafter(_toy(seed=7), model.vocab_size)}[drafter]
    ids = torch.zeros(2, 1, dtype=torch.long)
    config = SamplingConfig(max_new_tokens=6, top_p=0.9, temperature=0.8)
    seq, out = _both(model, ids, torch.ones_like(ids), name, 4, config, SpecConfig(draft_len=3),
                     make(), carry_bits=6)
    assert torch.equal(seq.tokens, out.tokens)


@pytest.mark.parametrize("name", FIVE)
def test_identical_verifier_on_the_shipped_ar_model_with_its_draft_model(name):
    """The toy target / draft pair of bench spec: same tokens, fewer target calls."""
    from parasample.models.data import encode_prompts
    from parasample.models.registry import load_ar
    from parasample.tasks.arith import ArithChainTask, CharTokenizer

    target = NFECounter(load_ar())
    problems = ArithChainTask().problems(2, split="test", seed=0)
    ids = encode_prompts([p.prompt for p in problems], CharTokenizer())
    draft = ModelDrafter(load_ar("ar-arith-draft"), target.vocab_size)
    seq, out = _both(target, ids, torch.ones_like(ids), name, 4,
                     SamplingConfig(max_new_tokens=48), SpecConfig(draft_len=4), draft)
    assert torch.equal(seq.tokens, out.tokens)
    assert out.nfe < seq.nfe and out.accepted > 0


def _llama_batch():
    from parasample.targets.hf import HFCausalLM

    lm = HFCausalLM(_tiny_llama().double(), SimpleNamespace(eos_token_id=2, pad_token_id=0))
    # left-padded prompts that repeat themselves, so n-gram drafts are sometimes right
    ids = torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6], [0, 0, 9, 10, 9, 10, 9, 10]])
    mask = (ids != 0).long()
    return lm, ids, mask


@pytest.mark.parametrize("name", FIVE)
def test_identical_verifier_on_a_transformers_llama(name):
    """Left padding, EOS, top-p, k > 1, rows rolled back by different amounts."""
    from parasample.targets.hf import HFCausalLM

    lm, ids, mask = _llama_batch()
    torch.manual_seed(3)  # weight init of a throwaway draft model
    draft = HFCausalLM(_tiny_llama().double(), SimpleNamespace(eos_token_id=2, pad_token_id=0))
    config = SamplingConfig(max_new_tokens=24, top_p=0.95)
    for drafter in (NGramDrafter(), SiblingDrafter(), ModelDrafter(draft, lm.vocab_size)):
        seq, out = _both(lm, ids, mask, name, 4, config, SpecConfig(draft_len=3), drafter)
        assert torch.equal(seq.tokens, out.tokens), (name, drafter.name)
        assert torch.equal(seq.lengths, out.lengths)


@pytest.mark.slow
def test_identical_verifier_on_smollm2():
    """In float64: float32 logits of a many-token verification pass differ from one-token
    steps by ~1e-5, which moves inverse-CDF boundaries (arithmetic sampling's carried residual
    amplifies it); bench spec measures how often that flips a float32 row."""
    from parasample.targets.hf import smollm2

    lm = smollm2(torch.float64)
    ids, mask = lm.encode_prompts(["Name three colours. Colours: red, green, blue. Again:",
                                   "Count: 1, 2, 3, 4, 5,"])
    config = SamplingConfig(max_new_tokens=32, top_p=0.9)
    for name in ("iid", "arithmetic"):
        for drafter in (NGramDrafter(), SiblingDrafter()):
            seq, out = _both(lm, ids, mask, name, 2, config, SpecConfig(draft_len=4), drafter)
            assert torch.equal(seq.tokens, out.tokens), (name, drafter.name)


#: (vocabulary, length, temperature, top-p, EOS) of the rejection verifier's exactness cases:
#: plain sampling, a sharper temperature with nucleus and EOS, a flatter one with EOS
REJECTION_CASES = [(2, 4, 1.0, 1.0, None), (3, 3, 0.7, 0.8, 2), (3, 3, 1.5, 1.0, 2)]


@pytest.mark.parametrize("case", REJECTION_CASES,
                         ids=lambda c: f"V{c[0]}-T{c[2]}-p{c[3]}-eos{c[4]}")
@pytest.mark.parametrize("drafter", ["ngram", "sibling", "model"])
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_rejection_verifier_samples_the_exact_law(name, drafter, case):
    """Every drafter x source x (temperature, top-p, EOS) case against the toy LM's exact
    sequence law. 2^17 groups of two samples; group g contributes its row g mod 2 (so both
    rows are tested and the draws are independent), a chi-square at level 1e-3 on at most 16
    cells: any deviation of TVD 0.01 is detected with probability >= 0.98 (computed below).
    The model drafter is a deliberately poor draft (another random LM, peakier)."""
    V, L, temperature, top_p, eos = case
    model = ToyARLM(V, L, generator=torch.Generator().manual_seed(0), sharpness=1.0, eos_id=eos)
    make = {"ngram": NGramDrafter, "sibling": SiblingDrafter,
            "model": lambda: ModelDrafter(ToyARLM(V, L, generator=torch.Generator(
                ).manual_seed(11), sharpness=4.0, eos_id=eos), V)}[drafter]
    config = SamplingConfig(max_new_tokens=L, temperature=temperature, top_p=top_p)
    out = _rejection_law(model, name, config, SpecConfig(draft_len=3, verify="rejection"),
                         make(), 2 ** 17, tvd=0.01, power=0.98, max_support=16)
    assert 0 < out.accepted < out.proposed


def _rejection_law(model, name, config, spec, drafter, groups, *, tvd, power, max_support):
    """Rejection-verified rows of ``groups`` groups of two, row g mod 2 of group g (independent
    draws), against the toy LM's exact sequence law: chi-square at level 1e-3, whose design
    detects ``tvd`` with probability >= ``power``. Returns the generation."""
    k, V, L = 2, model.vocab_size, config.max_new_tokens
    ids = torch.zeros(groups, 1, dtype=torch.long)
    src = make_source(name, groups * k, k, generator=torch.Generator().manual_seed(2))
    out = spec_generate(model, ids, torch.ones_like(ids), src, config, spec, drafter,
                        samples_per_prompt=k)
    rows = torch.arange(groups) * k + torch.arange(groups) % k
    counts = torch.bincount(state_index(out.tokens[rows], V), minlength=V ** L)
    exact = brute_force_ar(model, L, config)
    support = int((exact > 0).sum())
    assert support <= max_support and design_power(groups, support - 1, tvd) >= power
    assert chi2_pvalue(counts, exact) > 1e-3
    return out


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_adaptive_draft_length_keeps_the_tokens_and_the_law(name):
    """The adaptive rule (D doubles when every row kept every draft, halves when every row kept
    fewer than half) reads only the past. Identical verifier: a draft that is the target keeps
    everything, D grows 1 -> 2 -> 4 -> 8 and the tokens stay sequential sampling's. Rejection
    verifier, the same growing windows: the law of 2^16 groups' rows (V = 2, 6 tokens, EOS,
    T = 0.8) against the exact sequence law, chi-square at level 1e-3 on <= 63 cells, which
    detects a TVD of 0.02 with probability >= 0.99 (computed below)."""
    V, L = 2, 6
    model = ToyARLM(V, L, generator=torch.Generator().manual_seed(0), sharpness=1.0, eos_id=1)
    config = SamplingConfig(max_new_tokens=L, temperature=0.8)
    adaptive = SpecConfig(draft_len=1, adaptive=True, max_draft_len=8)
    lm, ids, mask = _llama_batch()
    long = SamplingConfig(max_new_tokens=32, ignore_eos=True)
    seq, out = _both(lm, ids, mask, name, 2, long, adaptive, ModelDrafter(lm, lm.vocab_size))
    assert torch.equal(seq.tokens, out.tokens)
    fixed = _both(lm, ids, mask, name, 2, long, SpecConfig(draft_len=1),
                  ModelDrafter(lm, lm.vocab_size))[1]
    assert out.steps < fixed.steps / 2  # the windows grew (6 steps against 16 here)

    out = _rejection_law(model, name, config, SpecConfig(
        draft_len=1, adaptive=True, max_draft_len=8, verify="rejection"), ModelDrafter(model, V),
        2 ** 16, tvd=0.02, power=0.99, max_support=64)
    assert out.steps < L - 2  # fewer steps than one-token drafts take


class PositionLM:
    """An AR LM whose next-token logits ``table [L, V]`` depend on the position only (the
    tokens are independent): the marginal of every position is known exactly."""

    eos_id = None

    def __init__(self, table: torch.Tensor):
        self.table, self.vocab_size = table, table.shape[1]

    def _at(self, pos):
        return self.table[pos.clamp(max=len(self.table) - 1)]

    def start(self, ids, mask=None):
        n = torch.zeros(ids.shape[0], dtype=torch.long)
        return self._at(n), n

    def advance(self, n, tok):
        return self._at(n + 1), n + 1

    def extend(self, n, tokens):
        D = tokens.shape[1]
        return self._at(n[:, None] + 1 + torch.arange(D)), n + D

    def rollback(self, n, drop):
        return n - drop.cpu()

    def reorder(self, n, index):
        return n[index]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_rejection_with_sibling_drafts_is_exact_for_every_source(name):
    """A sibling ahead of a row drafts the token it drew at the row's next position. With the
    tests drawn from the source, a correlated source tied that draft to the row's own test
    uniform (position 3 of 12 fair coins: 0.530 under antithetic, 0.525 under Sobol, 10 SE
    off). Every position's marginal is checked to 4 SE, the SE from the groups' means (groups
    are independent), here at most 0.0065."""
    L, k, n = 12, 2, 2 ** 13
    model = PositionLM(torch.zeros(L, 2))  # fair coins
    ids = torch.zeros(n // k, 1, dtype=torch.long)
    src = make_source(name, n, k, generator=torch.Generator().manual_seed(1))
    out = spec_generate(model, ids, torch.ones_like(ids), src, SamplingConfig(max_new_tokens=L),
                        SpecConfig(draft_len=3, verify="rejection"), SiblingDrafter(),
                        samples_per_prompt=k)
    groups = out.tokens.double().view(n // k, k, L).mean(1)  # [groups, L]
    mean, se = groups.mean(0), groups.std(0) / (n // k) ** 0.5
    assert out.accepted > 0.05 * out.proposed  # siblings' drafts are used
    assert torch.all((mean - 0.5).abs() < 4 * se.clamp(min=1e-3)), (mean, se)


@pytest.mark.parametrize("drafter", ["sibling", "model"])
def test_rejection_with_arithmetic_sampling_gives_distinct_rows(drafter):
    """Arithmetic sampling shares every dimension after the first across a group; tests drawn
    from it made the k rows of a group copies of each other (each exact, the group useless)."""
    model = _toy(eos=None)
    make = {"sibling": SiblingDrafter,
            "model": lambda: ModelDrafter(_toy(seed=7, eos=None), model.vocab_size)}[drafter]
    k = 8
    ids = torch.zeros(1, 1, dtype=torch.long)
    src = make_source("arithmetic", k, k, generator=torch.Generator().manual_seed(0))
    out = spec_generate(model, ids, torch.ones_like(ids), src, SamplingConfig(max_new_tokens=6),
                        SpecConfig(draft_len=3, verify="rejection"), make(),
                        samples_per_prompt=k)
    assert len({tuple(r) for r in out.tokens.tolist()}) > k // 2


def test_rejection_verifier_keeps_more_model_drafts_than_identical():
    """min(p, q) overlap >= the inverse-CDF coupling's agreement."""
    from parasample.models.data import encode_prompts
    from parasample.models.registry import load_ar
    from parasample.tasks.arith import ArithChainTask, CharTokenizer

    target = load_ar()
    ids = encode_prompts([p.prompt for p in ArithChainTask().problems(4, split="test", seed=1)],
                         CharTokenizer())
    rates = {}
    for verify in ("identical", "rejection"):
        src = make_source("iid", 32, 8, generator=torch.Generator().manual_seed(0))
        out = spec_generate(target, ids, torch.ones_like(ids), src,
                            SamplingConfig(max_new_tokens=48), SpecConfig(4, verify),
                            ModelDrafter(load_ar("ar-arith-draft"), target.vocab_size),
                            samples_per_prompt=8)
        rates[verify] = out.acceptance
    assert rates["rejection"] > rates["identical"] > 0.3, rates


def _reference_draft(ctxs: list[list[int]], b: int, members: list[int], D: int,
                     max_n: int = 3, min_n: int = 1) -> list[int]:
    """Prompt lookup written as plainly as possible: the longest n-gram (max_n..min_n) ending
    row b; over the searched rows, the latest occurrence ending before that row's end; the one
    with the most tokens after it wins, a sibling over the row itself on a tie, then the first
    sibling; the row's own continuation repeats itself."""
    me = ctxs[b]
    for n in range(max_n, min_n - 1, -1):
        if len(me) < n:
            continue
        best = None
        for r in members:
            src = ctxs[r]
            ends = [e for e in range(n, len(src)) if src[e - n:e] == me[-n:]]
            if not ends:
                continue
            avail = len(src) - ends[-1]
            key = (avail, r != b)
            if best is None or key > best[0]:
                best = (key, r, ends[-1])
        if best is not None:
            _, r, e = best
            if r == b:
                return [me[e + i % (len(me) - e)] for i in range(D)]
            return ctxs[r][e:e + D]
    return []


@pytest.mark.parametrize("shares", [False, True])
def test_the_batched_ngram_lookup_drafts_what_a_plain_lookup_drafts(shares):
    from parasample.speculative.engine import DraftContext

    g = torch.Generator().manual_seed(0)
    P, k, D = 6, 4, 5
    drafter = SiblingDrafter() if shares else NGramDrafter()
    for trial in range(20):
        V = 2 + trial % 4
        plen = torch.randint(1, 6, (P,), generator=g)
        ids = torch.randint(0, V, (P, 6), generator=g)
        mask = (torch.arange(6)[None] >= 6 - plen[:, None]).long()  # left-padded
        st = drafter.init(ids * mask, mask, k)
        count = torch.randint(1, 9, (P * k,), generator=g)
        tokens = torch.randint(0, V, (P * k, 12), generator=g)
        ctx = DraftContext(tokens, count, torch.zeros(P * k, dtype=torch.bool), None, None,
                           None, SamplingConfig())
        draft, _, st, _ = drafter.propose(st, ctx, D)
        ctxs = [ids[b // k, 6 - plen[b // k]:].tolist() + tokens[b, :count[b]].tolist()
                for b in range(P * k)]
        for b in range(P * k):
            members = list(range(b // k * k, b // k * k + k)) if shares else [b]
            want = _reference_draft(ctxs, b, members, D)
            got = draft[b, :len(want)].tolist()
            assert got == want, (trial, b)
            if not want:  # no draft: the step carries the pending token (never checked)
                assert draft.shape[1] == 0 or draft[b].tolist() == [ctxs[b][-1]] * draft.shape[1]


def _continues_as_if_never_fed(model, ids, mask):
    """Feed 3 extra tokens per row, roll back 3 and 1 of them, feed one more: its logits are
    those of the row's prompt followed by the kept tokens only."""
    _, state = model.start(ids, mask)
    extra = torch.tensor([[1, 2, 1], [2, 1, 2]])
    _, state = model.extend(state, extra)
    drop = torch.tensor([3, 1])
    state = model.rollback(state, drop)
    nxt = torch.tensor([[2], [1]])
    got, _ = model.extend(state, nxt)
    for b in range(2):
        kept = extra[b, :3 - int(drop[b])].tolist() + nxt[b].tolist()
        _, ref = model.start(ids[b:b + 1], mask[b:b + 1])
        want, _ = model.extend(ref, torch.tensor([kept]))
        assert torch.allclose(got[b, 0].double(), want[0, -1].double(), atol=1e-5), b


def test_rollback_continues_as_if_the_draft_never_existed():
    """Per-row rollback on the three cache kinds: the toy LM's prefixes, a transformers
    DynamicCache (masked holes), the shipped model's preallocated cache (per-row lengths)."""
    from parasample.models.registry import load_ar

    toy_ids = torch.zeros(2, 1, dtype=torch.long)
    _continues_as_if_never_fed(_toy(eos=None), toy_ids, torch.ones_like(toy_ids))
    lm, ids, mask = _llama_batch()
    _continues_as_if_never_fed(lm, ids, mask)
    ar_ids = torch.randint(1, 10, (2, 48), generator=torch.Generator().manual_seed(0))
    _continues_as_if_never_fed(load_ar(), ar_ids, torch.ones_like(ar_ids))


def test_bad_input_is_one_clear_line():
    with pytest.raises(ValueError, match="draft_len=0 must be an integer >= 1"):
        SpecConfig(draft_len=0)
    with pytest.raises(ValueError, match="unknown verifier 'greedy'.*identical, rejection"):
        SpecConfig(verify="greedy")
    with pytest.raises(ValueError, match="max_draft_len=2 must be an integer >= draft_len=4"):
        SpecConfig(adaptive=True, max_draft_len=2)
    with pytest.raises(ValueError, match="vocabulary has 5 tokens and the target's 4"):
        ModelDrafter(ToyARLM(5, 3, generator=torch.Generator().manual_seed(0)), 4)
    ids = torch.zeros(1, 1, dtype=torch.long)
    no_extend = SimpleNamespace(vocab_size=4, eos_id=None)
    with pytest.raises(ValueError, match="has no extend"):
        spec_generate(no_extend, ids, ids, make_source("iid", 1, 1,
                      generator=torch.Generator()), SamplingConfig(), SpecConfig(),
                      NGramDrafter())
