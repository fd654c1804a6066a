"""The ``parasample`` command line (typer): one module per command group, the shared guard on
bad input and the option types in :mod:`parasample.cli.common`.

Errors that describe bad input are one line, ``error: ...``, with exit code 2, never a
traceback (PARASAMPLE_DEBUG=1 shows it).
"""

from __future__ import annotations

import typer

from parasample import __version__
from parasample.cli import (
    bench_align,
    bench_dllm,
    bench_engines,
    bench_gsm8k,
    bench_mcmc,
    bench_passk,
    bench_rl,
    bench_spec,
    models,
    sample,
    train,
)
from parasample.cli.common import OneLineErrorsGroup, console, friendly_errors

__all__ = ["app"]

app = typer.Typer(
    cls=OneLineErrorsGroup,
    help="parasample: exact parallel sampling from language models, and benchmarks that "
         "compare samplers on equal compute.\n\n"
         "Families: correlated ancestral sampling (sample --sampler; bench passk), exact "
         "speculative decoding for AR LMs (sample --speculative; bench spec) and for masked "
         "diffusion LMs (bench dllm --part spec), masked-diffusion parallel decoding (bench "
         "dllm), MCMC / SMC for energies and reward-tilted LMs (bench mcmc, bench align), GRPO "
         "with correlated groups (train rl, bench rl), engines and bridges (bench engines: "
         "transformers, vLLM; --ray on the sweeps), real models (models; bench gsm8k).\n\n"
         "Run 'parasample COMMAND --help' for every option.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        console.print(__version__)
        raise typer.Exit()


app.command()(friendly_errors(sample.sample))
app.command()(friendly_errors(models.models))

train_app = typer.Typer(help="Train the small models parasample ships (reproducible: fixed seed).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
train_app.command("dllm")(friendly_errors(train.train_dllm))
train_app.command("ar")(friendly_errors(train.train_ar))
train_app.command("rl")(friendly_errors(train.train_rl))

bench_app = typer.Typer(help="Benchmarks: each runs on embedded defaults, shows progress, writes "
                        "CSV and PNG under --out, prints a summary and resumes when rerun.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
bench_app.command("dllm")(friendly_errors(bench_dllm.bench_dllm))
bench_app.command("passk")(friendly_errors(bench_passk.bench_passk))
bench_app.command("mcmc")(friendly_errors(bench_mcmc.bench_mcmc))
bench_app.command("align")(friendly_errors(bench_align.bench_align))
bench_app.command("engines")(friendly_errors(bench_engines.bench_engines))
bench_app.command("rl")(friendly_errors(bench_rl.bench_rl))
bench_app.command("spec")(friendly_errors(bench_spec.bench_spec))
bench_app.command("gsm8k")(friendly_errors(bench_gsm8k.bench_gsm8k))

