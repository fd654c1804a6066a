"""``parasample bench rl``: GRPO with i.i.d. against correlated groups (seed 003's RL claim).

Every (G, sampler, seed) is one :func:`parasample.rl.train_rl` run with the same optimiser,
batch and seed for every sampler; each keeps its own state file under ``states/`` (saved at
every evaluation and on Ctrl-C), so an interrupted sweep resumes where it stopped. A finished
run also leaves a record under ``runs/`` (its config and curve, a few kB: :func:`write_record`),
from which a rerun reads it back: a sweep split over machines (``--seed 0 --seeds 4`` on one,
``--seed 4 --seeds 4`` on another) is joined by copying one's ``runs/`` into the other's and
rerunning with ``--seeds 8``; the multi-MB state files need not travel.

Outputs, rebuilt after each unit: ``rl.csv`` (one row per evaluation of every run),
``summary.csv`` (per sampler and G: steps and seconds to the target held-out pass@1, the
zero-variance fraction, the final pass@1, with standard errors over seeds, and the steps to
the target against i.i.d.'s on the same seeds with a bootstrap interval) and ``rl.png``
(held-out pass@1 against step, one line per sampler, a band of one SE over seeds).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from parasample.bench.csvlog import mean_se_cells, write_csv
from parasample.bench.executor import LocalExecutor
from parasample.errors import InputError
from parasample.files import atomic_path
from parasample.rl import GRPOConfig

__all__ = ["RLBenchConfig", "RL_HEADER", "SUMMARY_HEADER", "curve_rows", "read_record",
           "run_benchmark", "run_unit", "summary_rows", "unit_name", "write_record"]

RL_HEADER = ["sampler", "group_size", "seed", "step", "reward", "zero_variance", "heldout_pass1",
             "heldout_passG", "elapsed_s"]
SUMMARY_HEADER = ["sampler", "group_size", "target", "seeds", "reached", "steps_to_target",
                  "steps_to_target_se", "seconds_to_target", "seconds_to_target_se",
                  "zero_variance", "zero_variance_se", "final_pass1", "final_pass1_se",
                  "paired_seeds", "steps_vs_iid", "steps_vs_iid_low", "steps_vs_iid_high",
                  "final_pass1_vs_iid", "final_pass1_vs_iid_se"]


@dataclass(frozen=True)
class RLBenchConfig:
    """The sweep: every sampler x group size x seed, one GRPO run each (see
    :class:`~parasample.rl.GRPOConfig` for the run's own settings). Every run draws
    ``samples_per_step`` samples per step, ``samples_per_step / G`` problems of G, so each G
    costs the same per step; ``None`` keeps ``run.problems_per_step`` problems for every G."""

    samplers: tuple[str, ...] = ("iid", "arithmetic", "stratified", "lattice")
    group_sizes: tuple[int, ...] = (4, 8, 16)
    seeds: int = 3
    seed: int = 0
    target: float = 0.3
    samples_per_step: int | None = 128
    run: GRPOConfig = GRPOConfig(steps=30, eval_every=15, eval_problems=128)

    def __post_init__(self):
        if not 0 < self.target < 1:
            raise InputError(f"target={self.target}: a target held-out pass@1 lies in (0, 1).")
        if self.seeds < 1:
            raise InputError(f"seeds={self.seeds} must be >= 1.")
        if not self.samplers or not self.group_sizes:
            raise InputError("give at least one sampler and one group size.")
        for s in self.samplers:
            for g in self.group_sizes:  # the source's own check (G of a Sobol net, ...) first
                replace(self.run, sampler=s, group_size=g)
        for g in self.group_sizes:
            if self.samples_per_step is not None and (
                    self.samples_per_step % g or self.samples_per_step < 2 * g):
                raise InputError(f"samples per step {self.samples_per_step} with G={g}: give a "
                                 f"multiple of every G of at least 2 G (e.g. "
                                 f"{max(2, -(-self.samples_per_step // g)) * g}), so each step "
                                 "has whole groups.")
        for s in self.samplers:
            for g in self.group_sizes:
                self.unit(s, g, self.seed)  # every unit's config is valid before any runs

    def unit(self, sampler: str, group_size: int, seed: int) -> GRPOConfig:
        problems = (self.run.problems_per_step if self.samples_per_step is None
                    else self.samples_per_step // group_size)
        return replace(self.run, sampler=sampler, group_size=group_size, seed=seed,
                       problems_per_step=problems)

    def units(self) -> list[GRPOConfig]:
        """Seed by seed (every sampler and G of a seed before the next seed), so that an
        interrupted sweep holds paired runs: the same seeds for every sampler."""
        return [self.unit(s, g, self.seed + i) for i in range(self.seeds)
                for g in self.group_sizes for s in self.samplers]

    @classmethod
    def quick(cls, **kw) -> RLBenchConfig:
        """Seconds: two seeds of 2 steps at G = 4 on 2 problems."""
        run = GRPOConfig(group_size=4, problems_per_step=2, steps=2, eval_every=1,
                         eval_problems=8, eval_samples=2)
        return cls(**{"group_sizes": (4,), "seeds": 2, "samples_per_step": 8, "run": run,
                      **kw})


def curve_rows(cfg: GRPOConfig, state: dict) -> list[dict]:
    """``rl.csv`` rows of one run: its ``history`` (one row per evaluation) with its identity."""
    G = cfg.group_size
    return [{"sampler": cfg.sampler, "group_size": G, "seed": cfg.seed, "step": h["step"],
             "reward": h.get("reward", ""), "zero_variance": h.get("zero_variance", ""),
             "heldout_pass1": h["heldout_pass1"], "heldout_passG": h[f"heldout_pass{G}"],
             "elapsed_s": h["elapsed_s"]} for h in state["history"]]


def summary_rows(rows: list[dict], target: float) -> list[dict]:
    """Per (sampler, G): over seeds, the first evaluated step (and its seconds) whose held-out
    pass@1 reaches ``target`` (mean +- SE over the seeds that reach it; ``reached`` counts them),
    the mean zero-variance fraction of the run's steps and the last evaluation's pass@1. Each
    sampler's steps to the target against i.i.d.'s at the same G, paired by seed (the same
    start, problems and optimiser): over the ``paired_seeds`` that both runs reach, the ratio of
    mean steps and its 95% bootstrap interval over those seeds (:func:`paired_ratio_ci`; blank
    for i.i.d. itself and where fewer than two seeds pair); and the final pass@1 minus
    i.i.d.'s, mean +- SE of the paired differences over the seeds both have run."""
    out, hits, finals = [], {}, {}
    keys = list(dict.fromkeys((r["sampler"], int(r["group_size"])) for r in rows))
    for sampler, G in keys:
        runs: dict[int, list[dict]] = {}
        for r in rows:
            if (r["sampler"], int(r["group_size"])) == (sampler, G):
                runs.setdefault(int(r["seed"]), []).append(r)
        steps, secs, zero, final = [], [], [], []
        for seed, hist in runs.items():
            hit = next((h for h in hist if float(h["heldout_pass1"]) >= target), None)
            if hit is not None:
                steps.append(float(hit["step"]))
                secs.append(float(hit["elapsed_s"]))
                hits[sampler, G, seed] = float(hit["step"])
            zv = [float(h["zero_variance"]) for h in hist if h["zero_variance"] != ""]
            if zv:
                zero.append(statistics.fmean(zv))
            final.append(float(hist[-1]["heldout_pass1"]))
            finals[sampler, G, seed] = final[-1]
        row = {"sampler": sampler, "group_size": G, "target": target, "seeds": len(runs),
               "reached": len(steps)}
        for name, xs in (("steps_to_target", steps), ("seconds_to_target", secs),
                         ("zero_variance", zero), ("final_pass1", final)):
            row[name], row[f"{name}_se"] = mean_se_cells(xs)
        out.append(row)
    for row in out:
        sampler, G = row["sampler"], row["group_size"]
        paired = sorted(seed for (s, g, seed) in hits if (s, g) == (sampler, G)
                        and ("iid", G, seed) in hits)
        row["paired_seeds"] = len(paired) if sampler != "iid" else ""
        ratio = ("", "", "") if sampler == "iid" else paired_ratio_ci(
            [hits[sampler, G, s] for s in paired], [hits["iid", G, s] for s in paired])
        row["steps_vs_iid"], row["steps_vs_iid_low"], row["steps_vs_iid_high"] = ratio
        both = [seed for (s, g, seed) in finals if (s, g) == (sampler, G)
                and ("iid", G, seed) in finals and s != "iid"]
        row["final_pass1_vs_iid"], row["final_pass1_vs_iid_se"] = mean_se_cells(
            [finals[sampler, G, s] - finals["iid", G, s] for s in both])
    return out


def paired_ratio_ci(a: list[float], b: list[float], seed: int = 0) -> tuple:
    """``mean(a) / mean(b)`` over paired observations and its 95% percentile bootstrap interval
    (scipy.stats.bootstrap resampling the pairs, 2000 resamples, fixed seed), rounded to 3
    places; blanks for fewer than two pairs."""
    import numpy as np
    from scipy.stats import bootstrap

    if len(a) < 2 or not sum(b):
        return "", "", ""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    point = float(x.mean() / y.mean())
    if np.all(x == x[0]) and np.all(y == y[0]):  # no spread to resample
        return round(point, 3), round(point, 3), round(point, 3)
    ci = bootstrap((x, y), lambda u, v, axis: u.mean(axis) / v.mean(axis), paired=True,
                   vectorized=True, confidence_level=0.95, n_resamples=2000,
                   method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return round(point, 3), round(float(ci.low), 3), round(float(ci.high), 3)


def unit_name(unit: GRPOConfig) -> str:
    """The run's name in the sweep's folders: ``SAMPLER-GG-seedS``."""
    return f"{unit.sampler}-G{unit.group_size}-seed{unit.seed}"


def read_record(path: Path, unit: GRPOConfig) -> list[dict] | None:
    """The ``rl.csv`` rows recorded for a finished ``unit`` at ``path`` (``runs/NAME.json``),
    or None where there is no record; a record of another training config is refused, as a
    state file is."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved.get("train_config") != asdict(unit):
        raise InputError(f"{path} records a run with another training config; delete it or use "
                         "another --out to start afresh.")
    return saved["rows"]


def write_record(path: Path, unit: GRPOConfig, rows: list[dict]) -> None:
    """Record a finished run (its training config and ``rl.csv`` rows, a few kB) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"train_config": asdict(unit), "rows": rows}, indent=1) + "\n")


def run_unit(unit: GRPOConfig, state_path: Path | str, device: str = "cpu", autocast=None,
             progress=None, log=None) -> list[dict]:
    """One run of the sweep (resumed from ``state_path`` if it exists): its ``rl.csv`` rows.
    Module-level, so that a Ray worker can run it."""
    from parasample.rl import train_rl

    return curve_rows(unit, train_rl(unit, Path(state_path), progress=progress, log=log,
                                     device=device, autocast=autocast))


def run_benchmark(cfg: RLBenchConfig, out: Path, *, progress=None, log=None, device="cpu",
                  autocast=None, executor=None) -> list[dict]:
    """Run (or resume) every unit, rewriting the CSVs and the plot after each; returns the
    summary rows. ``progress(steps)`` is called after every optimiser step and ``log(line)``
    with each evaluation, also of the runs on an ``executor``'s workers (e.g. Ray workers,
    which write the same state files, so on one machine an interrupted sweep resumes either
    way). The driver records every finished run under ``runs/`` and reads a recorded run back
    instead of running it, so records work across a cluster too."""
    from parasample.bench.plots import rl_plot

    out.mkdir(parents=True, exist_ok=True)
    (out / "states").mkdir(exist_ok=True)
    units = cfg.units()
    records = [out / "runs" / f"{unit_name(u)}.json" for u in units]
    recorded = [read_record(r, u) for u, r in zip(units, records, strict=True)]
    todo = [i for i, r in enumerate(recorded) if r is None]
    done = sum(u.steps for u, r in zip(units, recorded, strict=True) if r is not None)
    if progress and done:  # recorded runs are done from the start: the time left is the rest's
        progress(done)
    # a Ray worker's ticks and log lines stream back to the driver while it runs
    results = iter((executor or LocalExecutor()).map(
        _ticking, [(units[i], str(out / "states" / f"{unit_name(units[i])}.state.pt"),
                    str(device), autocast) for i in todo],
        progress=progress, log=log))
    rows: list[dict] = []
    for unit, record, unit_rows in zip(units, records, recorded, strict=True):
        if unit_rows is None:
            unit_rows = next(results)
            write_record(record, unit, unit_rows)
        rows += unit_rows
        write_csv(out / "rl.csv", RL_HEADER, rows)
        summary = summary_rows(rows, cfg.target)
        write_csv(out / "summary.csv", SUMMARY_HEADER, summary)
        rl_plot(out)
    return summary


def _ticking(unit: GRPOConfig, path: Path | str, device, autocast, progress=None,
             log=None) -> list[dict]:
    """:func:`run_unit` with a ``progress(n)`` tick per optimiser step (in this process or a
    Ray worker); a finished unit read back ticks its steps at once."""
    name, done = Path(path).name.removesuffix(".state.pt"), [0]

    def tick(step, total, metrics):
        if progress:
            progress(step - done[0])
        done[0] = step

    rows = run_unit(unit, path, device, autocast, progress=tick,
                    log=(lambda m: log(f"{name}: {m}")) if log else None)
    if progress and done[0] < unit.steps:  # a finished unit read back
        progress(unit.steps - done[0])
    return rows
