"""``parasample bench spec``: exact speculative decoding (n-gram, sibling and draft-model
drafts; identical and rejection verifiers) against plain sequential sampling."""

from __future__ import annotations

import typer

from parasample.cli.common import BenchRun, bench_options, config, console, greater_than, progress
from parasample.cli.sample import Sampler
from parasample.errors import MissingInputError

__all__ = ["bench_spec"]


@bench_options("spec", quick="1 prompt per task, k = 4, 24 tokens, 2 toy prompts, 1 repetition, "
               "a 1-question identity table", seed="the prompts and the uniform sources")
def bench_spec(
    ctx: typer.Context,
    run: BenchRun,
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
    """

    from parasample.bench.plots import spec_plot
    from parasample.bench.spec import (
        SpecBenchConfig,
        groups,
        identity_rows,
        n_steps,
        spec_rows,
    )

    dev, dt, quick, threads, dtype = (run.device, run.dtype, run.quick, run.threads,
                                     run.dtype_name)
    seed = run.seed
    cfg = config(ctx, quick, SpecBenchConfig, dict(
        prompts=prompts, k=k, k_prompts=k_prompts, toy_prompts=toy_prompts,
        max_new_tokens=max_new_tokens, draft_len=draft_len, temperature=temperature,
        top_p=top_p, sampler=sampler.value, skip_lm=skip_lm, reps=reps,
        identity_prompts=identity_prompts, seed=seed))
    if not cfg.skip_lm:
        from parasample.targets.hf import smollm2_path

        try:
            smollm2_path()
        except FileNotFoundError as e:
            raise MissingInputError(f"{e} Or pass --skip-lm for the toy pair only.") from None
    out_dir = run.out()
    console.print(f"bench spec -> {out_dir}, {dev}, {dtype}, {threads} threads, "
                  f"{len(groups(cfg))} groups, draft length {cfg.draft_len}", highlight=False)
    with progress() as bar:
        job = bar.add_task("spec runs", total=n_steps(cfg))
        rows = spec_rows(cfg, out_dir, device=dev, dtype=dt,
                         progress=lambda n: bar.advance(job, n))
        ident = identity_rows(cfg, out_dir, device=dev, dtype=dt,
                              progress=lambda n: bar.advance(job, n))
    spec_plot(out_dir)
    _table(rows)
    if ident:
        _identity_table(ident)
    console.print(f"wrote spec.csv, identity.csv and spec.png in {out_dir}")


def _table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("model", "task", "batch", "method", "drafter / verify", "tokens / call",
              "acceptance", "tokens/s", "speedup (range)", "identical", title="bench spec")
    for r in rows:
        speed = (f"{r['speedup_vs_sequential']} ({r['speedup_min']}-{r['speedup_max']})"
                 if str(r["speedup_vs_sequential"]) else "-")
        t.add_row(r["model"], r["task"], r["batch"], r["method"],
                  f"{r['drafter']}/{r['verify']}" if r["drafter"] else "-",
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
