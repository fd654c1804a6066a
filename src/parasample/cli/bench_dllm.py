"""``parasample bench dllm``: the masked-diffusion decoding benchmark (seed 004)."""

from __future__ import annotations

from enum import StrEnum

import typer

from parasample.cli.common import (
    BenchRun,
    bench_options,
    console,
    explicit,
    gsm8k_data_opt,
    progress,
)
from parasample.errors import InputError

__all__ = ["DLLMTaskName", "bench_dllm"]


class DLLMTaskName(StrEnum):
    chain = "chain"
    arith_short = "arith-short"
    gsm8k = "gsm8k"


class Part(StrEnum):
    sweep = "sweep"
    temperature = "temperature"
    passk = "passk"
    spec = "spec"
    paired = "paired"


class CacheName(StrEnum):
    none = "none"
    prefix = "prefix"
    dual = "dual"


#: the shipped checkpoint each arithmetic task runs by default
DEFAULT_MODELS = {"chain": "dllm-chain", "arith-short": "dllm-arith"}


@bench_options("dllm",
               quick="4 problems, batch 4, pass@k on 2 problems with k <= 4",
               seed="the held-out problems and every sampled draw",
               ray=True)
def bench_dllm(
    ctx: typer.Context,
    run: BenchRun,
    task: DLLMTaskName = typer.Option(DLLMTaskName.chain, "--task", help="chain (default): "
                                      "held-out 14-operation chains with restated rules, answers "
                                      "of 170 characters (66% of the 256-position window), model "
                                      "dllm-chain; arith-short: 4-operation chains, 34-character "
                                      "answers, model dllm-arith; gsm8k: GSM8K test problems "
                                      "(needs --model PATH)."),
    model: str = typer.Option(None, "--model", "-m", help="A shipped checkpoint name, a .pt "
                              "checkpoint, or with --task gsm8k a local HF masked diffusion LM "
                              "directory (LLaDA/Dream-style: model(x).logits and a mask token "
                              "id). Default: the task's shipped model."),
    cache: list[CacheName] = typer.Option(["none", "dual"], "--cache", help="Block cache(s) to "
                                          "run the sweep with, repeatable: none (a full pass "
                                          "per step), prefix (K/V left of the block reused), "
                                          "dual (both sides reused; Fast-dLLM). Cached rows are "
                                          "named e.g. stage1-B32+dual."),
    n_problems: int = typer.Option(32, "--n-problems", "-n", min=1, help="Problems per "
                                   "configuration (>= 1; at most the held-out set, which is "
                                   "checked up front)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts decoded together "
                                   "(GSM8K prompts are left-padded with an attention mask)."),
    passk_problems: int = typer.Option(24, "--passk-problems", min=0, help="Held-out problems "
                                       "for the pass@k part (k samples per problem at T = 1 with "
                                       "iid, lattice and arithmetic sources; 0 skips it)."),
    k_max: int = typer.Option(16, "--k-max", min=2, help="Samples per problem in the pass@k "
                              "part, a power of two; pass@k for k = 1, 2, ..., k-max."),
    spec_problems: int = typer.Option(16, "--spec-problems", min=0, help="Problems decoded by "
                                      "the speculative rows (spec.csv: one-token-per-step "
                                      "decoding and its exact speculative decoder with k = 2, "
                                      "4, 8 and adaptive, at T = 0 and 1, and at T = 1 the "
                                      "law-exact rejection variant at k = 4; 0 skips them)."),
    paired_problems: int = typer.Option(256, "--paired-problems", min=0, help="Problems "
                                        "decoded with and without the dual cache "
                                        "(cache_paired.csv: threshold decoding at B = 32, the "
                                        "discordant counts and McNemar's p; 0 skips it)."),
    parts: list[Part] = typer.Option(list(Part), "--part", help="Parts to run, repeatable: "
                                     "sweep (the guide's stages and the temperature rows, "
                                     "results.csv), temperature (the temperature rows alone), "
                                     "passk, spec, paired. Default: all."),
    data: str = gsm8k_data_opt(),
    mask_id: int = typer.Option(None, "--mask-id", min=0, help="Mask token id when the model's "
                                "tokenizer/config does not name one (LLaDA: 126336)."),
):
    """Measures masked-diffusion parallel decoding: accuracy and throughput, exact speculation.

    Masked-diffusion parallel decoding (seed 004): block sweep (threshold 0.9) and step sweep
    (B = 32) with each block cache, threshold decoding at T = 0.5 and 1, and pass@k of k
    correlated samples per problem.

    Writes results.csv (run_name,block_length,steps,accuracy,throughput), runs.csv (every
    column: cache, temperature, NFE, forward share, ...), passk.csv, L-B.png, L-S.png and
    passk.png, and prints a summary with each row's speedup over the sequential reference
    (stage2-S256: one token per step, no cache).
    """

    from parasample.bench import dllm as bd
    from parasample.bench import dllm_spec as bds
    from parasample.bench.plots import dllm_plots, passk_plot

    dev, quick, seed, threads, dtype = (run.device, run.quick, run.seed, run.threads,
                                        run.dtype_name)
    executor = run.executor(ctx)  # a cluster that does not answer fails here
    if quick:  # the quick preset, except for what the user typed
        typed = explicit(ctx)
        n_problems = n_problems if "n_problems" in typed else 4
        batch_size = batch_size if "batch_size" in typed else 4
        passk_problems = passk_problems if "passk_problems" in typed else 2
        k_max = k_max if "k_max" in typed else 4
        spec_problems = spec_problems if "spec_problems" in typed else 2
        paired_problems = paired_problems if "paired_problems" in typed else 4
    parts = set(parts)
    passk_problems = passk_problems if Part.passk in parts else 0
    spec_problems = spec_problems if Part.spec in parts else 0
    paired_problems = paired_problems if Part.paired in parts else 0
    if task is DLLMTaskName.gsm8k and model is None:
        raise InputError("--task gsm8k needs a real masked diffusion LM: pass --model PATH to a "
                         "local LLaDA/Dream-style model directory.")
    model = model or DEFAULT_MODELS[task.value]
    cfg = bd.DLLMBenchConfig(n_problems=n_problems, batch_size=batch_size, seed=seed,
                             caches=tuple(dict.fromkeys(c.value for c in cache)),
                             passk_problems=passk_problems, k_max=k_max)
    out_dir = run.out()
    n_load = max(n_problems, passk_problems, spec_problems, paired_problems)
    part = bds.SpecPartConfig(problems=spec_problems, paired_problems=paired_problems)
    tspec = bd.TaskSpec("gsm8k" if task is DLLMTaskName.gsm8k else "arith", model, n_load, seed,
                        str(dev), dtype, data, mask_id)
    with console.status(f"loading {model} ..."):
        t = bd.build_task(tspec)
    for c in cfg.caches:  # a cache the model cannot use is refused before anything runs
        bd.make_cache(c).check(t.model)
    sweep_task = t._replace(problems=t.problems[:n_problems])
    stages = None if Part.sweep in parts else ("temperature",)
    specs = [s for s in bd.sweep(cfg) if stages is None or s.stage in stages] \
        if Part.sweep in parts or Part.temperature in parts else []
    n_passk = min(passk_problems, len(t.problems)) * len(bd.PASSK_SAMPLERS) * cfg.k_max
    console.print(f"bench dllm: {t.model_name} on {t.name}, {len(sweep_task.problems)} problems "
                  f"x {len(specs)} configurations (caches {', '.join(cfg.caches)}), batch "
                  f"{batch_size}, gen_length {cfg.gen_length}, threshold {cfg.threshold}; "
                  f"pass@k: {min(passk_problems, len(t.problems))} problems x k={cfg.k_max} x "
                  f"{len(bd.PASSK_SAMPLERS)} samplers; {dev}, {dtype}, {threads} threads -> "
                  f"{out_dir}")
    heads, rows, spec_rows = {}, [], []
    with progress() as bar:
        log = lambda m: bar.console.print(m, highlight=False)  # noqa: E731
        if Part.sweep in parts or Part.temperature in parts:
            job = bar.add_task("decoding", total=len(sweep_task.problems) * len(specs))
            rows = bd.run_benchmark(sweep_task, cfg, out_dir, log=log, executor=executor,
                                    progress=lambda n: bar.advance(job, n), task_spec=tspec,
                                    stages=stages)
        if spec_problems:
            sjob = bar.add_task("speculative rows", total=spec_problems * sum(
                len(bds.spec_runs(part, T)) for T in part.temperatures))
            spec_rows = bds.spec_table(t, part, cfg.gen_length, cfg.stage2_block, batch_size,
                                       seed, out_dir, log=log,
                                       progress=lambda n: bar.advance(sjob, n))
        if paired_problems:
            qjob = bar.add_task("paired cache", total=2 * paired_problems)
            bds.paired_table(t, paired_problems, cfg.gen_length, cfg.stage2_block,
                             cfg.threshold, batch_size, seed, out_dir, log=log,
                             progress=lambda n: bar.advance(qjob, n))
        if passk_problems:
            pjob = bar.add_task("pass@k samples", total=n_passk)
            _, heads = bd.passk_table(t, cfg, out_dir, progress=lambda n: bar.advance(pjob, n),
                                      log=log, executor=executor, task_spec=tspec)
    paths = dllm_plots(out_dir, f"({t.model_name}, {t.name}, n={len(sweep_task.problems)})") \
        if Part.sweep in parts else []
    if passk_problems:
        paths.append(passk_plot(out_dir))
    if rows or heads:
        _summary(rows, heads)
    if spec_rows:
        _spec_summary(spec_rows)
    written = [n for n, on in (("results.csv", Part.sweep in parts), ("runs.csv", rows),
                               ("passk.csv", passk_problems), ("spec.csv", spec_rows),
                               ("cache_paired.csv", paired_problems)) if on]
    console.print("wrote " + ", ".join([str(out_dir / n) for n in written]
                                       + [str(p) for p in paths if p]))


def _spec_summary(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table("T", "run", "calls/token", "calls saved", "forward rows/token", "tok/s",
                  "wall vs seq.", "identical", "mean committed", title="bench dllm: speculative")
    for r in rows:
        table.add_row(f"{float(r['temperature']):g}", r["run_name"], str(r["calls_per_token"]),
                      f"{float(r['calls_saved']):.2f}x", str(r["forward_rows_per_token"]),
                      str(r["tokens_per_s"]), f"{float(r['speedup_wall']):.2f}x",
                      str(r["identical_to_sequential"]), str(r["mean_committed"]))
    console.print(table)


def _summary(rows: list[dict], heads: dict) -> None:
    from rich.table import Table

    by = {r["run_name"]: r for r in rows}
    ref = by.get("stage2-S256")
    ref_tput = float(ref["throughput"]) if ref else None
    table = Table("run", "B", "S", "T", "accuracy", "tok/s", "speedup vs seq.", "NFE/problem",
                  "tok/step", "forward share", title="bench dllm")
    for r in rows:
        speed = f"{float(r['throughput']) / ref_tput:.2f}x" if ref_tput else "-"
        if ref_tput is None and r["run_name"].startswith("temp-"):  # vs threshold at T = 0
            speed = "-"
        table.add_row(r["run_name"], str(r["block_length"]), str(r["steps"]),
                      str(r["temperature"]), f"{float(r['accuracy']):.3f}",
                      f"{float(r['throughput']):.1f}", speed, str(r["nfe_per_problem"]),
                      str(r["tokens_per_step"]), f"{float(r['forward_share']):.1%}")
    if rows:
        console.print(table)
    par = by.get("stage1-B32")
    if par and ref:
        console.print(
            f"threshold decoding at B=32: {float(par['throughput']) / ref_tput:.2f}x the "
            f"throughput of one token per step (stage2-S256), accuracy "
            f"{float(par['accuracy']):.3f} vs {float(ref['accuracy']):.3f} "
            f"({100 * (float(par['accuracy']) - float(ref['accuracy'])):+.1f} points)")
    for name in ("stage2-S256", "stage1-B32"):
        for cache in ("prefix", "dual"):
            c, base = by.get(f"{name}+{cache}"), by.get(name)
            if c and base:
                ratio = float(c["throughput"]) / float(base["throughput"])
                console.print(f"{cache} cache at {name}: {ratio:.2f}x the no-cache throughput, "
                              f"accuracy {float(c['accuracy']):.3f} vs "
                              f"{float(base['accuracy']):.3f}")
    if heads:
        from parasample.bench.passk_summary import BOUND
        from parasample.cli.bench_passk import ceiling_of, saved_cell

        console.print("pass@k samples saved against i.i.d. (mean over k >= 2): " + ", ".join(
            f"at most (any exact sampler) {saved_cell(*h)}" if s == BOUND else
            f"{s} {saved_cell(*h, ceiling_of(heads))}" for s, h in heads.items()))
