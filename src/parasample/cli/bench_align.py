"""``parasample bench align``: samplers of reward-tilted LM targets at equal compute (seed 000's
open questions). So far: cached QUEST against token-by-token QUEST on SmolLM2."""

from __future__ import annotations

import typer

from parasample.cli.common import (
    console,
    device_opt,
    dtype_opt,
    explicit,
    greater_than,
    out_opt,
    progress,
    quick_opt,
    seed_opt,
    setup,
    threads_opt,
)

__all__ = ["bench_align"]


def bench_align(
    ctx: typer.Context,
    chains: list[int] = typer.Option([1, 8], "--chains", "-c", min=1, help="QUEST chains run "
                                     "as one batch (repeat for several)."),
    length: int = typer.Option(32, "--length", "-L", min=1, help="Tokens per sequence (QUEST "
                               "regenerates a suffix of it each move)."),
    moves: int = typer.Option(12, "--moves", min=1, help="QUEST moves per chain and variant."),
    beta: float = typer.Option(0.5, "--beta", callback=greater_than(0.0), help="Tilt (> 0) of "
                               "the digit reward: pi ~ p_LM exp(r / beta)."),
    out: str = out_opt("align"),
    quick: bool = quick_opt("2 chains, 8 tokens, 3 moves"),
    seed: int = seed_opt(0, "the starting sequences and every move"),
    device: str = device_opt(),
    dtype: str = dtype_opt(),
    threads: int = threads_opt(2),
):
    """Cached QUEST (the kept prefix prefilled with the prompt in one call) against
    token-by-token QUEST on SmolLM2-135M-Instruct, from the same uniforms: model calls and wall
    time per move, the speedup, and the fraction of moves with token-identical chains.

    Writes quest_cache.csv; resumes when rerun.
    """
    from pathlib import Path

    from parasample.bench.align import CacheBenchConfig, quest_cache_rows
    from parasample.targets.hf import smollm2_path

    dev, dt = setup(threads, device, dtype)
    kw = dict(chains=tuple(chains), length=length, moves=moves, beta=beta, seed=seed)
    if quick:  # the quick preset, except for what the user typed
        typed = explicit(ctx)
        cfg = CacheBenchConfig.quick(**{k: v for k, v in kw.items() if k in typed})
    else:
        cfg = CacheBenchConfig(**kw)
    smollm2_path()  # before anything runs
    out_dir = Path(out or ("results/align-quick" if quick else "results/align"))
    console.print(f"bench align: QUEST cached vs token by token on SmolLM2, chains "
                  f"{list(cfg.chains)}, {cfg.length} tokens, {cfg.moves} moves, beta {cfg.beta}, "
                  f"{dev}, {dtype}, {threads} threads -> {out_dir}", highlight=False)
    with progress() as bar:
        job = bar.add_task("units", total=len(cfg.chains))
        rows = quest_cache_rows(cfg, out_dir, progress=lambda _: bar.advance(job), device=dev,
                                dtype=dt)
    _table(rows)
    console.print(f"wrote {out_dir / 'quest_cache.csv'}")


def _table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("sampler", "chains", "calls / move", "s / move", "speedup", "identical chains",
              "accept rate", title="bench align: QUEST with and without the prefix cache")
    for r in rows:
        t.add_row(r["sampler"], str(r["chains"]), str(r["calls_per_move"]),
                  str(r["wall_per_move_s"]), str(r["speedup_vs_uncached"]),
                  str(r["identical_to_uncached"]) or "-", str(r["accept_rate"]))
    console.print(t)
