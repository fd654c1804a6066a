"""bench spec's bookkeeping: repetitions in alternating orders, speedups as per-repetition
ratios, and the identity table's counts (the runs themselves are exercised by the CLI's quick
run in tests/test_interrupt.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from parasample.bench.spec import SpecBenchConfig, _rows, groups
from parasample.bench.spec_tables import _identity, identity_sources
from parasample.errors import InputError


def test_identity_counts_equal_rows_and_where_the_others_first_differ():
    seq = SimpleNamespace(tokens=torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
                          lengths=torch.tensor([3, 3, 3]))
    spec = SimpleNamespace(tokens=torch.tensor([[1, 2, 3, 0], [4, 0, 6, 0], [7, 8, 9, 1]]),
                           lengths=torch.tensor([3, 3, 4]))
    row = _identity(seq, spec)
    assert row == {"rows": 3, "identical_rows": 1, "identical_fraction": 0.3333,
                   "mean_first_difference": 2.0}  # row 1 at token 1, row 2 at token 3


def test_speedups_are_per_repetition_ratios_with_their_range():
    group = groups(SpecBenchConfig(skip_lm=True))[0]
    out = SimpleNamespace(lengths=torch.tensor([10]), nfe=10, proposed=0, accepted=0,
                          tokens=torch.zeros(1, 10, dtype=torch.long))
    runs = {("sequential", "", "", ""): None, ("speculative", "ngram", "rejection", "4"): None}
    outs = {name: [out] for name in runs}
    walls = {("sequential", "", "", ""): [1.0, 2.0, 1.0],
             ("speculative", "ngram", "rejection", "4"): [0.5, 1.0, 2.0]}
    rows = _rows(group, runs, outs, walls, {}, SpecBenchConfig(reps=3))
    spec = rows[1]
    assert spec["speedup_vs_sequential"] == 2.0  # ratios 2, 2, 0.5: the median
    assert (spec["speedup_min"], spec["speedup_max"]) == (0.5, 2.0)
    assert spec["tokens_per_s"] == 10.0 and spec["wall_s"] == 1.0


def test_the_identity_sources_include_a_few_carried_bits():
    src = identity_sources(4)
    assert ("arithmetic", None) in src and ("arithmetic", 4) in src and ("stratified", 12) in src


def test_a_target_draft_pair_runs_every_drafter_both_verifiers_and_the_three_anchors():
    """--model qwen-coder-1.5b --draft qwen-coder-0.5b: GSM8K only, no toy pair; the draft
    model fixed and adaptive; transformers' assisted generation beside prompt lookup."""
    one, many = groups(SpecBenchConfig(model="qwen-coder-1.5b", draft="qwen-coder-0.5b", k=8))
    assert (one.model, one.task, one.k, many.k) == ("qwen-coder-1.5b", "gsm8k", 1, 8)
    both = {"identical", "rejection"}
    assert {(d, v, a) for d, v, a in one.methods} == (
        {("ngram", v, False) for v in both} | {("model", v, a) for v in both
                                               for a in (False, True)})
    assert {d for d, _, _ in many.methods} == {"ngram", "sibling", "model"}
    assert one.anchor and one.assisted and not many.anchor
    no_draft = groups(SpecBenchConfig(model="qwen-coder-1.5b"))[0]
    assert not no_draft.assisted and {d for d, _, _ in no_draft.methods} == {"ngram"}


def test_a_draft_without_a_target_is_refused():
    with pytest.raises(InputError, match="--draft needs --model"):
        SpecBenchConfig(draft="qwen-coder-0.5b")


def test_the_cost_model_resumes_without_duplicates_and_relative_to_the_target(tmp_path,
                                                                              monkeypatch):
    """costs.csv: an interrupted run keeps its rows, a rerun adds only the missing ones, and
    every row is relative to the target's one-token call at its batch."""
    import parasample.bench.spec_tables as bs
    import parasample.targets.named as named
    from parasample.bench.csvlog import read_csv

    fake = SimpleNamespace(encode_prompts=lambda texts: (torch.ones(1, 5, dtype=torch.long),
                                                         torch.ones(1, 5, dtype=torch.long)))
    monkeypatch.setattr(named, "load_lm", lambda name, dtype=None, device="cpu": fake)
    monkeypatch.setattr(bs, "_texts", lambda task, n, cfg: ["q"])
    seconds = {("1", 1): 1.0, ("1", 5): 2.0, ("8", 1): 3.0, ("8", 5): 6.0}
    calls = []

    def timed(lm, ids, mask, fed, reps, device):
        calls.append((ids.shape[0], fed))
        if len(calls) == 3 and not hasattr(timed, "resumed"):
            raise KeyboardInterrupt
        return seconds[(str(ids.shape[0]), fed)] / (2.0 if len(calls) in (3, 7) else 1.0), reps

    monkeypatch.setattr(bs, "_call_seconds", timed)
    cfg = SpecBenchConfig(model="m", draft="d", k=8)
    with pytest.raises(KeyboardInterrupt):
        bs.cost_rows(cfg, tmp_path)
    timed.resumed = True
    bs.cost_rows(cfg, tmp_path)
    rows = read_csv(tmp_path / "costs.csv")
    keys = [(r["role"], r["batch"], r["tokens_fed"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8
    for r in rows:
        target = next(t for t in rows if t["role"] == "target" and t["batch"] == r["batch"]
                      and t["tokens_fed"] == "1")
        assert float(r["relative_to_target"]) == pytest.approx(
            float(r["seconds_per_call"]) / float(target["seconds_per_call"]), abs=1e-3)


def test_the_default_study_times_the_toy_pair_for_its_cost_model(tmp_path):
    """costs.csv of the default study (here --skip-lm): the toy target and its draft model, fed
    1 and D + 1 tokens at batch 1 and k, each relative to the target's one-token call."""
    import parasample.bench.spec_tables as bs
    from parasample.bench.csvlog import read_csv

    cfg = SpecBenchConfig(skip_lm=True, k=2, draft_len=2)
    bs.cost_rows(cfg, tmp_path, reps=2)
    rows = read_csv(tmp_path / "costs.csv")
    assert {(r["model"], r["role"], r["batch"], r["tokens_fed"]) for r in rows} == {
        (m, role, b, f) for m, role in (("ar-arith", "target"), ("ar-arith-draft", "draft"))
        for b in ("1", "2") for f in ("1", "3")}
    for r in rows:
        if r["role"] == "target" and r["tokens_fed"] == "1":
            assert float(r["relative_to_target"]) == 1.0
        assert int(r["calls_timed"]) >= 2 and float(r["seconds_per_call"]) > 0
