"""Every benchmark survives Ctrl-C: SIGINT at a random point, rerun with the same options, and
every CSV equals an uninterrupted run's, row for row (timing columns aside).

The benchmarks run as real subprocesses (``python -m parasample``) and receive a real SIGINT.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parasample.bench.csvlog import TIMING_COLUMNS, read_csv

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


LAST_OUTPUT: list[str] = []  # the last run's stdout and stderr


def _run(args: list[str], out: Path, anchor: str | None = None, stop_after: float | None = None
         ) -> tuple[float, float]:
    """Run ``parasample ARGS --out OUT``. Returns (seconds until the line containing ``anchor``
    was printed, or 0, seconds until the end). With ``stop_after``, SIGINT is sent that many
    seconds after the anchor line instead of letting the run finish."""
    cmd = [sys.executable, "-m", "parasample", *args, "--threads", "1", "--out", str(out)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ENV)
    t_anchor = 0.0 if anchor is None else None
    deadline = None if (stop_after is None or anchor is not None) else t0 + stop_after
    lines = []
    os.set_blocking(proc.stdout.fileno(), False)
    while proc.poll() is None:
        chunk = proc.stdout.readline()
        if chunk:
            lines.append(chunk)
            if t_anchor is None and anchor in chunk:
                t_anchor = time.monotonic() - t0
                if stop_after is not None:
                    deadline = time.monotonic() + stop_after
        else:
            time.sleep(0.02)
        if deadline is not None and time.monotonic() >= deadline:
            proc.send_signal(signal.SIGINT)
            deadline = None
    lines += proc.stdout.readlines()
    LAST_OUTPUT[:] = lines
    if stop_after is None:
        assert proc.returncode == 0, "".join(lines)
    else:
        assert proc.returncode in (0, 130), "".join(lines)  # finished first, or interrupted
        assert "Traceback" not in "".join(lines), "".join(lines)
    return (t_anchor or 0.0), time.monotonic() - t0


def _csvs(folder: Path) -> dict[str, list[dict]]:
    return {p.name: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                     for r in read_csv(p)] for p in sorted(folder.glob("*.csv"))}


def _check_resume(args, tmp_path, anchor=None, seed=0, rerun=True):
    t_anchor, t_end = _run(args, tmp_path / "ref", anchor)
    rng = random.Random(seed)
    delay = rng.uniform(0.05, 0.9) * (t_end - t_anchor)
    _run(args, tmp_path / "run", anchor, stop_after=delay)
    _run(args, tmp_path / "run", anchor)
    ref, got = _csvs(tmp_path / "ref"), _csvs(tmp_path / "run")
    assert list(got) == list(ref) and ref
    for name in ref:
        assert got[name] == ref[name], f"{name} differs after SIGINT at {delay:.1f} s"
    if rerun:  # a rerun of a finished run adds and changes nothing
        _run(args, tmp_path / "run", anchor)
        assert _csvs(tmp_path / "run") == ref


def test_bench_dllm_resumes_to_the_same_csvs(tiny_dllm, tmp_path):
    _check_resume(["bench", "dllm", "--model", str(tiny_dllm), "-n", "1", "--batch-size", "1",
                   "--passk-problems", "1", "--k-max", "2", "--spec-problems", "1",
                   "--paired-problems", "2"], tmp_path, seed=1)


def test_bench_passk_resumes_to_the_same_csvs(tmp_path):
    _check_resume(["bench", "passk", "--quick", "--add-problems", "0", "--skip-throughput"],
                  tmp_path, seed=2)


def test_bench_mcmc_resumes_to_the_same_csvs(tmp_path):
    _check_resume(["bench", "mcmc", "--quick", "--skip-lm"], tmp_path, seed=3)


def test_bench_rl_resumes_to_the_same_csvs(tmp_path):
    _check_resume(["bench", "rl", "--quick", "-s", "iid", "-s", "arithmetic"], tmp_path, seed=4)


def test_bench_align_resumes_to_the_same_csvs(tmp_path):
    _check_resume(["bench", "align", "--quick", "--skip-lm", "--toy-samples", "2048"],
                  tmp_path, seed=5)


@pytest.mark.slow
def test_bench_spec_resumes_to_the_same_csvs(tmp_path):
    _check_resume(["bench", "spec", "--quick", "--skip-lm"], tmp_path, seed=5)


def test_bench_mcmc_interrupted_in_the_smollm2_part_resumes_without_duplicates(tmp_path):
    """Issue 14: Ctrl-C while the SmolLM2 chains ran left duplicated trace and summary rows;
    issue 15: every rerun added one more `energy,iid` row (the resumed run looks that row up
    again, since it was written before the interruption)."""
    _check_resume(["bench", "mcmc", "--quick"], tmp_path, anchor="done: smollm2 iid", seed=4,
                  rerun=False)
    rows = read_csv(tmp_path / "run" / "smollm2.csv")
    assert len(rows) == 6 and len({(r["experiment"], r["sampler"]) for r in rows}) == 6
    # issue 15: every SmolLM2 load printed transformers' GGUF de-quantizing bar on stderr
    assert not any("de-quantizing" in ln for ln in LAST_OUTPUT)


def test_ctrl_c_during_an_import_is_delivered_once_the_import_has_finished(tmp_path, monkeypatch):
    """An import interrupted half-way leaves a broken module behind (numpy's recursed until
    RecursionError in CI): the CLI's SIGINT handler delivers Ctrl-C again after the import."""
    from parasample.__main__ import _sigint

    (tmp_path / "slow_to_import.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "for _ in range(20):\n"
        "    time.sleep(0.005)\n"
        "COMPLETE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = signal.signal(signal.SIGINT, _sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            import slow_to_import  # noqa: F401
            time.sleep(10)  # the interrupt arrives here, 50 ms after it was sent
        assert sys.modules["slow_to_import"].COMPLETE
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.modules.pop("slow_to_import", None)
