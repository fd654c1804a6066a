"""``parasample bench gsm8k``: greedy GSM8K pass@1 of a chat model under the instruct
protocol."""

from __future__ import annotations

import typer

from parasample.cli.common import (
    BenchRun,
    bench_options,
    config,
    console,
    gsm8k_data_opt,
    lm_opt,
    progress,
)

__all__ = ["bench_gsm8k"]


@bench_options("gsm8k", quick="4 problems, 48 tokens", seed=None, out_default="gsm8k/<model>")
def bench_gsm8k(
    ctx: typer.Context,
    run: BenchRun,
    model: str = lm_opt("The chat model", default="qwen-coder-1.5b"),
    problems: int = typer.Option(200, "--problems", min=1, help="The first N GSM8K test "
                                 "problems."),
    max_new_tokens: int = typer.Option(320, "--max-new-tokens", "-n", min=1, help="Greedy "
                                       "tokens per answer at most (the protocol asks for a "
                                       "chain of thought; 256 or more)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Problems per generate "
                                   "call (left-padded)."),
    data: str = gsm8k_data_opt(),
):
    """Measures greedy GSM8K pass@1 of a chat model.

    Greedy GSM8K pass@1 of a chat model: the protocol's prompt (reason in words,
    final number as '#### N') through the chat template, greedy decoding, the answer extracted
    from the text these models write (#### / 'answer is' / boxed / last number outside code).
    Writes greedy.csv (every output), batches.csv and summary.csv (pass@1 +- SE, tokens/s);
    resumes when rerun.
    """

    from parasample.bench import gsm8k as bg
    from parasample.targets.named import lm_label, load_lm
    from parasample.tasks.gsm8k import load_gsm8k

    dev, dt, quick, threads, dtype = (run.device, run.dtype, run.quick, run.threads,
                                     run.dtype_name)
    cfg = config(ctx, quick, bg.GSM8KBenchConfig, dict(
        problems=problems, max_new_tokens=max_new_tokens, batch_size=batch_size))
    load_gsm8k(data, limit=cfg.problems)  # checked before the model loads
    label = lm_label(model)
    out_dir = run.out(label)
    with console.status(f"loading {model} ..."):
        lm = load_lm(model, dt, dev)
    console.print(f"bench gsm8k: {model}, {cfg.problems} problems, greedy, <= "
                  f"{cfg.max_new_tokens} tokens, batch {cfg.batch_size}, {dev}, {dtype}, "
                  f"{threads} threads -> {out_dir}", highlight=False)
    with progress() as bar:
        job = bar.add_task("problems", total=cfg.problems)
        bg.run_greedy(lm, label, cfg, out_dir, data=data,
                      progress=lambda n: bar.advance(job, n))
    row = bg.summary(lm, label, cfg, out_dir, dt)
    console.print(f"{label}: greedy GSM8K pass@1 {row['pass_at_1']:.3f} +- {row['stderr']:.3f} "
                  f"on {row['problems']} problems ({row['unfinished']} cut at the token budget),"
                  f" {row['tokens_per_s']} tokens/s; wrote {out_dir}/greedy.csv, summary.csv",
                  highlight=False)
