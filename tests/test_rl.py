"""GRPO with correlated groups: advantages, the clipped objective, bad input, and a tiny run that
resumes after an interruption to the same weights and writes its curve from the CLI."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from parasample.bench.rl import RL_HEADER
from parasample.cli import app
from parasample.errors import InputError
from parasample.rl import GRPOConfig, clipped_objective, group_advantages, train_rl

TINY = dict(group_size=4, problems_per_step=2, steps=3, eval_every=1, eval_problems=4)


def test_group_advantages_are_centred_and_zero_in_constant_groups():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    a = group_advantages(r)
    assert torch.allclose(a.sum(1), torch.zeros(3), atol=1e-6)
    assert torch.all(a[1:] == 0)  # all right / all wrong: no signal
    assert a[0, 0] > 0 and torch.all(a[0, 1:] < 0)


def test_clipped_objective_is_the_policy_gradient_at_ratio_one_and_clips_beyond():
    logp = torch.log(torch.tensor([[0.5, 0.2], [0.4, 0.9]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    clipped_objective(logp, logp.detach(), adv, mask, 0.2).backward()
    # d/dlogp of -mean_i A_i mean_t logp: -A_i / (tokens of i) / N on real tokens
    want = torch.tensor([[-0.25, -0.25], [1.0, 0.0]])
    assert torch.allclose(logp.grad, want)
    # a ratio already past 1 + clip with a positive advantage gets no gradient
    old = (logp.detach() - 0.5)  # ratio e^0.5 > 1.2
    logp.grad = None
    clipped_objective(logp, old, torch.tensor([1.0, 1.0]), mask, 0.2).backward()
    assert torch.all(logp.grad == 0)


def test_token_averaged_objective_weighs_every_token_alike():
    logp = torch.log(torch.tensor([[0.5, 0.2], [0.4, 0.9]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    clipped_objective(logp, logp.detach(), torch.tensor([1.0, -2.0]), mask, 0.2,
                      average="token").backward()
    # d/dlogp of -sum_{i,t} A_i logp / (real tokens = 3): -A_i / 3 on real tokens
    want = torch.tensor([[-1 / 3, -1 / 3], [2 / 3, 0.0]])
    assert torch.allclose(logp.grad, want)
    with pytest.raises(ValueError, match="choose one of"):
        clipped_objective(logp, logp.detach(), torch.ones(2), mask, 0.2, average="batch")


@pytest.mark.parametrize("kw,message", [
    (dict(loss_average="mean"), "loss_average='mean': choose one of"),
    (dict(sampler="sobol", group_size=6), "power-of-two"),
    (dict(sampler="antithetic", group_size=5), "must be even"),
    (dict(group_size=1), "G >= 2"),
    (dict(steps=0), "steps=0 must be >= 1"),
    (dict(lr=1.5), "lr=1.5 must be in"),
    (dict(sampler="qmc"), "choose one of"),
])
def test_config_bad_input(kw, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**kw)


@pytest.mark.parametrize("sampler", ["arithmetic", "stratified"])
def test_tiny_run_records_the_curve_and_resumes_to_the_same_weights(sampler, tmp_path):
    cfg = GRPOConfig(sampler=sampler, **TINY)

    def stop_at_2(step, total, metrics):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_rl(cfg, tmp_path / "run.pt", progress=stop_at_2)
    out = train_rl(cfg, tmp_path / "run.pt")
    ref = train_rl(cfg, tmp_path / "ref.pt")
    assert [h["step"] for h in out["history"]] == [0, 1, 2, 3] == [h["step"] for h in
                                                                   ref["history"]]
    assert [m["step"] for m in out["steps"]] == [1, 2, 3]
    for h in out["history"][1:]:
        assert 0 <= h["zero_variance"] <= 1 and 0 <= h["reward"] <= 1
        assert 0 <= h["heldout_pass1"] <= 1 and 0 <= h["heldout_pass4"] <= 1
    for (k, a), b in zip(out["model"].state_dict().items(), ref["model"].state_dict().values(),
                         strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


def test_inner_updates_resume_to_the_same_weights_and_move_further(tmp_path):
    cfg = GRPOConfig(sampler="lattice", updates_per_batch=3, lr=1e-3, **TINY)

    def stop_at_2(step, total, metrics):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_rl(cfg, tmp_path / "run.pt", progress=stop_at_2)
    out = train_rl(cfg, tmp_path / "run.pt")["model"].state_dict()
    ref = train_rl(cfg, tmp_path / "ref.pt")["model"].state_dict()
    one = train_rl(replace(cfg, updates_per_batch=1), tmp_path / "one.pt")["model"].state_dict()
    assert all(torch.allclose(out[k], ref[k], atol=1e-6) for k in ref)
    assert any(not torch.allclose(one[k], ref[k], atol=1e-6) for k in ref)


def test_bench_config_gives_every_group_size_the_same_samples_per_step():
    from parasample.bench.rl import RLBenchConfig

    cfg = RLBenchConfig(samplers=("iid", "lattice"), group_sizes=(4, 8, 16), seeds=1)
    assert {(u.group_size, u.problems_per_step) for u in cfg.units()} == {(4, 32), (8, 16),
                                                                          (16, 8)}
    with pytest.raises(ValueError, match=r"multiple of every G .*\(e.g. 96\)"):
        RLBenchConfig(group_sizes=(16,), samples_per_step=90)
    assert RLBenchConfig(samples_per_step=None, group_sizes=(4,)).units()[0].problems_per_step \
        == 16


def test_cli_writes_the_curve_and_rejects_a_group_size_the_source_cannot_make(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "rl", "--sampler", "sobol", "-G", "6",
                              "--state", str(tmp_path / "x.state.pt")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    state = tmp_path / "rl" / "a.state.pt"
    res = runner.invoke(app, ["train", "rl", "--sampler", "arithmetic", "-G", "4",
                              "--problems-per-step", "2", "--steps", "2", "--eval-every", "1",
                              "--eval-problems", "4", "--state", str(state), "--threads", "1"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "rl" / "a.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[1]["sampler"] == "arithmetic" and rows[1]["group_size"] == "4"
    assert list(rows[1]) == RL_HEADER  # the same columns as bench rl's rl.csv


def test_cli_curve_is_written_at_every_evaluation_so_an_interrupted_run_keeps_it(tmp_path,
                                                                                 monkeypatch):
    clip, calls = torch.nn.utils.clip_grad_norm_, []

    def interrupt_third_update(*a, **k):  # Ctrl-C inside step 3, after step 2's evaluation
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", interrupt_third_update)
    state = tmp_path / "b.state.pt"
    args = ["train", "rl", "--sampler", "iid", "-G", "4", "--problems-per-step", "2", "--steps",
            "4", "--eval-every", "1", "--eval-problems", "4", "--state", str(state), "--threads",
            "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    rows = list(csv.DictReader(open(tmp_path / "b.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    assert CliRunner().invoke(app, args).exit_code == 0  # resumed to the end: the whole curve
    assert [r["step"] for r in csv.DictReader(open(tmp_path / "b.csv"))] == ["0", "1", "2", "3",
                                                                             "4"]
    (tmp_path / "b.csv").unlink()  # a rerun of a finished run trains nothing and writes it again
    assert CliRunner().invoke(app, args).exit_code == 0
    assert len(list(csv.DictReader(open(tmp_path / "b.csv")))) == 5


def test_bench_rl_quick_writes_csvs_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    from parasample.bench import rl as br

    cfg = br.RLBenchConfig.quick(samplers=("iid", "stratified"))
    summary = br.run_benchmark(cfg, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "rl.csv")))
    assert list(rows[0]) == br.RL_HEADER
    assert {(r["sampler"], r["seed"]) for r in rows} == {
        (s, str(i)) for s in ("iid", "stratified") for i in (0, 1)}
    assert [r["step"] for r in rows if r["sampler"] == "iid" and r["seed"] == "0"] == [
        "0", "1", "2"]
    assert [r["sampler"] for r in summary] == ["iid", "stratified"]
    assert all(r["seeds"] == 2 and 0 <= r["reached"] <= 2 for r in summary)
    assert (tmp_path / "rl.png").exists()
    before = (tmp_path / "rl.csv").read_text()
    import parasample.rl.grpo as grpo
    monkeypatch.setattr(grpo, "generate", lambda *a, **k: pytest.fail("trained again"))
    br.run_benchmark(cfg, tmp_path)
    assert (tmp_path / "rl.csv").read_text() == before


def test_a_finished_run_is_read_back_from_its_record_alone_and_another_config_is_refused(
        tmp_path, monkeypatch):
    """A sweep split over machines joins by copying the small run records (``runs/``): with
    no state file left, a rerun reads every finished run back and trains nothing."""
    import shutil

    from parasample.bench import rl as br

    cfg = br.RLBenchConfig.quick(samplers=("iid",))
    br.run_benchmark(cfg, tmp_path)
    before = (tmp_path / "rl.csv").read_text()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "iid-G4-seed0.json", "iid-G4-seed1.json"]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copytree(tmp_path / "runs", moved / "runs")
    import parasample.rl.grpo as grpo
    monkeypatch.setattr(grpo, "generate", lambda *a, **k: pytest.fail("trained again"))
    ticks = []
    br.run_benchmark(cfg, moved, progress=ticks.append)
    assert (moved / "rl.csv").read_text() == before
    assert ticks == [2 * cfg.run.steps]  # recorded runs count as done at once, before any runs
    assert not list((moved / "states").iterdir())
    other = replace(cfg, run=replace(cfg.run, lr=cfg.run.lr / 2))
    with pytest.raises(InputError, match="another training config"):
        br.run_benchmark(other, moved)


def test_summary_counts_steps_to_target_over_seeds():
    from parasample.bench.rl import summary_rows

    def row(seed, step, p1, zv="0.5"):
        return {"sampler": "iid", "group_size": "8", "seed": str(seed), "step": str(step),
                "zero_variance": zv if step else "", "heldout_pass1": str(p1),
                "elapsed_s": str(10 * step)}

    rows = [row(0, 0, 0.2), row(0, 25, 0.35), row(0, 50, 0.4),
            row(1, 0, 0.2), row(1, 25, 0.25), row(1, 50, 0.31),
            row(2, 0, 0.2), row(2, 25, 0.22), row(2, 50, 0.28)]
    (s,) = summary_rows(rows, target=0.3)
    assert s["reached"] == 2 and s["seeds"] == 3
    assert s["steps_to_target"] == 37.5 and s["steps_to_target_se"] == 12.5
    assert s["seconds_to_target"] == 375.0 and s["zero_variance"] == 0.5
    assert s["final_pass1"] == round((0.4 + 0.31 + 0.28) / 3, 4)
    assert s["paired_seeds"] == "" and s["steps_vs_iid"] == ""  # i.i.d. is the reference


def test_summary_compares_steps_to_target_with_iid_on_the_same_seeds():
    from parasample.bench.rl import paired_ratio_ci, summary_rows

    def run(sampler, seed, hit_step):  # evaluations every 60 steps, the target hit at hit_step
        return [{"sampler": sampler, "group_size": "8", "seed": str(seed), "step": str(t),
                 "zero_variance": "", "heldout_pass1": "0.35" if t >= hit_step else "0.2",
                 "elapsed_s": str(t)} for t in range(0, 481, 60)]

    iid_hits, arith_hits = [240, 300, 360, 600, 300], [120, 180, 240, 180, 600]
    rows = [r for seed, (a, b) in enumerate(zip(iid_hits, arith_hits, strict=True))
            for r in run("iid", seed, a) + run("arithmetic", seed, b)]
    iid, arith = summary_rows(rows, target=0.3)
    # seeds 3 (i.i.d. never reaches) and 4 (arithmetic never reaches) do not pair
    assert arith["paired_seeds"] == 3 and arith["reached"] == 4 and iid["reached"] == 4
    assert arith["steps_vs_iid"] == round(540 / 900, 3)
    assert arith["steps_vs_iid_low"] <= arith["steps_vs_iid"] <= arith["steps_vs_iid_high"]
    assert (arith["steps_vs_iid_low"], arith["steps_vs_iid_high"]) == paired_ratio_ci(
        [120, 180, 240], [240, 300, 360])[1:]  # the pairs by seed, resampled together
    assert paired_ratio_ci([60.0], [120.0]) == ("", "", "")  # one pair: no interval
    # every run ends at 0.35 except the two that never reach 0.3 (0.2): seed 3 (i.i.d.) and
    # seed 4 (arithmetic), so the paired differences are 0, 0, 0, +0.15, -0.15
    diffs = [0, 0, 0, 0.15, -0.15]
    assert arith["final_pass1_vs_iid"] == 0.0
    assert arith["final_pass1_vs_iid_se"] == round(statistics.stdev(diffs) / math.sqrt(5), 4)
    assert iid["final_pass1_vs_iid"] == ""


@pytest.mark.parametrize("args,message", [
    (["--target", "1.5"], "not in (0.0, 1.0]"),
    (["--target", "1"], "target=1.0"),
    (["--steps", "0"], "--steps"),
    (["-s", "sobol", "-G", "6"], "power-of-two"),
])
def test_bench_rl_bad_input(args, message, tmp_path):
    res = CliRunner().invoke(app, ["bench", "rl", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert message in " ".join(res.output.split()), res.output
