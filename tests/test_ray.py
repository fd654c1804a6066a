"""Sweeps on Ray: ``--ray local`` (a Ray instance of 2 CPUs started by the command) writes the
same CSV rows as the single-process run; an address that does not answer fails in seconds."""

from __future__ import annotations

import os
import time

import pytest
from typer.testing import CliRunner

from parasample.cli import app
from tests.test_interrupt import _csvs, _run

pytest.importorskip("ray")


def test_bench_dllm_on_local_ray_writes_the_rows_of_the_plain_run(tiny_dllm, tmp_path):
    # the Ray units are the sweep's configurations and the pass@k samplers
    args = ["bench", "dllm", "--model", str(tiny_dllm), "-n", "2", "--batch-size", "1",
            "--passk-problems", "1", "--k-max", "2", "--part", "sweep", "--part", "passk"]
    _run(args, tmp_path / "plain")
    _run([*args, "--ray", "local"], tmp_path / "ray")
    plain, ray = _csvs(tmp_path / "plain"), _csvs(tmp_path / "ray")
    assert list(plain) == ["passk.csv", "results.csv", "runs.csv"] and ray == plain


def test_bench_passk_on_local_ray_writes_the_rows_of_the_plain_run(tmp_path):
    args = ["bench", "passk", "--quick", "--add-problems", "0", "--skip-throughput"]
    _run(args, tmp_path / "plain")
    _run([*args, "--ray", "local"], tmp_path / "ray")
    assert _csvs(tmp_path / "ray") == _csvs(tmp_path / "plain")


def test_bench_mcmc_on_local_ray_writes_the_rows_of_the_plain_run(tmp_path):
    args = ["bench", "mcmc", "--quick", "--skip-lm"]
    _run(args, tmp_path / "plain")
    _run([*args, "--ray", "local"], tmp_path / "ray")
    assert _csvs(tmp_path / "ray") == _csvs(tmp_path / "plain")


def test_a_ray_address_that_does_not_answer_fails_fast_and_writes_nothing(tmp_path):
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["bench", "dllm", "--ray", "127.0.0.1:1", "--out",
                                      str(tmp_path / "out")])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "no Ray cluster answers" in lines[0]
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "out").exists()


def test_bench_rl_on_local_ray_writes_the_rows_of_the_plain_run(tmp_path):
    args = ["bench", "rl", "--quick", "--part", "arith", "-s", "iid", "-s", "stratified"]
    _run(args, tmp_path / "plain")
    _run([*args, "--ray", "local"], tmp_path / "ray")
    plain = _csvs(tmp_path / "plain")
    assert list(plain) == ["rl.csv", "summary.csv"] and _csvs(tmp_path / "ray") == plain


def test_an_interrupted_sweep_stops_a_running_unit_with_a_keyboard_interrupt_first(tmp_path):
    """Ctrl-C in the driver reaches a unit running on a worker as a KeyboardInterrupt (what a
    plain run's unit gets; a training run then finishes its step and saves its state), not as a
    kill; the units not started never start."""
    from parasample.integrations.ray import RayExecutor

    started, stopped, third = tmp_path / "started", tmp_path / "stopped", tmp_path / "third"

    def unit(i):
        if i == 0:
            return i
        if i == 2:
            third.touch()
            return i
        started.touch()
        try:
            for _ in range(1200):  # Python work between calls, as a training loop
                time.sleep(0.1)
        except KeyboardInterrupt:
            stopped.touch()
            raise
        return i

    executor = RayExecutor("local", num_cpus=1)
    try:
        results = executor.map(unit, [(0,), (1,), (2,)])
        assert next(results) == 0
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists()
        with pytest.raises(KeyboardInterrupt):
            results.throw(KeyboardInterrupt)
        assert stopped.exists() and not third.exists()
    finally:
        executor.close()


def test_units_on_ray_report_their_progress_ticks_and_log_lines_to_the_driver_while_they_run(
        tmp_path):
    """``map(..., progress=..., log=...)``: every tick and log line of every unit reaches the
    driver (before the unit's result), a running unit's reports arrive while it still runs, and
    the results keep their order; the local executor calls the same function with the driver's
    callbacks."""
    from parasample.bench.executor import LocalExecutor
    from parasample.integrations.ray import RayExecutor

    release = tmp_path / "release"

    def unit(i, progress=None, log=None):
        for j in range(i):
            progress(1)
            log(f"unit {i}: tick {j}")
        if i == 3:  # holds until the driver has seen its ticks and lines
            deadline = time.monotonic() + 60
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return i if release.exists() else -1
        return i

    seen, lines = [], []

    def progress(n):
        seen.append(n)
        if sum(seen) >= 3 and len(lines) >= 3:
            release.touch()

    executor = RayExecutor("local", num_cpus=1)
    executor.poll_s = 0.1
    try:
        # 3, not -1: the driver saw the first unit's reports while it ran, and released it
        assert list(executor.map(unit, [(3,), (2,), (0,)], progress=progress,
                                 log=lines.append)) == [3, 2, 0]
        assert sum(seen) == 5
        assert lines == [f"unit {i}: tick {j}" for i in (3, 2) for j in range(i)]
    finally:
        executor.close()
    local, local_lines = [], []
    assert list(LocalExecutor().map(unit, [(1,), (2,)], progress=local.append,
                                    log=local_lines.append)) == [1, 2]
    assert local == [1, 1, 1] and local_lines == ["unit 1: tick 0", "unit 2: tick 0",
                                                  "unit 2: tick 1"]


def test_units_start_in_sweep_order_even_when_one_is_retried(tmp_path):
    """Ray starts a retried task (its worker died: killed by Ray's memory monitor, here an
    exit) behind every queued one; the executor submits one unit per CPU, so the retry runs
    before the later units and an interrupted sweep has run a prefix of its units."""
    from parasample.integrations.ray import RayExecutor

    starts, crashed = tmp_path / "starts", tmp_path / "crashed"

    def unit(i):
        with open(starts, "a") as f:
            f.write(f"{i}\n")
        if i == 0 and not crashed.exists():
            crashed.touch()
            os._exit(1)  # the worker dies; Ray retries the task
        return i

    executor = RayExecutor("local", num_cpus=1)
    try:
        assert list(executor.map(unit, [(i,) for i in range(4)])) == [0, 1, 2, 3]
    finally:
        executor.close()
    assert starts.read_text().split() == ["0", "0", "1", "2", "3"]  # all-at-once: 0 1 2 3 0
