"""``parasample bench rl``: GRPO with i.i.d. against correlated groups (seed 003)."""

from __future__ import annotations

import typer

from parasample.cli.common import (
    config,
    console,
    device_opt,
    dtype_opt,
    explicit,
    greater_than,
    out_opt,
    progress,
    quick_opt,
    ray_opt,
    seed_opt,
    setup,
    threads_opt,
)
from parasample.cli.sample import Sampler

__all__ = ["bench_rl"]


def bench_rl(
    ctx: typer.Context,
    samplers: list[Sampler] = typer.Option(["iid", "arithmetic", "stratified", "lattice"],
                                           "--sampler", "-s", help="Group sources to compare "
                                           "(repeat the option)."),
    group_sizes: list[int] = typer.Option([4, 8, 16], "--group-size", "-G", min=2,
                                          help="G, samples per problem (repeat for several; a "
                                          "power of two for sobol and lattice, even for "
                                          "antithetic)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per (sampler, G): --seed, "
                              "--seed + 1, ..."),
    steps: int = typer.Option(30, "--steps", min=1, help="GRPO steps per run (about 1 s each "
                              "at 128 samples on 2 cores)."),
    samples: int = typer.Option(128, "--samples-per-step", min=1, help="Samples per step, the "
                                "same for every G: samples / G problems of G samples each (a "
                                "multiple of every G)."),
    updates: int = typer.Option(1, "--updates-per-batch", min=1, help="Optimiser updates on "
                                "each step's batch (GRPO's inner iterations; > 1 lets the clip "
                                "act)."),
    lr: float = typer.Option(3e-5, "--lr", callback=greater_than(0.0, 1.0), help="AdamW peak "
                             "learning rate in (0, 1), the same for every sampler (1e-4 "
                             "collapses the shipped model)."),
    eval_every: int = typer.Option(15, "--eval-every", min=1, help="Steps between held-out "
                                   "evaluations (pass@1, pass@G) and checkpoints."),
    eval_problems: int = typer.Option(128, "--eval-problems", min=1, help="Held-out problems "
                                      "per evaluation."),
    eval_samples: int = typer.Option(4, "--eval-samples", min=1, help="i.i.d. samples per "
                                     "held-out problem for pass@1 (more: a smaller variance)."),
    target: float = typer.Option(0.3, "--target", callback=greater_than(0.0, 1.0), help="Target "
                                 "held-out pass@1 in (0, 1) for steps and seconds to target (the "
                                 "shipped model starts at 0.21)."),
    out: str = out_opt("rl"),
    quick: bool = quick_opt("G = 4, 2 seeds of 2 steps on 2 problems, seconds"),
    seed: int = seed_opt(0, "the first run (the others follow)"),
    device: str = device_opt(),
    dtype: str = dtype_opt(),
    ray: str = ray_opt(),
    threads: int = threads_opt(2),
):
    """GRPO on the shipped small AR model with groups drawn i.i.d. or correlated: held-out
    pass@1 against step, zero-variance groups, steps and seconds to a target pass@1 over seeds.

    Writes rl.csv, summary.csv and rl.png; every run keeps its state, so a rerun resumes.
    With --ray the runs go to Ray workers (--ray local --threads 1: two at a time on 2 cores).
    """
    from dataclasses import replace
    from pathlib import Path

    import torch

    from parasample.bench.executor import make_executor
    from parasample.bench.rl import RLBenchConfig, run_benchmark
    from parasample.rl import GRPOConfig

    dev, dt = setup(threads, device, dtype)
    run = dict(steps=steps, updates_per_batch=updates, lr=lr, eval_every=eval_every,
               eval_problems=eval_problems, eval_samples=eval_samples)
    kw = dict(samplers=tuple(s.value for s in samplers), group_sizes=tuple(group_sizes),
              seeds=seeds, seed=seed, target=target, samples_per_step=samples)
    names = {"samples_per_step": "samples", "updates_per_batch": "updates"}
    if quick:  # the quick preset, except for what the user typed (sweep and run options)
        cfg = config(ctx, quick, RLBenchConfig, kw, names)
        cfg = replace(cfg, run=replace(cfg.run, **{k: v for k, v in run.items()
                                                   if names.get(k, k) in explicit(ctx)}))
    else:
        cfg = RLBenchConfig(**kw, run=GRPOConfig(**run))
    executor = make_executor(ray, threads)  # a cluster that does not answer fails here
    ctx.call_on_close(executor.close)
    out_dir = Path(out or ("results/rl-quick" if quick else "results/rl"))
    units = cfg.units()
    per_step = (f"{cfg.samples_per_step} samples" if cfg.samples_per_step else
                f"{cfg.run.problems_per_step} problems")
    console.print(f"bench rl: {len(units)} GRPO runs ({', '.join(cfg.samplers)} x G "
                  f"{list(cfg.group_sizes)} x {cfg.seeds} seeds) of {cfg.run.steps} steps, "
                  f"{per_step} per step, lr {cfg.run.lr}, target pass@1 {cfg.target}, {dev}, "
                  f"{dtype}, {threads} threads, {executor.name} -> {out_dir}", highlight=False)
    with progress() as bar:
        job = bar.add_task("GRPO steps", total=len(units) * cfg.run.steps)
        summary = run_benchmark(cfg, out_dir, progress=lambda n: bar.advance(job, n),
                                log=lambda m: bar.console.print(m, highlight=False),
                                device=dev, autocast=None if dt is torch.float32 else dt,
                                executor=executor)
    _summary(summary)
    console.print(f"wrote {out_dir / 'rl.csv'}, {out_dir / 'summary.csv'}, "
                  f"{out_dir / 'rl.png'}")


def _summary(rows: list[dict]) -> None:
    from rich.table import Table

    def pm(r, name, fmt="{:.3f}"):
        if r[name] == "":
            return "-"
        se = f" +- {fmt.format(r[name + '_se'])}" if r[name + "_se"] != "" else ""
        return fmt.format(r[name]) + se

    t = Table("sampler", "G", "reached / seeds", "steps to target", "seconds to target",
              "zero-variance groups", "final pass@1",
              title=f"bench rl (target held-out pass@1 {rows[0]['target'] if rows else '-'})")
    for r in rows:
        t.add_row(r["sampler"], str(r["group_size"]), f"{r['reached']} / {r['seeds']}",
                  pm(r, "steps_to_target", "{:.0f}"), pm(r, "seconds_to_target", "{:.0f}"),
                  pm(r, "zero_variance"), pm(r, "final_pass1"))
    console.print(t)
