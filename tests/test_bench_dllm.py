"""The dllm benchmark harness end to end on a tiny untrained checkpoint (mechanics, not quality)."""

import csv

import pytest
from typer.testing import CliRunner

from parasample.bench import dllm as bd
from parasample.cli import app

GUIDE = ["stage1-B4", "stage1-B8", "stage1-B16", "stage1-B32", "stage1-B64", "stage1-B128",
         "stage1-B256", "stage2-S8", "stage2-S16", "stage2-S32", "stage2-S64", "stage2-S128",
         "stage2-S256"]


def test_sweep_is_the_guides_thirteen_configurations_per_cache():
    runs = bd.sweep(bd.DLLMBenchConfig())
    names = [r.run_name for r in runs]
    temps = [f"temp-T{t}{c}" for c in ("", "-model") for t in ("0.1", "0.3", "0.5", "0.7", "1")]
    assert names == [*GUIDE, *temps, *(f"{n}+dual" for n in GUIDE + temps)]
    s1 = [r for r in runs if r.stage == "1"]
    assert all(r.config.steps == 256 // r.config.block_length for r in s1)
    assert all(r.config.block_length == 32 for r in runs if r.stage == "2")
    assert {r.config.cache.name for r in runs if r.run_name.endswith("+dual")} == {"dual"}
    assert {r.config.temperature for r in runs if r.stage == "temperature"} == {
        0.1, 0.3, 0.5, 0.7, 1.0}
    assert {r.config.confidence for r in runs if r.run_name.startswith("temp-T1-model")} == {
        "model"}


def test_bench_writes_csvs_and_plots_and_resumes(tiny_dllm, tmp_path):
    runner = CliRunner()
    args = ["bench", "dllm", "--model", str(tiny_dllm), "-n", "2", "--batch-size", "2",
            "--passk-problems", "2", "--k-max", "4", "--spec-problems", "2",
            "--paired-problems", "4", "--out", str(tmp_path)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    raw = (tmp_path / "results.csv").read_bytes()
    assert b"\r" not in raw  # \n line endings
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["run_name", "block_length", "steps", "accuracy", "throughput"]
    assert len(rows) == 1 + 46 and rows[-1][0] == "temp-T1-model+dual"
    passk = list(csv.DictReader(open(tmp_path / "passk.csv")))
    assert [(r["sampler"], r["k"]) for r in passk] == [
        (s, str(k)) for s in bd.PASSK_SAMPLERS for k in (1, 2, 4)]
    assert (tmp_path / "passk.png").exists()
    assert (tmp_path / "L-B.png").stat().st_size > 0 and (tmp_path / "L-S.png").exists()
    runs = list(csv.DictReader(open(tmp_path / "runs.csv")))
    seq = next(r for r in runs if r["run_name"] == "stage2-S256")
    assert seq["nfe_per_problem"] == "256.0" and seq["tokens_per_step"] == "1.0"
    assert {"nfe", "wall_s", "n_problems", "seed", "method", "device", "cache",
            "temperature"} <= set(runs[0])
    # rerun: every configuration is found finished, nothing is appended
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert len(list(csv.DictReader(open(tmp_path / "runs.csv")))) == 46
    spec = list(csv.DictReader(open(tmp_path / "spec.csv")))
    assert [(r["temperature"], r["run_name"]) for r in spec] == [
        (t, n) for t in ("0.0", "1.0") for n in ("sequential", "spec-k2", "spec-k4", "spec-k8",
                                                 "spec-adaptive")] + [("1.0", "spec-rejection-k4")]
    # the token-identical decoder returns S's tokens and never needs more calls than S; the
    # law-exact variant draws other samples of S's law, in no more calls than S either
    assert all(r["identical_to_sequential"] == "1.0" for r in spec[:-1])
    assert all(float(r["calls_saved"]) >= 1.0 for r in spec)
    paired = list(csv.DictReader(open(tmp_path / "cache_paired.csv")))
    assert len(paired) == 1 and paired[0]["n_problems"] == "4"
    assert int(paired[0]["none_only"]) + int(paired[0]["dual_only"]) <= 4


def test_mcnemar_p_is_the_exact_two_sided_binomial_test():
    from parasample.bench.dllm_spec import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 10) == pytest.approx(2 * 0.5 ** 10)


def test_interrupted_sweep_resumes_where_it_stopped(tiny_dllm, tmp_path):
    task = bd.arith_task(str(tiny_dllm), 2, seed=0)
    cfg = bd.DLLMBenchConfig(n_problems=2, batch_size=2, caches=("none",))
    calls = []

    def boom(n):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bd.run_benchmark(task, cfg, tmp_path, progress=boom)
    assert len(list(csv.DictReader(open(tmp_path / "runs.csv")))) == 2  # finished runs kept
    ticks = []
    rows = bd.run_benchmark(task, cfg, tmp_path, progress=ticks.append)
    assert len(rows) == 23 and len(list(csv.DictReader(open(tmp_path / "runs.csv")))) == 23
    # the two recorded runs (2 problems each) tick first, so the bar's time left counts the rest
    assert ticks == [4] + [2] * 21


def test_resumed_passk_ticks_drawn_samplers_at_the_start(tiny_dllm, tmp_path):
    task = bd.arith_task(str(tiny_dllm), 2, seed=0)
    cfg = bd.DLLMBenchConfig(n_problems=2, batch_size=2, caches=("none",), passk_problems=2,
                             k_max=4)
    first = []
    bd.passk_table(task, cfg, tmp_path, progress=first.append)
    assert first == [8] * len(bd.PASSK_SAMPLERS)  # one decode call per sampler, 2 x 4 rows
    drawn = sorted((tmp_path / "raw").glob("passk-*.pt"))
    drawn[0].unlink()  # one sampler to draw again
    again = []
    bd.passk_table(task, cfg, tmp_path, progress=again.append)
    assert again == [8 * (len(bd.PASSK_SAMPLERS) - 1), 8]


def test_bench_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["bench", "dllm", "--task", "gsm8k", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "needs a real masked diffusion LM" in r.output
    r = runner.invoke(app, ["bench", "dllm", "--cache", "fast", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "'fast' is not one of 'none', 'prefix', 'dual'" in r.output
    r = runner.invoke(app, ["bench", "dllm", "--k-max", "12", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "k_max=12" in r.output and "use 16" in r.output
    r = runner.invoke(app, ["bench", "dllm", "--model", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no shipped checkpoint named 'nope'" in " ".join(r.output.split())
