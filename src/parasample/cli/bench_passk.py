"""``parasample bench passk``: correlated parallel sampling, pass@k (seed 003)."""

from __future__ import annotations

import typer

from parasample.cli.common import (
    BenchRun,
    bench_options,
    config,
    console,
    explicit,
    greater_than,
    gsm8k_data_opt,
    lm_opt,
    progress,
)
from parasample.errors import InputError

#: bench passk's default sources (parasample.bench.passk.SAMPLERS; not imported here so that
#: --help stays fast)
SAMPLERS_DEFAULT = ("iid", "sobol", "lattice", "antithetic", "arithmetic")

__all__ = ["bench_passk"]


def _operand_range(text: str | None) -> tuple[int, int] | None:
    """``--operands LO..HI`` as (lo, hi); None keeps the model's own range."""
    if text is None:
        return None
    lo, sep, hi = text.partition("..")
    if not (sep and lo.isdigit() and hi.isdigit()):
        raise InputError(f"--operands {text!r}: write the range as LO..HI, e.g. 11..99.")
    return int(lo), int(hi)


@bench_options("passk",
               quick="k <= 8, a few problems, no GSM8K, about a minute",
               seed="the problems and of every source",
               ray=True)
def bench_passk(
    ctx: typer.Context,
    run: BenchRun,
    k_max: int = typer.Option(64, "--k-max", min=2, help="Largest k, a power of two (Sobol and "
                              "lattice batches need one); pass@k for k = 1, 2, 4, ..., k-max."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", callback=greater_than(0.0),
                                      help="Softmax temperature (> 0) of the small AR model, the "
                                      "same for every sampler."),
    lm_temperature: float = typer.Option(0.7, "--lm-temperature", callback=greater_than(0.0),
                                         help="Softmax temperature of SmolLM2 (> 0), the same "
                                         "for every sampler."),
    top_p: float = typer.Option(1.0, "--top-p", callback=greater_than(0.0, 1.0),
                                help="Nucleus mass in (0, 1], the same for every sampler and "
                                "model."),
    ar_problems: int = typer.Option(128, "--ar-problems", min=0, help="Held-out arithmetic "
                                    "chains for the shipped small AR model (0 skips it)."),
    ar_batches: int = typer.Option(4, "--ar-batches", min=1, help="Independent k-max batches per "
                                   "chain problem (R >= 1)."),
    add_problems: int = typer.Option(64, "--add-problems", min=0, help="Short-answer questions "
                                     "(0 skips them): single-digit additions for SmolLM2 (81 "
                                     "exist), two-digit products for the Qwen models (operands "
                                     "11..99 for the 1.5B: 7,921; 11..40 for the 0.5B: 900)."),
    operands: str = typer.Option(None, "--operands", help="Operand range LO..HI of the "
                                 "short-answer questions, e.g. 11..99 (default: the model's "
                                 "own, where its pass@1 at T = 0.7 is 0.2-0.7: 1..9 for "
                                 "SmolLM2, 11..99 for the 1.5B, 11..40 for the 0.5B)."),
    gsm8k_problems: int = typer.Option(3, "--gsm8k-problems", min=0, help="GSM8K test problems "
                                       "for SmolLM2 (0 skips them; about 2.5 min each for the "
                                       "five samplers on 2 cores)."),
    gsm8k_tokens: int = typer.Option(128, "--gsm8k-tokens", min=1, help="SmolLM2's answer budget "
                                     "on GSM8K (max new tokens, >= 1)."),
    data: str = gsm8k_data_opt(),
    samplers: list[str] = typer.Option(list(SAMPLERS_DEFAULT), "--samplers", "-s",
                                       help="Sources swept (repeatable; iid is the reference "
                                       "and must be among them; arithmetic:B carries B bits "
                                       "of the residual). Default: iid sobol lattice "
                                       "antithetic arithmetic."),
    model: str = lm_opt("The chat model of the short-answer and GSM8K tasks", "SmolLM2 answers "
                        "single-digit additions, the Qwen models two-digit products and GSM8K "
                        "under the instruct protocol; with a Qwen model the defaults become "
                        "its preset (see below) for every option you do not type."),
    ar_model: str = typer.Option("ar-arith", "--ar-model", help="Shipped AR checkpoint name or a "
                                 ".pt file from `parasample train ar`."),
    skip_throughput: bool = typer.Option(False, "--skip-throughput", help="Skip the engine vs "
                                         "transformers.generate timing (throughput.csv)."),
    engine: str = typer.Option("parasample", "--engine", help="parasample (its own engine) or "
                               "vllm: the --model's samples (SmolLM2, a Qwen model or a model "
                               "directory) drawn by vLLM with parasample's logits processor, "
                               "from the same sources, in the run's dtype (needs vLLM "
                               "installed; the small AR model always runs on parasample's "
                               "engine)."),
):
    """Measures pass@k of correlated against i.i.d. samples (samples saved at matched pass@k).

    Correlated parallel sampling: pass@k of i.i.d., scrambled Sobol, shifted lattice,
    antithetic and arithmetic samples on (a) the shipped small AR model on arithmetic chains,
    (b) SmolLM2 on single-digit addition questions, (c) SmolLM2 on GSM8K.

    With --model qwen-coder-0.5b / qwen-coder-1.5b (installed by scripts/install-models.sh)
    the preset is: no small-AR part, k-max 16, samplers iid, arithmetic, lattice, stratified
    (drawn as one group per k) and sobol, temperature 0.7, bfloat16 weights (about 2.7x faster
    than float32 on a CPU; --dtype float32 for the other), GSM8K under the instruct protocol
    (320 new tokens) and two-digit products; run the two workloads one at a time with
    --add-problems 0 (GSM8K) or --gsm8k-problems 0 (products), each sized to finish within an
    hour on 2 CPU cores.

    Writes passk.csv, summary.csv (samples saved at matched pass@k, bootstrap SE), throughput.csv
    (our engine vs transformers generate at the same batch and length) and passk.png; resumes
    when rerun.
    """

    from parasample.bench import passk as bp
    from parasample.bench.plots import passk_plot
    from parasample.cli.sample import load_ar_model

    dev, dt, quick, threads, dtype = (run.device, run.dtype, run.quick, run.threads,
                                     run.dtype_name)
    seed = run.seed
    if run.ray and engine == "vllm":
        raise InputError("--engine vllm runs one vLLM engine in this process; drop --ray.")
    executor = run.executor(ctx)  # a cluster that does not answer fails here
    kw = dict(k_max=k_max, temperature=temperature, lm_temperature=lm_temperature, top_p=top_p,
              ar_problems=ar_problems, ar_batches=ar_batches, add_problems=add_problems,
              gsm8k_problems=gsm8k_problems, gsm8k_tokens=gsm8k_tokens,
              operands=_operand_range(operands), samplers=tuple(samplers), seed=seed)
    from parasample.targets.pinned import MODELS as PINNED

    if model in PINNED and not quick:  # the real-model preset under the options typed
        typed = explicit(ctx)
        kw = {**kw, **{k: v for k, v in bp.qwen_preset(model).items() if k not in typed}}
        skip_throughput = skip_throughput or "skip_throughput" not in typed
        if "dtype" not in typed:  # bfloat16 runs these models 2.7x faster than float32 here
            from parasample.devices import resolve_dtype

            dtype, dt = "bfloat16", resolve_dtype("bfloat16", dev)
    cfg = config(ctx, quick, bp.PasskBenchConfig, kw)  # --quick: typed options still apply
    out_dir = run.out()
    # every input is checked before a model loads (SmolLM2 takes 20-50 s)
    if engine not in ("parasample", "vllm"):
        raise InputError(f"--engine {engine!r}: choose parasample or vllm.")
    if engine == "vllm":
        from parasample.integrations.vllm import require_vllm

        require_vllm()
    if cfg.add_problems or cfg.gsm8k_problems or not skip_throughput:
        from parasample.targets.named import require_lm

        require_lm(model)  # not installed: one line with the install command
    if cfg.add_problems:  # more questions than the task has: one line, before any model
        bp.short_task(model, cfg.operands).problems(cfg.add_problems, seed=seed)
    if cfg.gsm8k_problems:
        from parasample.tasks.gsm8k import load_gsm8k

        load_gsm8k(data, limit=cfg.gsm8k_problems)
    if engine == "vllm" and (cfg.add_problems or cfg.gsm8k_problems):
        from parasample.targets.named import lm_dir

        # last of the checks (a named model's directory is made here once): a lone .gguf is
        # one line, before any model loads
        vllm_dir = lm_dir(model)
    with console.status("loading models and problems ..."):
        specs = [bp.TaskSpec(kind, args, str(dev), dtype) for kind, args, n in (
            ("ar", (cfg.ar_problems, cfg.ar_batches, seed, ar_model, cfg.temperature),
             cfg.ar_problems),
            ("add", (cfg.add_problems, seed, cfg.lm_temperature, model, cfg.operands),
             cfg.add_problems),
            ("gsm8k", (cfg.gsm8k_problems, cfg.gsm8k_tokens, cfg.lm_temperature, data, model),
             cfg.gsm8k_problems)) if n]
        tasks = [bp.build_task(s) for s in specs]
        if engine == "vllm" and (cfg.add_problems or cfg.gsm8k_problems):
            from parasample.integrations.vllm import VLLMEngine, load_llm

            llm = load_llm(str(vllm_dir), dtype=dtype, device=str(dev), max_num_seqs=256)
            tasks = [t if s.kind == "ar" else t._replace(
                engine=VLLMEngine(llm, t.model.eos_id), model_name=f"{t.model_name}-vllm")
                for s, t in zip(specs, tasks, strict=True)]
        lm = None if skip_throughput else load_ar_model(model, dev, dt)
    if not tasks and lm is None:
        raise InputError("nothing to run: every task has 0 problems and --skip-throughput is "
                         "set; give --ar-problems, --add-problems or --gsm8k-problems > 0.")
    for t in tasks:
        console.print(f"  {t.model_name} on {t.name}: {len(t.problems)} problems x "
                      f"{t.batches} batch(es) x k={cfg.k_max} samples x {len(cfg.samplers)} "
                      f"samplers, <= {t.max_new_tokens} new tokens, temperature "
                      f"{t.temperature}", highlight=False)
    console.print(f"bench passk: k = {cfg.ks}, top-p {cfg.top_p}, {dev}, {dtype}, {threads} "
                  f"threads -> {out_dir}", highlight=False)
    rows_total = sum(len(t.problems) * t.batches * (sum(cfg.ks) if bp.own_groups(s, cfg) else
                                                    cfg.k_max)
                     for t in tasks for s in cfg.samplers)
    runs_total = 0 if lm is None else cfg.throughput_reps * (len(bp.SAMPLERS) + 2)
    prompt = "What is the sum of the first ten positive integers? Explain briefly."
    with progress() as bar:
        jobs = {"rows": bar.add_task("samples", total=rows_total),
                "runs": bar.add_task("timing runs", total=runs_total)}
        heads = bp.run_benchmark(cfg, out_dir, tasks, executor=executor, task_specs=specs,
                                 throughput_lm=lm,
                                 throughput_prompt=prompt,
                                 progress=lambda kind, n: bar.advance(jobs[kind], n))
    path = passk_plot(out_dir)
    _summary(out_dir, heads)
    written = [p for p in (out_dir / "passk.csv", out_dir / "summary.csv",
                           out_dir / "throughput.csv", path) if p is not None and p.exists()]
    console.print("wrote " + ", ".join(str(p) for p in written))


def saved_cell(head, se, dropped, ceiling: float | None = None) -> str:
    """``mean +- SE`` of samples saved, and the ks left out of the mean (see summary.csv).
    ``ceiling``: the union bound's mean; an exact sampler cannot be expected to save more, so
    a figure above it is flagged as drawn on the lucky side (noise), not read as a gain."""
    if head is None:
        return "n/a (outside the i.i.d. curve)"
    cell = f"{head:.1%} +- {se:.1%}" if se is not None else f"{head:.1%}"
    cell += f" (k {', '.join(map(str, dropped))} left out)" if dropped else ""
    if ceiling is not None and head > ceiling:
        cell += f", above the {ceiling:.1%} any exact sampler can save: noise"
    return cell


def ceiling_of(heads: dict) -> float | None:
    """The union bound's mean samples saved in one task's ``heads``, if it has one."""
    from parasample.bench.passk_summary import BOUND

    return heads.get(BOUND, (None,))[0]


def _summary(out_dir, heads) -> None:
    from rich.table import Table

    from parasample.bench.csvlog import read_csv
    from parasample.bench.passk_summary import BOUND

    t = Table("model", "task", "sampler", "pass@1", "pass@k_max", "distinct @k_max",
              "samples saved (mean over k >= 2)", title="bench passk")
    rows = read_csv(out_dir / "passk.csv")
    bound = [r for r in read_csv(out_dir / "summary.csv") if r["sampler"] == BOUND]
    k_max = max((int(x["k"]) for x in rows), default=0)
    for i, r in enumerate(rows):
        if int(r["k"]) != k_max:
            continue
        key = (r["model"], r["task"])
        p1 = next(x for x in rows if (x["model"], x["task"], x["sampler"], x["k"]) ==
                  (*key, r["sampler"], "1"))
        head, se, dropped = heads.get(key, {}).get(r["sampler"], (None, None, []))
        saved = "-" if r["sampler"] == "iid" else saved_cell(
            head, se, dropped, ceiling_of(heads.get(key, {})))
        t.add_row(*key, r["sampler"], f"{float(p1['pass_at_k']):.3f}",
                  f"{float(r['pass_at_k']):.3f} +- {float(r['stderr']):.3f}",
                  r["distinct_answers"], saved)
        last = i + 1 == len(rows) or (rows[i + 1]["model"], rows[i + 1]["task"]) != key
        by_k = {b["k"]: b["pass_at_k"] for b in bound if (b["model"], b["task"]) == key}
        if last and by_k and BOUND in heads.get(key, {}):  # after the task's last sampler
            t.add_row(*key, "bound: any exact sampler", f"{float(by_k['1']):.3f}",
                      f"{float(by_k[str(k_max)]):.3f}", "-", saved_cell(*heads[key][BOUND]))
    if rows:
        console.print(t)
        console.print(_stride_table(rows))
    tp = read_csv(out_dir / "throughput.csv")
    if tp:
        t2 = Table("engine", "prefill", "sampler", "tokens/s", "vs transformers", "wall vs iid",
                   title=f"throughput (SmolLM2, batch {tp[0]['batch_size']}, "
                         f"{tp[0]['new_tokens']} new tokens, median of {tp[0]['reps']})")
        for r in tp:
            t2.add_row(r["engine"], r["prefill"], r["sampler"], r["tokens_per_s"],
                       f"{float(r['ratio_vs_hf']):.2f}x", r["wall_vs_iid"] or "-")
        console.print(t2)


def _stride_table(rows: list[dict]):
    """Zero-variance k-batches (k = 4, 8, 16: GRPO group sizes) and the stride estimator's
    standard error against the first-k one, per sampler."""
    from rich.table import Table

    from parasample.noise import source_class

    ks = sorted({int(r["k"]) for r in rows})
    show = [k for k in (4, 8, 16) if k in ks]
    t = Table("model", "task", "sampler", *[f"zero-var @{k}" for k in show],
              "SE stride / first-k (mean over the k < k_max it splits into)",
              title="stride estimator and zero-variance batches (passk.csv)")
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["task"], r["sampler"]), {})[int(r["k"])] = r
    for (model, task, sampler), by_k in groups.items():
        ratios = []
        for k, r in by_k.items():
            a, b = ((r["stride_sampling_se"], r["sampling_se"]) if r["sampling_se"] else
                    (r["stride_stderr"], r["stderr"]))
            if k < max(ks) and source_class(sampler).splits_into(max(ks), k) and float(b) > 0:
                ratios.append(float(a) / float(b))
        ratio = f"{sum(ratios) / len(ratios):.2f}" if ratios else "-"
        t.add_row(model, task, sampler, *[f"{float(by_k[k]['zero_variance']):.3f} +- "
                                          f"{float(by_k[k]['zero_variance_se']):.3f}"
                                          for k in show], ratio)
    return t
