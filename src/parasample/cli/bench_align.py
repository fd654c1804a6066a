"""``parasample bench align``: samplers of reward-tilted LM targets at equal calls and equal
wallclock (seed 000's open questions): (a) the exact toy tilted LM, (b) a chat LM (SmolLM2 by
default, --model) with a verifiable reward, (c) cached against token-by-token QUEST on it."""

from __future__ import annotations

import typer

from parasample.cli.common import (
    BenchRun,
    bench_options,
    config,
    console,
    greater_than,
    lm_opt,
    progress,
)
from parasample.errors import MissingInputError

__all__ = ["bench_align"]


@bench_options("align", quick="toy: 256 outputs, 2 budgets, 2 seeds; chat LM: 2 questions, small "
               "samplers; cache: 2 chains, 8 tokens, 3 moves",
               seed="the starting sequences and every move")
def bench_align(
    ctx: typer.Context,
    run: BenchRun,
    toy_samples: int = typer.Option(4096, "--toy-samples", min=1, help="(a) Outputs per sampler "
                                    "(chains, resampling sets or SMC systems)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="(a) Seeds per sampler (SEs are over "
                              "them)."),
    target_tvd: float = typer.Option(None, "--target-tvd", callback=greater_than(0.0, 1.0),
                                     help="(a) TVD in (0, 1) that the summary's calls and "
                                     "seconds are measured to (default 1.5 x the i.i.d. "
                                     "floor)."),
    tries: list[int] = typer.Option([4, 16], "--tries", "-K", min=1, help="(a) mt-QUEST's tries "
                                    "per move, K (repeat for several)."),
    try_sources: list[str] = typer.Option(["iid", "lattice", "antithetic"], "--try-source",
                                          help="(a) How mt-QUEST's K tries are drawn: iid, "
                                          "lattice (a shifted rank-1 lattice over them) or "
                                          "antithetic (pairs u, 1 - u; K even). Repeat for "
                                          "several."),
    skip_toy: bool = typer.Option(False, "--skip-toy", help="Skip part (a)."),
    skip_lm: bool = typer.Option(False, "--skip-lm", help="Skip parts (b) and (c), the chat "
                                 "LM."),
    skip_samplers: bool = typer.Option(False, "--skip-samplers", help="Skip part (b), the chat "
                                       "LM's sampler comparison (part (c) still runs)."),
    model: str = lm_opt("(b), (c) The chat LM", "SmolLM2 answers single-digit additions, the "
                        "Qwen models two-digit products (12 new tokens)."),
    problems: int = typer.Option(8, "--problems", min=1, help="(b) Addition questions."),
    lm_seeds: int = typer.Option(2, "--lm-seeds", min=1, help="(b) Seeds per sampler."),
    chains: list[int] = typer.Option([1, 8], "--chains", "-c", min=1, help="(c) QUEST chains "
                                     "run as one batch (repeat for several)."),
    length: int = typer.Option(32, "--length", "-L", min=1, help="(c) Tokens per sequence "
                               "(QUEST regenerates a suffix of it each move)."),
    moves: int = typer.Option(12, "--moves", min=1, help="(c) QUEST moves per chain and "
                              "variant."),
    beta: float = typer.Option(0.5, "--beta", callback=greater_than(0.0), help="Tilt (> 0) of "
                               "the reward: pi ~ p_LM exp(r / beta) (toy: count of token 1; "
                               "(b): right number + format; (c): tokens containing a "
                               "digit)."),
):
    """Measures samplers of reward-tilted LM targets against model calls and wallclock.

    (a) Importance resampling (i.i.d. / arithmetic draws), QUEST, multiple-try QUEST
    (i.i.d. / lattice / antithetic tries, K = 4, 16), token SMC, resample-move SMC (QUEST
    rejuvenation) and p-NCG on the exact toy
    tilted LM: TVD against model calls and wallclock (align_toy.png), calls and seconds to a
    TVD (toy_summary.csv), correlated tries against i.i.d. (toy_tries.csv). (b) The chat LM
    (SmolLM2-135M-Instruct on single-digit additions, or --model qwen-coder-0.5b / 1.5b on
    two-digit products), reward = right number + format: expected reward of importance
    resampling, QUEST, SMC and resample-move SMC against calls and wallclock (lm.csv,
    lm_summary.csv, align_lm.png). (c) QUEST with the kept prefix prefilled with the prompt in
    one call per move (quest-cached), and attended to in a KV cache kept across moves
    (quest-kept), against token-by-token QUEST on the chat LM from the same uniforms: calls
    and seconds per move, speedup, identical chains (quest_cache.csv). Rows are keyed by the
    model, so one --out can hold several. Resumes when rerun.
    """
    from parasample.bench.align import LMAlignConfig, lm_rows
    from parasample.bench.align_cache import CacheBenchConfig, quest_cache_rows
    from parasample.bench.align_toy import ToyAlignConfig, toy_rows
    from parasample.bench.plots import align_lm_plot, align_toy_plot
    from parasample.targets.named import lm_label, require_lm

    dev, dt, quick, seed = run.device, run.dtype, run.quick, run.seed
    lm_cfg = config(ctx, quick, CacheBenchConfig, dict(chains=tuple(chains), length=length,
                                                      moves=moves, beta=beta, seed=seed,
                                                      model=model))
    toy_cfg = config(ctx, quick, ToyAlignConfig, dict(
        samples=toy_samples, seeds=seeds, seed=seed, beta=beta, target_tvd=target_tvd,
        tries=tuple(tries), try_sources=tuple(try_sources)), {"samples": "toy_samples"})
    lm_b = config(ctx, quick, LMAlignConfig, dict(problems=problems, seeds=lm_seeds, seed=seed,
                                                  beta=beta, model=model), {"seeds": "lm_seeds"})
    if not skip_lm:
        try:
            require_lm(model)  # before anything runs
        except FileNotFoundError as e:
            raise MissingInputError(f"{e} Or pass --skip-lm to run part (a) without it.") from None
    out_dir = run.out()
    console.print(f"bench align -> {out_dir}, {dev}, {run.dtype_name}, {run.threads} threads",
                  highlight=False)
    if not skip_toy:
        console.print(f"  (a) toy tilted LM: {len(toy_cfg.units())} samplers x {toy_cfg.seeds} "
                      f"seeds, {toy_cfg.samples} outputs each, moves {list(toy_cfg.moves)}",
                      highlight=False)
    name = lm_label(model)
    if not skip_lm and not skip_samplers:
        console.print(f"  (b) {name} short answers: {len(lm_b.units())} samplers x {lm_b.seeds} "
                      f"seeds, {lm_b.problems} questions, {lm_b.length} tokens, beta "
                      f"{lm_b.beta}", highlight=False)
    if not skip_lm:
        console.print(f"  (c) {name}: QUEST prefilled / kept cache vs token by token, chains "
                      f"{list(lm_cfg.chains)}, {lm_cfg.length} tokens, {lm_cfg.moves} moves, "
                      f"beta {lm_cfg.beta}", highlight=False)
    with progress() as bar:
        if not skip_toy:
            job = bar.add_task("(a) toy curves", total=len(toy_cfg.units()) * toy_cfg.seeds)
            toy_rows(toy_cfg, out_dir, progress=lambda _: bar.advance(job))
            align_toy_plot(out_dir)
        if not skip_lm and not skip_samplers:
            job = bar.add_task(f"(b) {name} samplers", total=len(lm_b.units()) * lm_b.seeds)
            lm_rows(lm_b, out_dir, progress=lambda _: bar.advance(job), device=dev, dtype=dt)
            align_lm_plot(out_dir)
        if not skip_lm:
            job = bar.add_task(f"(c) {name} units", total=len(lm_cfg.chains))
            rows = quest_cache_rows(lm_cfg, out_dir, progress=lambda _: bar.advance(job),
                                    device=dev, dtype=dt)
    if not skip_toy:
        _toy_tables(out_dir)
    if not skip_lm and not skip_samplers:
        _lm_table(out_dir)
    if not skip_lm:
        _table(rows)
    files = [p.name for p in sorted(out_dir.glob("*.csv")) + sorted(out_dir.glob("*.png"))]
    console.print(f"wrote {', '.join(files)} in {out_dir}")


def _toy_tables(out) -> None:
    from rich.table import Table

    from parasample.bench.csvlog import read_csv

    summ = read_csv(out / "toy_summary.csv")
    pm = lambda r, n: "-" if r[n] == "" else r[n] + (f" +- {r[n + '_se']}" if r[n + "_se"]  # noqa
                                                     else "")
    t = Table("sampler", "tries", "size", "call unit", "reached", "calls to TVD",
              "seconds to TVD", "s / call", "final TVD",
              title=f"(a) toy: calls and seconds to TVD {summ[0]['target_tvd'] if summ else ''}")
    for r in summ:
        t.add_row(r["sampler"], r["tries_source"] or "-", r["size"], r["call_unit"],
                  f"{r['reached']} / {r['seeds']}", pm(r, "calls_to_target"),
                  pm(r, "seconds_to_target"), r["seconds_per_call"], pm(r, "final_tvd"))
    console.print(t)
    tries = read_csv(out / "toy_tries.csv")
    if tries:
        t = Table("K", "tries", "wallclock to i.i.d. tries' final TVD (ratio)", "censored",
                  title="(a) mt-QUEST: correlated against i.i.d. tries")
        for r in tries:
            t.add_row(r["tries"], r["tries_source"],
                      f"{r['wall_ratio_to_iid']} +- {r['wall_ratio_se'] or '-'}",
                      f"{r['censored']} / {r['seeds']}")
        console.print(t)


def _lm_table(out) -> None:
    from rich.table import Table

    from parasample.bench.align import lm_summary
    from parasample.bench.csvlog import read_csv, write_csv

    summ = lm_summary(read_csv(out / "lm.csv"))
    write_csv(out / "lm_summary.csv", list(summ[0]), summ)
    t = Table("model", "sampler", "size", "expected reward", "calls", "seconds",
              "QUEST s to this reward", "ratio", "reaches QUEST's final", "s / QUEST's s",
              title="(b) the chat LM's short answers (mean over seeds)")
    for r in summ:
        t.add_row(r["model"], r["sampler"], str(r["size"]), str(r["expected_reward"]),
                  str(r["calls"]),
                  str(r["wall_s"]), str(r["quest_seconds_to_this_reward"]) or "-",
                  str(r["wall_ratio_to_quest"]) or "-", str(r["reaches_quest_final"]) or "-",
                  str(r["wall_ratio_to_quest_final"]) or "-")
    console.print(t)


def _table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("model", "sampler", "chains", "calls / move", "s / move", "speedup",
              "identical chains", "accept rate",
              title="(c) QUEST with and without the prefix cache")
    for r in rows:
        t.add_row(r["model"], r["sampler"], str(r["chains"]), str(r["calls_per_move"]),
                  str(r["wall_per_move_s"]), str(r["speedup_vs_uncached"]),
                  str(r["identical_to_uncached"]) or "-", str(r["accept_rate"]))
    console.print(t)
