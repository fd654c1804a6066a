"""``parasample train dllm|ar``: retrain the small models parasample ships (fixed seed)."""

from __future__ import annotations

from enum import StrEnum
from functools import partial

import typer

from parasample.cli.common import console, seed_opt, setup, threads_opt

__all__ = ["DLLMTrainTask", "DLLM_CHECKPOINTS", "train_dllm", "train_ar"]

STATE_HELP = ("Full training state (weights, optimiser, RNG, curve), saved every 250 steps and on "
              "Ctrl-C; rerunning the same command resumes from it.")
EXPORT_HELP = "Where to write the small shipped checkpoint (float16) when training ends."


def _train(kind: str, config_cls, train_fn, steps: int | None, seed: int, state: str,
           export: str, threads: int, device: str, dtype: str) -> None:
    """Shared by the train commands: the config (its default steps unless given), progress bar,
    SIGTERM-as-Ctrl-C, export at the end."""
    import signal
    from pathlib import Path

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from parasample.models.trainer import export_checkpoint

    cfg = config_cls(seed=seed, **({} if steps is None else {"steps": steps}))
    dev, dt = setup(threads, device, dtype)
    # `kill` (SIGTERM) stops training like Ctrl-C: the state is saved and the run resumes later
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with Progress(TextColumn(f"train {kind}"), BarColumn(), TextColumn(
                  "{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=cfg.steps, loss=float("nan"))
        train_fn(cfg, Path(state), log=lambda m: bar.console.print(m, highlight=False),
                 progress=lambda i, n, m: bar.update(task, completed=i, loss=m["loss"]),
                 device=dev, autocast=None if dt is torch.float32 else dt)
    out = export_checkpoint(Path(state), Path(export))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


class DLLMTrainTask(StrEnum):
    chain = "chain"
    arith_short = "arith-short"


#: training recipe -> the shipped checkpoint it reproduces
DLLM_CHECKPOINTS = {"chain": "dllm-chain", "arith-short": "dllm-arith"}


def train_dllm(
    task: DLLMTrainTask = typer.Option(DLLMTrainTask.chain, "--task", help="chain: 14-operation "
                                       "chains with restated rules (answers fill 66% of the "
                                       "256-position window), continued from dllm-arith -> "
                                       "dllm-chain; arith-short: 4-operation chains from "
                                       "scratch -> dllm-arith."),
    steps: int = typer.Option(None, min=1, help="Optimiser steps. Default: the recipe's (chain: "
                              "2400 of batch 32, about 1.5 s each on 2 cores; arith-short: 4000 "
                              "of batch 64, about 0.9 s each)."),
    seed: int = seed_opt(0, "the weights and of every data draw"),
    state: str = typer.Option(None, help=STATE_HELP + " Default: "
                              "results/train/<checkpoint>.state.pt."),
    export: str = typer.Option(None, help=EXPORT_HELP + " Default: the recipe's shipped "
                               "checkpoint, src/parasample/models/checkpoints/<name>.pt."),
    threads: int = threads_opt(2),
    device: str = typer.Option("cpu", "--device", help="cpu (default: the shipped models were "
                               "trained there), auto, cuda or cuda:i."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (as shipped), or bfloat16 / "
                              "float16 autocast (weights stay float32)."),
):
    """Train the masked-diffusion LM on the arithmetic-chain task (LLaDA objective).

    Defaults reproduce the shipped checkpoint of the recipe (`dllm-chain`, or `dllm-arith` with
    --task arith-short; both were trained with 2 threads).
    """
    from parasample.models.train_dllm import PRESETS, DLLMTrainConfig
    from parasample.models.train_dllm import train_dllm as fn

    name = DLLM_CHECKPOINTS[task.value]
    _train("dllm", partial(DLLMTrainConfig, **PRESETS[task.value]), fn, steps, seed,
           state or f"results/train/{name}.state.pt",
           export or f"src/parasample/models/checkpoints/{name}.pt", threads, device, dtype)


def train_ar(
    steps: int = typer.Option(None, min=1, help="Optimiser steps (batch 64). Default: the "
                              "shipped model's budget, which stops with pass@1 inside "
                              "(0.2, 0.8)."),
    seed: int = seed_opt(0, "the weights and of every data draw"),
    state: str = typer.Option("results/train/ar-arith.state.pt", help=STATE_HELP),
    export: str = typer.Option("src/parasample/models/checkpoints/ar-arith.pt", help=EXPORT_HELP),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads (the shipped "
                                "model was trained with 1; other counts change float rounding)."),
    device: str = typer.Option("cpu", "--device", help="cpu (default: the shipped model was "
                               "trained there), auto, cuda or cuda:i."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (as shipped), or bfloat16 / "
                              "float16 autocast (weights stay float32)."),
):
    """Train the small causal LM on the arithmetic-chain task (for `bench passk`).

    Defaults reproduce the shipped checkpoint `ar-arith`.
    """
    from parasample.models.train_ar import ARTrainConfig
    from parasample.models.train_ar import train_ar as fn

    _train("ar", ARTrainConfig, fn, steps, seed, state, export, threads, device, dtype)
