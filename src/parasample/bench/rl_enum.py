"""``parasample bench rl --part enum``: GRPO with i.i.d. and correlated groups on the exactly
enumerable task (:mod:`parasample.rl.enumerable`), with no evaluation noise.

Per (sampler, G), ``seeds`` independent GRPO runs from the same start (trained at once), the
exact expected reward after every step. Outputs (one unit per (sampler, G), resumable):

- ``enum_runs.csv``: per run, the first step whose exact reward reaches each target fraction of
  the reachable reward (``inf``: not within the budget), the reward after the budget and the
  run's mean zero-variance fraction;
- ``enum_curves.csv``: per step, the mean exact reward over seeds and its 10% / 90% quantiles;
- ``enum_gradient.csv``: per (sampler, G), the error of one group's GRPO update against the
  exact policy gradient at the start policy, split into variance and bias
  (:func:`parasample.rl.enumerable.gradient_study`);
- ``enum_summary.csv``: per (sampler, G), the median steps to each target with a 95% bootstrap
  interval over seeds and its ratio to i.i.d.'s median, the mean reward after the budget (SE)
  and the zero-variance fraction;
- ``enum.png``: learning curves with their bands, and the gradient's relative MSE against G.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from parasample.bench.csvlog import ResumableCSV, mean_se_cells, read_csv, write_csv
from parasample.errors import InputError
from parasample.rl.enumerable import EnumGRPOConfig, EnumTask, gradient_study, train_enum

__all__ = ["EnumBenchConfig", "RUNS_HEADER", "CURVES_HEADER", "GRADIENT_HEADER",
           "SUMMARY_HEADER", "run_enum", "summary_rows", "enum_plot"]

RUNS_HEADER = ["sampler", "group_size", "seed", "steps_to_50", "steps_to_90", "final_reward",
               "zero_variance"]
CURVES_HEADER = ["sampler", "group_size", "step", "reward_mean", "reward_q10", "reward_q90"]
GRADIENT_HEADER = ["sampler", "group_size", "groups", "mse", "variance", "bias2",
                   "relative_mse", "relative_variance", "relative_bias2", "cosine",
                   "zero_variance", "scale"]
SUMMARY_HEADER = ["sampler", "group_size", "seeds", "start_reward",
                  "reached_50", "median_steps_50", "ci_low_50", "ci_high_50", "vs_iid_50",
                  "reached_90", "median_steps_90", "ci_low_90", "ci_high_90", "vs_iid_90",
                  "final_reward", "final_reward_se", "zero_variance", "relative_mse"]
TARGETS = (0.5, 0.9)  # fractions of the reachable reward (1: some sequence sums to the target)


@dataclass(frozen=True)
class EnumBenchConfig:
    """Every sampler x G, ``run.seeds`` runs each; the gradient study draws ``gradient_groups``
    groups per cell."""

    samplers: tuple[str, ...] = ("iid", "arithmetic", "stratified", "lattice", "antithetic",
                                 "sobol")
    group_sizes: tuple[int, ...] = (4, 8, 16)
    run: EnumGRPOConfig = field(default_factory=EnumGRPOConfig)
    gradient_groups: int = 8192

    def __post_init__(self):
        if not self.samplers or not self.group_sizes:
            raise InputError("give at least one sampler and one group size.")
        if self.gradient_groups < 2:
            raise InputError(f"gradient_groups={self.gradient_groups} must be >= 2.")
        for s in self.samplers:
            for g in self.group_sizes:
                self.unit(s, g)  # every cell's config is valid before any runs

    def unit(self, sampler: str, G: int) -> EnumGRPOConfig:
        return replace(self.run, sampler=sampler, group_size=G)

    @classmethod
    def quick(cls, **kw) -> EnumBenchConfig:
        """Seconds: 4 seeds of 10 steps, G = 4, 256 gradient groups."""
        return cls(**{"group_sizes": (4,), "gradient_groups": 256,
                      "run": EnumGRPOConfig(steps=10, seeds=4, samples_per_step=16), **kw})


def _first_at(curve: torch.Tensor, level: float) -> float:
    """First step whose reward reaches ``level`` (``curve [steps+1]``), inf if none."""
    hit = (curve >= level).nonzero()
    return float(hit[0, 0]) if len(hit) else math.inf


def run_enum(cfg: EnumBenchConfig, out: Path, progress=None) -> list[dict]:
    """Run (or resume) every cell; returns the summary rows. ``progress(n)`` after each of a
    cell's steps and its gradient study (``steps + 1`` ticks per cell)."""
    out.mkdir(parents=True, exist_ok=True)
    runs = ResumableCSV(out / "enum_runs.csv", RUNS_HEADER, ["sampler", "group_size", "seed"])
    curves = ResumableCSV(out / "enum_curves.csv", CURVES_HEADER,
                          ["sampler", "group_size", "step"])
    grads = ResumableCSV(out / "enum_gradient.csv", GRADIENT_HEADER, ["sampler", "group_size"])
    for G in cfg.group_sizes:
        for sampler in cfg.samplers:
            unit = cfg.unit(sampler, G)
            key = {"sampler": sampler, "group_size": G}
            if runs.done({**key, "seed": unit.seed + unit.seeds - 1}) is None:
                res = train_enum(unit, progress=progress)
                reward = res["reward"]  # [steps+1, S]
                q = torch.quantile(reward, torch.tensor([0.1, 0.9], dtype=reward.dtype), dim=1)
                for t in range(reward.shape[0]):
                    row = {**key, "step": t}
                    if curves.done(row) is None:
                        curves.append({**row, "reward_mean": round(float(reward[t].mean()), 5),
                                       "reward_q10": round(float(q[0, t]), 5),
                                       "reward_q90": round(float(q[1, t]), 5)})
                zero = res["zero_variance"].mean(0)  # [S]
                for s in range(unit.seeds):
                    row = {**key, "seed": unit.seed + s}
                    if runs.done(row) is None:
                        runs.append({**row, "steps_to_50": _first_at(reward[:, s], TARGETS[0]),
                                     "steps_to_90": _first_at(reward[:, s], TARGETS[1]),
                                     "final_reward": round(float(reward[-1, s]), 5),
                                     "zero_variance": round(float(zero[s]), 5)})
            elif progress:
                progress(unit.steps)
            if grads.done(key) is None:
                study = gradient_study(unit.task, sampler, G, cfg.gradient_groups,
                                       seed=unit.seed)
                grads.append({**key, "groups": cfg.gradient_groups,
                              **{k: f"{v:.6g}" for k, v in study.items()}})
            if progress:
                progress(1)
            summary = summary_rows(read_csv(out / "enum_runs.csv"), read_csv(
                out / "enum_gradient.csv"), unit.task)
            write_csv(out / "enum_summary.csv", SUMMARY_HEADER, summary)
            enum_plot(out)
    return summary


def _median_ci(xs: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Median of ``xs`` (inf: a run that did not reach) and its 95% percentile bootstrap
    interval (scipy.stats.bootstrap, 2000 resamples, fixed seed)."""
    import numpy as np
    from scipy.stats import bootstrap

    x = np.asarray(xs, dtype=float)
    if len(x) < 2 or np.all(x == x[0]):
        return float(np.median(x)), float(np.median(x)), float(np.median(x))
    ci = bootstrap((x,), np.median, confidence_level=0.95, n_resamples=2000,
                   method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return float(np.median(x)), float(ci.low), float(ci.high)


def summary_rows(runs: list[dict], grads: list[dict], task: EnumTask) -> list[dict]:
    """Per (sampler, G) of ``enum_runs.csv`` rows: medians with bootstrap intervals, ratios to
    i.i.d.'s median (blank where i.i.d. is not in the sweep or its median is inf)."""
    from parasample.rl.enumerable import TabularPolicy

    with torch.no_grad():
        X = task.sequences()
        start = float((TabularPolicy(task.start_table(1)).sequence_logprobs(X)[0].exp()
                       * task.reward(X)).sum())
    cells = list(dict.fromkeys((r["sampler"], int(r["group_size"])) for r in runs))
    out = []
    for sampler, G in cells:
        rows = [r for r in runs if (r["sampler"], int(r["group_size"])) == (sampler, G)]
        row = {"sampler": sampler, "group_size": G, "seeds": len(rows),
               "start_reward": round(start, 4)}
        for frac in TARGETS:
            tag = f"{round(100 * frac)}"
            steps = [float(r[f"steps_to_{tag}"]) for r in rows]
            med, lo, hi = _median_ci(steps)
            row.update({f"reached_{tag}": sum(math.isfinite(s) for s in steps),
                        f"median_steps_{tag}": med, f"ci_low_{tag}": lo, f"ci_high_{tag}": hi})
        row["final_reward"], row["final_reward_se"] = mean_se_cells(
            [float(r["final_reward"]) for r in rows])
        row["zero_variance"] = round(statistics.fmean(float(r["zero_variance"]) for r in rows), 4)
        grad = next((g for g in grads if (g["sampler"], int(g["group_size"])) == (sampler, G)),
                    None)
        row["relative_mse"] = grad["relative_mse"] if grad else ""
        out.append(row)
    for row in out:
        iid = next((r for r in out if r["sampler"] == "iid" and
                    r["group_size"] == row["group_size"]), None)
        for frac in TARGETS:
            tag = f"{round(100 * frac)}"
            base = iid[f"median_steps_{tag}"] if iid else math.inf
            ok = math.isfinite(base) and base > 0
            row[f"vs_iid_{tag}"] = round(row[f"median_steps_{tag}"] / base, 3) if ok else ""
    return out


def enum_plot(out: Path) -> Path | None:
    """``enum.png``: mean exact reward against step with its 10-90% band, one panel per G, one
    line per sampler; last panel: the GRPO gradient's relative MSE against G per sampler."""
    from parasample.bench.plots import SAMPLER_STYLE, plt, save_figure

    curves, grads = read_csv(out / "enum_curves.csv"), read_csv(out / "enum_gradient.csv")
    sizes = list(dict.fromkeys(int(r["group_size"]) for r in curves))
    if not sizes:
        return None
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(4.6 * (len(sizes) + 1), 3.8),
                             squeeze=False)
    for ax, G in zip(axes[0], sizes, strict=False):
        for sampler in dict.fromkeys(r["sampler"] for r in curves):
            rows = [r for r in curves if r["sampler"] == sampler and int(r["group_size"]) == G]
            if not rows:
                continue
            step = [int(r["step"]) for r in rows]
            color, style = SAMPLER_STYLE.get(sampler, ("gray", "x-"))
            ax.plot(step, [float(r["reward_mean"]) for r in rows], style[-1], color=color,
                    label=sampler)
            ax.fill_between(step, [float(r["reward_q10"]) for r in rows],
                            [float(r["reward_q90"]) for r in rows], color=color, alpha=0.1)
        ax.set_xlabel("GRPO step")
        ax.set_ylabel("exact expected reward")
        ax.set_title(f"G = {G} (band: 10-90% of seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    for sampler in dict.fromkeys(r["sampler"] for r in grads):
        rows = sorted((r for r in grads if r["sampler"] == sampler),
                      key=lambda r: int(r["group_size"]))
        color, style = SAMPLER_STYLE.get(sampler, ("gray", "x-"))
        ax.plot([int(r["group_size"]) for r in rows], [float(r["relative_mse"]) for r in rows],
                style, color=color, label=sampler, markersize=4)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("group size G")
    ax.set_ylabel("relative MSE of one group's update")
    ax.set_title("GRPO gradient vs exact (start policy)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out / "enum.png")
