"""``parasample bench align``: (a) the toy tilted LM's curves and summaries, (b) cached QUEST
against token-by-token QUEST on SmolLM2 (identical chains, fewer calls); resumes; bad input."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from parasample.cli import app


def test_bench_align_quick_writes_identical_chains_and_a_rerun_computes_nothing(tmp_path,
                                                                                monkeypatch):
    runner = CliRunner()
    args = ["bench", "align", "--quick", "--out", str(tmp_path), "--threads", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "quest_cache.csv")))
    assert [r["sampler"] for r in rows] == ["quest", "quest-cached", "quest-kept"]
    plain, cached, kept = rows
    assert cached["identical_to_uncached"] == kept["identical_to_uncached"] == "1.0"
    assert float(cached["calls_per_move"]) <= float(plain["calls_per_move"])
    toy = list(csv.DictReader(open(tmp_path / "toy.csv")))
    assert {r["sampler"] for r in toy} == {"importance-resampling", "quest", "mt-quest", "smc",
                                           "resample-move-smc", "pncg"}
    assert {r["tries_source"] for r in toy if r["sampler"] == "mt-quest"} == {
        "iid", "lattice", "antithetic"}
    assert all(0 <= float(r["tvd"]) <= 1 and float(r["calls"]) >= 1 for r in toy)
    # one unit per sampler, never mixed: p-NCG's calls are gradient evaluations, no LM forwards
    for r in toy:
        grad = r["sampler"] == "pncg"
        assert r["call_unit"] == ("gradient-eval" if grad else "lm-forward")
        assert (int(r["gradient_evals"]) > 0) == grad and (int(r["lm_forwards"]) > 0) != grad
    summary = list(csv.DictReader(open(tmp_path / "toy_summary.csv")))
    assert len(summary) == len({(r["sampler"], r["tries_source"], r["size"]) for r in toy})
    assert (tmp_path / "align_toy.png").exists() and (tmp_path / "toy_tries.csv").exists()
    lm = list(csv.DictReader(open(tmp_path / "lm.csv")))
    assert {r["sampler"] for r in lm} == {"importance-resampling", "quest", "smc",
                                          "resample-move-smc"}
    assert {r["model"] for r in lm + rows} == {"smollm2"}
    assert all(r["log_evidence"] != "" for r in lm if r["sampler"].endswith("smc"))
    assert (tmp_path / "align_lm.png").exists() and (tmp_path / "lm_summary.csv").exists()
    before = {p.name: p.read_text() for p in tmp_path.glob("*.csv")}
    import parasample.bench.align as align
    import parasample.bench.align_cache as align_cache
    import parasample.bench.align_toy as align_toy
    monkeypatch.setattr(align_cache, "_chain", lambda *a, **k: pytest.fail("ran again"))
    monkeypatch.setattr(align_toy, "toy_unit", lambda *a, **k: pytest.fail("ran again"))
    monkeypatch.setattr(align, "lm_unit", lambda *a, **k: pytest.fail("ran again"))
    assert runner.invoke(app, args).exit_code == 0
    assert {p.name: p.read_text() for p in tmp_path.glob("*.csv")} == before


def test_toy_summaries_count_calls_to_a_tvd_and_correlated_tries_against_iid():
    from parasample.bench.align_toy import correlated_tries_ratio, toy_summary_rows

    def row(source, seed, budget, calls, wall, tvd):
        return {"sampler": "mt-quest", "tries_source": source, "size": "4", "seed": str(seed),
                "budget": str(budget), "call_unit": "lm-forward", "calls": str(calls),
                "wall_s": str(wall), "tvd": str(tvd)}

    rows = [row("iid", 0, 1, 5, 1.0, 0.3), row("iid", 0, 2, 10, 2.0, 0.1),
            row("lattice", 0, 1, 5, 1.1, 0.09), row("lattice", 0, 2, 10, 2.2, 0.05),
            row("iid", 1, 1, 5, 1.0, 0.2), row("iid", 1, 2, 10, 2.0, 0.1),
            row("lattice", 1, 1, 5, 1.0, 0.2), row("lattice", 1, 2, 10, 2.0, 0.1)]
    iid, lat = toy_summary_rows(rows, target_tvd=0.15)
    assert iid["reached"] == 2 and iid["calls_to_target"] == 10.0
    assert lat["reached"] == 2 and lat["calls_to_target"] == 7.5
    assert iid["call_unit"] == "lm-forward"
    (ratio,) = correlated_tries_ratio(rows)
    assert ratio["tries_source"] == "lattice" and ratio["censored"] == 0
    assert ratio["wall_ratio_to_iid"] == round((1.1 / 2.0 + 2.0 / 2.0) / 2, 4)


def test_lm_summary_compares_each_model_with_its_own_quest():
    from parasample.bench.align import lm_summary

    def row(model, sampler, budget, reward, wall):
        return {"model": model, "sampler": sampler, "size": "4", "budget": str(budget),
                "expected_reward": str(reward), "wall_s": str(wall), "calls": "10"}

    rows = [row("a", "quest", 1, 0.5, 1.0), row("a", "quest", 2, 0.9, 2.0),
            row("a", "smc", 1, 0.6, 0.5),
            row("b", "quest", 1, 0.1, 10.0), row("b", "quest", 2, 0.2, 20.0),
            row("b", "smc", 1, 0.6, 5.0)]
    summ = {(r["model"], r["sampler"]): r for r in lm_summary(rows)}
    assert summ["a", "smc"]["quest_seconds_to_this_reward"] == 2.0  # a's QUEST, not b's
    assert summ["a", "smc"]["wall_ratio_to_quest_final"] == 0.25
    assert summ["b", "smc"]["quest_seconds_to_this_reward"] == ""  # b's QUEST never gets there
    assert summ["b", "smc"]["reaches_quest_final"] is True


@pytest.mark.parametrize("args,message", [
    (["--beta", "0"], "--beta"), (["--chains", "0"], "--chains"), (["--moves", "0"], "--moves"),
    (["--target-tvd", "1"], "target TVD 1.0"), (["--toy-samples", "0"], "--toy-samples"),
    (["--problems", "0"], "--problems"), (["--tries", "0"], "--tries"),
    (["--tries", "3", "--try-source", "antithetic"], "use 4"),
    (["--try-source", "sobol"], "choose one of iid, lattice, antithetic"),
    (["--skip-toy", "--model", "no-such-model"], "no-such-model"),
])
def test_bench_align_bad_input(args, message, tmp_path):
    res = CliRunner().invoke(app, ["bench", "align", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert message in res.output
