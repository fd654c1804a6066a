"""``parasample bench rl``: GRPO with i.i.d. against correlated groups (seed 003)."""

from __future__ import annotations

from enum import StrEnum

import typer

from parasample.cli.common import (
    BenchRun,
    bench_options,
    config,
    console,
    eval_opts,
    explicit,
    greater_than,
    group_size_opt,
    grpo_lr_opt,
    loss_average_opt,
    tracked,
    updates_opt,
    wrote,
)
from parasample.cli.sample import Sampler

__all__ = ["bench_rl"]

EVAL = eval_opts(every=15, problems=128)


class Part(StrEnum):
    enum = "enum"
    arith = "arith"


@bench_options("rl", quick="G = 4, 2 seeds of 2 steps on 2 problems; the enumerable part 4 "
               "seeds of 10 steps; seconds", seed="the first run (the others follow)", ray=True)
def bench_rl(
    ctx: typer.Context,
    run: BenchRun,
    samplers: list[Sampler] = typer.Option(["iid", "arithmetic", "stratified", "lattice"],
                                           "--sampler", "-s", help="Group sources to compare "
                                           "(repeat the option)."),
    group_sizes: list[int] = group_size_opt([4, 8, 16]),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per (sampler, G): --seed, "
                              "--seed + 1, ..."),
    steps: int = typer.Option(30, "--steps", min=1, help="GRPO steps per run (about 1 s each "
                              "at 128 samples on 2 cores)."),
    samples: int = typer.Option(128, "--samples-per-step", min=1, help="Samples per step, the "
                                "same for every G: samples / G problems of G samples each (a "
                                "multiple of every G)."),
    updates: int = updates_opt(),
    loss_average: str = loss_average_opt(),
    lr: float = grpo_lr_opt("the same for every sampler; 1e-4 collapses the shipped model"),
    eval_every: int = EVAL[0],
    eval_problems: int = EVAL[1],
    eval_samples: int = EVAL[2],
    target: float = typer.Option(0.3, "--target", callback=greater_than(0.0, 1.0), help="Target "
                                 "held-out pass@1 in (0, 1) for steps and seconds to target (the "
                                 "shipped model starts at 0.21)."),
    parts: list[Part] = typer.Option(list(Part), "--part", help="Parts to run, repeatable: "
                                     "enum (the exactly enumerable task: exact rewards, 64 "
                                     "seeds per cell, about a minute per cell) and arith (the "
                                     "shipped model on arithmetic chains, the options above)."),
    enum_samplers: list[Sampler] = typer.Option(
        ["iid", "arithmetic", "stratified", "lattice", "antithetic", "sobol"], "--enum-sampler",
        help="Group sources of the enumerable part (repeatable)."),
    enum_seeds: int = typer.Option(64, "--enum-seeds", min=2, help="Independent runs per "
                                   "(sampler, G) of the enumerable part."),
    enum_steps: int = typer.Option(150, "--enum-steps", min=1, help="GRPO steps per run of "
                                   "the enumerable part."),
    enum_samples: int = typer.Option(32, "--enum-samples-per-step", min=2, help="Samples per "
                                     "step of the enumerable part (a multiple of every G)."),
    enum_lr: float = typer.Option(0.05, "--enum-lr", callback=greater_than(0.0, 1.0),
                                  help="AdamW peak learning rate of the enumerable part's "
                                  "logit table."),
    gradient_groups: int = typer.Option(8192, "--gradient-groups", min=2, help="Groups per "
                                        "(sampler, G) for the gradient error at the start "
                                        "policy."),
):
    """Measures GRPO with i.i.d. against correlated groups: steps to a target, gradient error.

    GRPO with groups drawn i.i.d. or correlated: steps to a target on an exactly
    enumerable task, and held-out pass@1 on the shipped small AR model.

    enum part: a tabular policy over 4^5 digit strings, reward 1 when they sum to 9 (start
    0.086, reachable 1); the exact expected reward after every step of 64 runs per (sampler,
    G), steps to 50% / 90% of it (median, bootstrap interval, ratio to i.i.d.), and the error
    of one group's GRPO update against the exact policy gradient (variance and bias). Writes
    enum_runs.csv, enum_curves.csv, enum_gradient.csv, enum_summary.csv and enum.png.

    arith part: held-out pass@1 against step, zero-variance groups, steps and seconds to a
    target pass@1 over seeds. Writes rl.csv, summary.csv and rl.png; every run keeps its state
    (states/), so a rerun resumes, and a finished run leaves a small record (runs/) that a rerun
    reads back: to join a sweep split over machines (--seed 0 --seeds 4 here, --seed 4 --seeds
    4 there), copy one's runs/ into the other's --out and rerun with --seeds 8. With --ray the
    runs go to Ray workers (--ray local --threads 1: two at a time on 2 cores).
    """
    from dataclasses import replace

    from parasample.bench.rl import RLBenchConfig
    from parasample.bench.rl_enum import EnumBenchConfig
    from parasample.rl import GRPOConfig
    from parasample.rl.enumerable import EnumGRPOConfig

    quick, seed = run.quick, run.seed
    run_kw = dict(steps=steps, updates_per_batch=updates, loss_average=loss_average, lr=lr,
                  eval_every=eval_every, eval_problems=eval_problems, eval_samples=eval_samples)
    kw = dict(samplers=tuple(s.value for s in samplers), group_sizes=tuple(group_sizes),
              seeds=seeds, seed=seed, target=target, samples_per_step=samples)
    names = {"samples_per_step": "samples", "updates_per_batch": "updates"}
    if Part.arith not in parts:
        cfg = None
    elif quick:  # the quick preset, except for what the user typed (sweep and run options)
        cfg = config(ctx, quick, RLBenchConfig, kw, names)
        cfg = replace(cfg, run=replace(cfg.run, **{k: v for k, v in run_kw.items()
                                                   if names.get(k, k) in explicit(ctx)}))
    else:
        cfg = RLBenchConfig(**kw, run=GRPOConfig(**run_kw))
    enum_kw = dict(samplers=tuple(s.value for s in enum_samplers),
                   group_sizes=tuple(group_sizes), gradient_groups=gradient_groups)
    enum_run = dict(seeds=enum_seeds, steps=enum_steps, samples_per_step=enum_samples,
                    lr=enum_lr, seed=seed)
    enum_names = {"seeds": "enum_seeds", "steps": "enum_steps", "samples_per_step":
                  "enum_samples", "lr": "enum_lr", "seed": "seed", "samplers": "enum_samplers"}
    if Part.enum not in parts:
        ecfg = None
    elif quick:
        typed = explicit(ctx)
        ecfg = EnumBenchConfig.quick(**{k: v for k, v in enum_kw.items()
                                        if enum_names.get(k, k) in typed})
        ecfg = replace(ecfg, run=replace(ecfg.run, **{k: v for k, v in enum_run.items()
                                                      if enum_names[k] in typed}))
    else:
        ecfg = EnumBenchConfig(**enum_kw, run=EnumGRPOConfig(**enum_run))
    executor = run.executor(ctx) if cfg else None  # a silent cluster fails before any run
    if ecfg:
        _enum(ecfg, run.out())
    if cfg:
        _arith(cfg, run, executor)


def _enum(cfg, out_dir) -> None:
    from parasample.bench.rl_enum import run_enum

    cells = len(cfg.samplers) * len(cfg.group_sizes)
    console.print(f"bench rl, enumerable task: {cells} cells ({', '.join(cfg.samplers)} x G "
                  f"{list(cfg.group_sizes)}) of {cfg.run.seeds} runs x {cfg.run.steps} steps, "
                  f"{cfg.run.samples_per_step} samples per step, lr {cfg.run.lr}, "
                  f"{cfg.gradient_groups} groups for the gradient error -> {out_dir}",
                  highlight=False)
    with tracked("GRPO steps (all seeds at once)", cells * (cfg.run.steps + 1)) as (advance, _):
        rows = run_enum(cfg, out_dir, progress=advance)
    _enum_summary(rows)
    wrote(*(out_dir / f for f in ("enum_runs.csv", "enum_curves.csv", "enum_gradient.csv",
                                  "enum_summary.csv", "enum.png")))


def _arith(cfg, run: BenchRun, executor) -> None:
    from parasample.bench.rl import run_benchmark

    out_dir = run.out()
    units = cfg.units()
    per_step = (f"{cfg.samples_per_step} samples" if cfg.samples_per_step else
                f"{cfg.run.problems_per_step} problems")
    console.print(f"bench rl: {len(units)} GRPO runs ({', '.join(cfg.samplers)} x G "
                  f"{list(cfg.group_sizes)} x {cfg.seeds} seeds) of {cfg.run.steps} steps, "
                  f"{per_step} per step, lr {cfg.run.lr}, target pass@1 {cfg.target}, "
                  f"{run.device}, {run.dtype_name}, {run.threads} threads, {executor.name} -> "
                  f"{out_dir}", highlight=False)
    with tracked("GRPO steps", len(units) * cfg.run.steps) as (advance, log):
        summary = run_benchmark(cfg, out_dir, progress=advance, log=log, device=run.device,
                                autocast=run.autocast, executor=executor)
    _summary(summary)
    wrote(out_dir / "rl.csv", out_dir / "summary.csv", out_dir / "rl.png")


def _enum_summary(rows: list[dict]) -> None:
    from rich.table import Table

    def steps(r, tag):
        med = r[f"median_steps_{tag}"]
        if med == float("inf"):
            return f"> budget ({r[f'reached_{tag}']} / {r['seeds']} reached)"
        ratio = f", {r[f'vs_iid_{tag}']}x iid" if r[f"vs_iid_{tag}"] != "" else ""
        return f"{med:.0f} [{r[f'ci_low_{tag}']:.0f}, {r[f'ci_high_{tag}']:.0f}]{ratio}"

    t = Table("sampler", "G", "steps to 0.5", "steps to 0.9", "final reward",
              "zero-variance groups", "gradient rel. MSE",
              title="bench rl, enumerable task (median over seeds [95% bootstrap interval])")
    for r in rows:
        t.add_row(r["sampler"], str(r["group_size"]), steps(r, "50"), steps(r, "90"),
                  f"{r['final_reward']:.3f} +- {r['final_reward_se'] or 0:.3f}",
                  f"{r['zero_variance']:.3f}", str(r["relative_mse"]))
    console.print(t)


def _summary(rows: list[dict]) -> None:
    from rich.table import Table

    def pm(r, name, fmt="{:.3f}"):
        if r[name] == "":
            return "-"
        se = f" +- {fmt.replace('+', '').format(r[name + '_se'])}" if r[name + "_se"] != "" else ""
        return fmt.format(r[name]) + se

    def vs_iid(r):
        if r["steps_vs_iid"] == "":
            return "-"
        return (f"{r['steps_vs_iid']}x [{r['steps_vs_iid_low']}, {r['steps_vs_iid_high']}] "
                f"({r['paired_seeds']} seeds)")

    t = Table("sampler", "G", "reached / seeds", "steps to target", "steps vs iid [95%]",
              "seconds to target", "zero-variance groups", "final pass@1", "vs iid (paired)",
              title=f"bench rl (target held-out pass@1 {rows[0]['target'] if rows else '-'})")
    for r in rows:
        t.add_row(r["sampler"], str(r["group_size"]), f"{r['reached']} / {r['seeds']}",
                  pm(r, "steps_to_target", "{:.0f}"), vs_iid(r),
                  pm(r, "seconds_to_target", "{:.0f}"), pm(r, "zero_variance"),
                  pm(r, "final_pass1"), pm(r, "final_pass1_vs_iid", "{:+.3f}"))
    console.print(t)
