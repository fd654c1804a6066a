"""bench passk end to end on the shipped small AR model (mechanics and resumption), the CLI's
bad input, and the SmolLM2 quick run (slow)."""

import csv

import pytest
import torch
from typer.testing import CliRunner

from parasample.bench import passk as bp
from parasample.cli import app


@pytest.fixture(scope="module")
def chain_task():
    return bp.ar_chain_task(6, batches=2, seed=0)


def test_stratified_batches_are_drawn_as_groups_of_each_k(chain_task, tmp_path):
    """A prefix of a stratified group of 8 covers k random strata of 8, not one of each of k:
    stratified sampling's pass@k is read from groups of k of its own (one per k, side by
    side), and a sampler spelled arithmetic:B carries B bits of its residual."""
    cfg = bp.PasskBenchConfig.quick(samplers=("iid", "stratified", "arithmetic:5"))
    assert bp.own_groups("stratified", cfg) and not bp.own_groups("arithmetic:5", cfg)
    res = bp.sample_task(chain_task, "stratified", cfg, tmp_path)
    assert set(res["by_k"]) == {1, 2, 4, 8}
    for k, part in res["by_k"].items():
        assert part["correct"].shape == (6, 2, k) and len(part["answers"][0][0]) == k
    bp.run_benchmark(cfg, tmp_path, [chain_task])
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert {r["sampler"] for r in rows} == {"stratified", "arithmetic:5", "bound"}


def test_bench_writes_csvs_and_resumes_without_resampling(chain_task, tmp_path, monkeypatch):
    cfg = bp.PasskBenchConfig.quick()
    bp.run_benchmark(cfg, tmp_path, [chain_task])
    rows = list(csv.DictReader(open(tmp_path / "passk.csv")))
    assert list(rows[0]) == bp.PASSK_HEADER == [
        "sampler", "model", "task", "k", "pass_at_k", "stderr", "sampling_se",
        "stride_pass_at_k", "stride_stderr", "stride_sampling_se", "zero_variance",
        "zero_variance_se", "distinct_answers", "n_problems", "tokens", "wall_s", "device", "dtype"]
    assert [(r["sampler"], r["k"]) for r in rows] == [
        (s, str(k)) for s in bp.SAMPLERS for k in (1, 2, 4, 8)]
    for s in bp.SAMPLERS:
        curve = [float(r["pass_at_k"]) for r in rows if r["sampler"] == s]
        distinct = [float(r["distinct_answers"]) for r in rows if r["sampler"] == s]
        assert curve == sorted(curve) and distinct == sorted(distinct) and distinct[0] <= 1
        by_k = {int(r["k"]): r for r in rows if r["sampler"] == s}
        assert float(by_k[1]["zero_variance"]) == 1.0  # one sample never varies
        if s != "iid":  # at k = k_max the stride estimator is the whole batch, as the prefix
            assert by_k[8]["stride_pass_at_k"] == by_k[8]["pass_at_k"]
    summary = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert {r["sampler"] for r in summary} == {"sobol", "lattice", "antithetic", "arithmetic",
                                               "bound"}
    # the bound: min(1, k p) per problem, p = pass@1 over every sampler's rows
    bound = {int(r["k"]): float(r["pass_at_k"]) for r in summary if r["sampler"] == "bound"}
    res = {s: bp.sample_task(chain_task, s, cfg, tmp_path / "raw") for s in bp.SAMPLERS}
    p = torch.cat([r["correct"].flatten(1) for r in res.values()], 1).double().mean(1)  # [P]
    assert [bound[k] for k in (1, 2, 4, 8)] == pytest.approx(
        [float((k * p).clamp(max=1).mean()) for k in (1, 2, 4, 8)], abs=1e-5)
    for r in summary:  # the share of the bound's gain over i.i.d. that each sampler realises
        at, base = float(r["pass_at_k"]), float(r["iid_pass_at_k"])
        room = bound[int(r["k"])] - base
        if r["k"] == "1" or room <= 0.005:
            assert r["of_bound"] == ""
        else:  # from the CSV's rounded pass@k
            assert float(r["of_bound"]) == pytest.approx((at - base) / room, abs=2e-3)
    # a rerun reads the raw results back: no model call, identical CSV
    before = (tmp_path / "passk.csv").read_text()
    monkeypatch.setattr(bp, "generate", lambda *a, **k: pytest.fail("resampled"))
    bp.run_benchmark(cfg, tmp_path, [chain_task])
    assert (tmp_path / "passk.csv").read_text() == before


def test_an_interrupted_run_resumes_to_the_same_numbers(chain_task, tmp_path):
    cfg = bp.PasskBenchConfig.quick()
    task = chain_task._replace(rows_per_call=16)  # one problem per chunk: several chunks
    bp.run_benchmark(cfg, tmp_path / "ref", [task])
    calls = []

    def stop_after_two_chunks(kind, n):
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bp.run_benchmark(cfg, tmp_path / "run", [task], progress=stop_after_two_chunks)
    ticks = []
    bp.run_benchmark(cfg, tmp_path / "run", [task], progress=lambda kind, n: ticks.append(n))
    # the rows drawn before the interruption count as done: the bar ends full
    assert sum(ticks) == len(task.problems) * task.batches * cfg.k_max * len(cfg.samplers)
    strip = lambda p: [{k: v for k, v in r.items() if k != "wall_s"}  # noqa: E731
                       for r in csv.DictReader(open(p / "passk.csv"))]
    assert strip(tmp_path / "run") == strip(tmp_path / "ref")


def test_config_and_cli_bad_input():
    with pytest.raises(ValueError, match="k_max=48: Sobol and lattice batches need a power of "
                       "two >= 2; use 64"):
        bp.PasskBenchConfig(k_max=48)
    with pytest.raises(ValueError, match=r"top_p=0 must lie in \(0, 1\]"):
        bp.PasskBenchConfig(top_p=0)
    runner = CliRunner()
    for args, msg in [(["--k-max", "48"], "use 64"),
                      (["--top-p", "1.5"], "Invalid value for '--top-p': 1.5 is not in"),
                      (["--gsm8k-tokens", "0"], "Invalid value for '--gsm8k-tokens'")]:
        res = runner.invoke(app, ["bench", "passk", *args])
        assert res.exit_code == 2 and msg in res.output, res.output


@pytest.mark.slow
def test_quick_cli_run_with_smollm2(tmp_path):
    res = CliRunner().invoke(app, ["bench", "passk", "--quick", "--out", str(tmp_path)],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "samples saved" in " ".join(res.output.split())
    assert (tmp_path / "passk.png").stat().st_size > 0
    tp = list(csv.DictReader(open(tmp_path / "throughput.csv")))
    assert {(r["engine"], r["prefill"], r["sampler"]) for r in tp} == {
        ("transformers.generate", "per-row", "iid"), ("parasample", "per-row", "iid"),
        *(("parasample", "shared", s) for s in bp.SAMPLERS)}
    models = {r["model"] for r in csv.DictReader(open(tmp_path / "passk.csv"))}
    assert models == {"ar-arith", "smollm2"}


def test_a_saving_above_the_union_bound_is_flagged_as_noise():
    """The summary cell of a sampler whose mean samples saved lies above the bound's (what no
    exact sampler can be expected to save) says so, rather than reading as a gain."""
    from parasample.cli.bench_passk import ceiling_of, saved_cell

    heads = {"arithmetic": (0.364, 0.074, [16]), "bound": (0.279, 0.037, [16])}
    assert ceiling_of(heads) == 0.279 and ceiling_of({"iid": (None, None, [])}) is None
    cell = saved_cell(*heads["arithmetic"], ceiling_of(heads))
    assert cell == ("36.4% +- 7.4% (k 16 left out), above the 27.9% any exact sampler can "
                    "save: noise")
    assert "noise" not in saved_cell(0.2, 0.05, [], 0.279)
    assert saved_cell(0.2, None, []) == "20.0%"
    assert saved_cell(None, None, [], 0.279) == "n/a (outside the i.i.d. curve)"
