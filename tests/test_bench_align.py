"""``parasample bench align`` (so far: cached QUEST against token-by-token QUEST on SmolLM2):
the quick run writes identical chains and fewer calls, resumes, and rejects bad input."""

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
    assert [r["sampler"] for r in rows] == ["quest", "quest-cached"]
    plain, cached = rows
    assert cached["identical_to_uncached"] == "1.0"
    assert float(cached["calls_per_move"]) <= float(plain["calls_per_move"])
    before = (tmp_path / "quest_cache.csv").read_text()
    import parasample.bench.align as align
    monkeypatch.setattr(align, "_chain", lambda *a, **k: pytest.fail("ran again"))
    assert runner.invoke(app, args).exit_code == 0
    assert (tmp_path / "quest_cache.csv").read_text() == before


@pytest.mark.parametrize("args,message", [
    (["--beta", "0"], "--beta"), (["--chains", "0"], "--chains"), (["--moves", "0"], "--moves"),
])
def test_bench_align_bad_input(args, message, tmp_path):
    res = CliRunner().invoke(app, ["bench", "align", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert message in res.output
