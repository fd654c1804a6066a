"""``parasample bench spec``: exact speculative decoding (n-gram, sibling and draft-model
drafts; identical and rejection verifiers) against plain sequential sampling."""

from __future__ import annotations

import typer

from parasample.cli.common import (
    BenchRun,
    bench_options,
    config,
    console,
    explicit,
    greater_than,
    lm_opt,
    progress,
)
from parasample.cli.sample import Sampler
from parasample.errors import InputError, MissingInputError

__all__ = ["bench_spec"]


@bench_options("spec", quick="1 prompt per task, k = 4, 24 tokens, 2 toy prompts, 1 repetition, "
               "a 1-question identity table", seed="the prompts and the uniform sources")
def bench_spec(
    ctx: typer.Context,
    run: BenchRun,
    model: str = lm_opt("The target", "smollm2 runs the default study (the toy pair, then "
                        "SmolLM2 on GSM8K and arithmetic); any other runs on GSM8K under the "
                        "instruct protocol, with its preset (see below)."),
    draft: str = typer.Option(None, "--draft", help="A draft model with the target's tokenizer "
                              "(qwen-coder-0.5b for qwen-coder-1.5b; a name or path as for "
                              "--model): adds its rows (fixed and adaptive draft length, both "
                              "verifiers) and transformers' assisted generation. Needs --model."),
    prompts: int = typer.Option(4, "--prompts", min=1, help="SmolLM2 prompts per task at batch "
                                "1 (GSM8K test questions; arithmetic chains in words)."),
    k: int = typer.Option(16, "-k", min=2, help="Samples per prompt of the k-sample groups."),
    k_prompts: int = typer.Option(1, "--k-prompts", min=1, help="Prompts of the k-sample groups "
                                  "(k samples each)."),
    toy_prompts: int = typer.Option(8, "--toy-prompts", min=1, help="Arithmetic chains of the "
                                    "toy target / draft pair (ar-arith / ar-arith-draft) at "
                                    "batch 1."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-n", min=1, help="SmolLM2 tokens "
                                       "per sample at most (stops at EOS); the toy pair writes "
                                       "its 48-token answers."),
    draft_len: int = typer.Option(4, "--draft-len", min=1, help="Tokens drafted per step."),
    temperature: float = typer.Option(0.7, "--temperature", "-t", callback=greater_than(0.0),
                                      help="SmolLM2's sampling temperature (> 0; 0.7 is common "
                                      "for sampling GSM8K solutions); the toy pair runs at 1."),
    top_p: float = typer.Option(0.95, "--top-p", callback=greater_than(0.0, 1.0),
                                help="SmolLM2's nucleus mass in (0, 1]."),
    sampler: Sampler = typer.Option(Sampler.iid, "--sampler", "-s", help="The uniform source "
                                    "of every run (sequential and speculative share it)."),
    skip_lm: bool = typer.Option(False, "--skip-lm", help="Only the toy target / draft pair."),
    reps: int = typer.Option(3, "--reps", min=1, help="Timed repetitions of every run, after "
                             "one warm-up; the order of the runs alternates between them, and "
                             "spec.csv keeps the median tokens/s and the range of the speedups."),
    identity_prompts: int = typer.Option(5, "--identity-prompts", min=0, help="Unseen GSM8K "
                                         "questions of the float32 identity table "
                                         "(identity.csv; 0 skips it)."),
):
    """Measures exact speculative decoding against sequential sampling (calls, tokens/s).

    Exact speculative decoding against sequential sampling from the same source, in one run:
    the toy pair ar-arith (target) / ar-arith-draft (draft model) on arithmetic chains at batch
    1 and k samples; SmolLM2-135M-Instruct on GSM8K and arithmetic prompts at batch 1 (n-gram
    drafts) and k samples (n-gram and sibling drafts); identical and rejection verifiers; and
    transformers' generate with prompt lookup against its own plain generate (the anchor).
    Every run is warmed up, then timed --reps times in alternating orders. Writes spec.csv
    (tokens/s, model calls, tokens per call, acceptance, median speedup and its range, fraction
    of rows token-identical to the sequential run), identity.csv (per source: how often float32
    speculative output equals sequential output) and spec.png. Resumes when rerun.

    Token identity: the identical verifier returns sequential sampling's tokens exactly in exact
    arithmetic (float64, or models whose verification pass computes the same logits as one-token
    steps) for every source; in float32 a many-token verification pass differs from one-token
    steps in the last bits, which can move an inverse-CDF boundary: rare for sources that do not
    carry a residual (a near-tie), frequent for arithmetic and stratified sampling, whose carried
    residual is divided by p(token) at every token (identity.csv measures both).

    With --model other than smollm2 (e.g. --model qwen-coder-1.5b --draft qwen-coder-0.5b,
    installed by scripts/install-models.sh) the run is that target on GSM8K, and the options
    you do not type take its preset: 2 prompts at batch 1, 8 samples of 1 prompt, 128 tokens,
    2 repetitions, no identity table (about 40 minutes for that pair on 2 CPU cores). It also
    writes costs.csv, the drafters' cost model: seconds per call of the target and the draft fed
    1 and draft-len + 1 tokens, at batch 1 and k, relative to the target's one-token call.
    """

    from parasample.bench.plots import spec_plot
    from parasample.bench.spec import SpecBenchConfig, groups, spec_rows
    from parasample.bench.spec_tables import cost_rows, identity_rows, n_steps

    dev, dt, quick, threads, dtype = (run.device, run.dtype, run.quick, run.threads,
                                     run.dtype_name)
    seed = run.seed
    from parasample.targets.named import lm_label, require_lm

    kw = dict(prompts=prompts, k=k, k_prompts=k_prompts, toy_prompts=toy_prompts,
              max_new_tokens=max_new_tokens, draft_len=draft_len, temperature=temperature,
              top_p=top_p, sampler=sampler.value, skip_lm=skip_lm, reps=reps,
              identity_prompts=identity_prompts, seed=seed, model=model, draft=draft)
    if model != "smollm2":
        if skip_lm:
            raise InputError("--skip-lm runs the toy pair only; drop --model or --skip-lm.")
        if not quick:  # the real-model preset under the options typed
            from parasample.bench.spec import real_model_preset

            typed = explicit(ctx)
            kw |= {k: v for k, v in real_model_preset().items() if k not in typed}
    cfg = config(ctx, quick, SpecBenchConfig, kw)
    if cfg.draft is not None and cfg.draft == cfg.model:
        console.print("note: the draft is the target itself (a check of the verifiers, not a "
                      "speedup)", highlight=False)
    if not cfg.skip_lm:
        try:
            for name in (cfg.model, cfg.draft):
                if name is not None:
                    require_lm(name)  # not installed: one line naming the install command
        except FileNotFoundError as e:
            hint = " Or pass --skip-lm for the toy pair only." if cfg.smollm2 else ""
            raise MissingInputError(f"{e}{hint}") from None
    out_dir = run.out()
    pair = lm_label(cfg.model) + (f" / draft {lm_label(cfg.draft)}" if cfg.draft else "")
    console.print(f"bench spec -> {out_dir}, {dev}, {dtype}, {threads} threads, "
                  f"{len(groups(cfg))} groups ({pair}), draft length {cfg.draft_len}",
                  highlight=False)
    with progress() as bar:
        job = bar.add_task("spec runs", total=n_steps(cfg))
        rows = spec_rows(cfg, out_dir, device=dev, dtype=dt,
                         progress=lambda n: bar.advance(job, n))
        ident = identity_rows(cfg, out_dir, device=dev, dtype=dt,
                              progress=lambda n: bar.advance(job, n))
    with console.status("cost model: timing single calls ..."):
        costs = cost_rows(cfg, out_dir, device=dev, dtype=dt)
    spec_plot(out_dir)
    _table(rows)
    if ident:
        _identity_table(ident)
    if costs:
        _cost_table(costs, rows, cfg, dev, dt)
    console.print(f"wrote spec.csv, identity.csv, costs.csv and spec.png in {out_dir}")


def _table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("model", "task", "batch", "method", "drafter / verify", "tokens / call",
              "acceptance", "tokens/s", "speedup (range)", "identical", title="bench spec")
    for r in rows:
        speed = (f"{r['speedup_vs_sequential']} ({r['speedup_min']}-{r['speedup_max']})"
                 if str(r["speedup_vs_sequential"]) else "-")
        adaptive = "/adaptive" if r["draft_len"] == "adaptive" else ""
        t.add_row(r["model"], r["task"], r["batch"], r["method"],
                  f"{r['drafter']}/{r['verify']}{adaptive}" if r["drafter"] else "-",
                  str(r["tokens_per_nfe"]) or "-", str(r["acceptance"]) or "-",
                  str(r["tokens_per_s"]), speed, str(r["identical_to_sequential"]) or "-")
    console.print(t)


def _identity_table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("sampler", "carry bits", "drafter", "T", "top-p", "identical rows",
              "first difference at", title="float32: speculative = sequential?")
    for r in rows:
        t.add_row(r["sampler"], str(r["carry_bits"]) or "all", r["drafter"],
                  str(r["temperature"]), str(r["top_p"]),
                  f"{r['identical_rows']}/{r['rows']}", str(r["mean_first_difference"]) or "-")
    console.print(t)


def _cost_table(costs: list[dict], rows: list[dict], cfg, dev, dt) -> None:
    """The cost model: per target and batch, the verification cost (D + 1 tokens fed, relative
    to one), the draft's per-token cost relative to the target's, and for each speculative row
    of that target its accepted tokens per target call and the speedup those predict."""
    from rich.table import Table

    from parasample.bench.spec_tables import cost_models

    D = cfg.draft_len
    cost = {(r["model"], str(r["batch"]), str(r["tokens_fed"])): float(r["relative_to_target"])
            for r in costs}
    t = Table("target", "batch", "verify D+1 / 1 token", "draft token / target token",
              "drafter / verify", "tokens / target call (per row)", "predicted speedup",
              "measured", title=f"cost model (D = {D})")
    for models, _ in cost_models(cfg, dev, dt):
        target = models[0][0]
        draft_label = models[1][0] if len(models) > 1 else None
        for batch in sorted({str(r["batch"]) for r in costs if r["model"] == target}, key=int):
            verify = cost.get((target, batch, str(D + 1)))
            draft = cost.get((draft_label, batch, "1"))
            label = "1" if batch == "1" else f"k={batch}"
            for r in rows:
                if r["model"] != target or r["batch"] != label or r["method"] != "speculative" \
                        or str(r["draft_len"]) != str(D) or verify is None:
                    continue
                per_call = float(r["tokens_per_nfe"]) / int(batch)  # a row's tokens per call
                drafted = D * (draft or 0.0) if r["drafter"] == "model" else 0.0
                t.add_row(target, batch, f"{verify:.2f}", "-" if draft is None else
                          f"{draft:.2f}", f"{r['drafter']}/{r['verify']}", f"{per_call:.2f}",
                          f"{per_call / (verify + drafted):.2f}",
                          str(r["speedup_vs_sequential"]))
    console.print(t)
