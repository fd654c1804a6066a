"""``parasample train dllm|ar``: retrain the small models parasample ships (fixed seed);
``parasample train rl``: GRPO on the shipped small AR model with correlated groups."""

from __future__ import annotations

from enum import StrEnum
from functools import partial

import typer

from parasample.cli.common import (
    console,
    eval_opts,
    greater_than,
    group_size_opt,
    grpo_lr_opt,
    loss_average_opt,
    seed_opt,
    setup,
    threads_opt,
    updates_opt,
)
from parasample.cli.sample import Sampler

__all__ = ["DLLMTrainTask", "DLLM_CHECKPOINTS", "train_dllm", "train_ar", "train_rl"]

# the options every `parasample train` command shares

def train_state_opt(default: str):
    return typer.Option(None, "--state", help="Full training state (weights, optimiser, RNG, "
                        "curve), saved every 250 steps (`train rl`: every evaluation) and on "
                        "Ctrl-C; rerunning the same command resumes from it. Default: "
                        f"{default}.")


def train_device_opt():
    return typer.Option("cpu", "--device", help="cpu (default: the shipped models were trained "
                        "there), auto, cuda or cuda:i.")


def train_dtype_opt():
    return typer.Option("float32", "--dtype", help="float32 (as shipped), or bfloat16 / float16 "
                        "autocast (weights stay float32).")


EXPORT_HELP = "Where to write the small shipped checkpoint (float16) when training ends."
RL_EVAL = eval_opts(every=25, problems=256)


def _train(kind: str, config_cls, train_fn, steps: int | None, seed: int, state: str,
           export: str | None, threads: int, device: str, dtype: str, on_eval=None,
           **config) -> dict:
    """Shared by the train commands: the config (its default steps unless given), progress bar,
    SIGTERM-as-Ctrl-C, export at the end (unless ``export`` is None); ``on_eval(cfg, history)``,
    when given, runs after every evaluation. Returns the final state."""
    import signal
    from pathlib import Path

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from parasample.models.trainer import export_checkpoint

    cfg = config_cls(seed=seed, **({} if steps is None else {"steps": steps}), **config)
    dev, dt = setup(threads, device, dtype)
    # `kill` (SIGTERM) stops training like Ctrl-C: the state is saved and the run resumes later
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    hooks = {} if on_eval is None else {"on_eval": partial(on_eval, cfg)}
    with Progress(TextColumn(f"train {kind}"), BarColumn(), TextColumn(
                  "{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=cfg.steps, loss=float("nan"))
        final = train_fn(cfg, Path(state), log=lambda m: bar.console.print(m, highlight=False),
                         progress=lambda i, n, m: bar.update(task, completed=i, loss=m["loss"]),
                         device=dev, autocast=None if dt is torch.float32 else dt, **hooks)
    if export is not None:
        out = export_checkpoint(Path(state), Path(export))
        console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return final


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
    state: str = train_state_opt("results/train/<checkpoint>.state.pt"),
    export: str = typer.Option(None, help=EXPORT_HELP + " Default: the recipe's shipped "
                               "checkpoint, src/parasample/models/checkpoints/<name>.pt."),
    threads: int = threads_opt(2),
    device: str = train_device_opt(),
    dtype: str = train_dtype_opt(),
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
    draft: bool = typer.Option(False, "--draft", help="Train the small draft model of "
                               "`bench spec` instead (same data and steps; d_model 64, 2 layers, "
                               "2 heads) -> ar-arith-draft."),
    state: str = train_state_opt("results/train/<checkpoint>.state.pt"),
    export: str = typer.Option(None, help=EXPORT_HELP + " Default: "
                               "src/parasample/models/checkpoints/<checkpoint>.pt (ar-arith, or "
                               "ar-arith-draft with --draft)."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads (the shipped "
                                "model was trained with 1; other counts change float rounding)."),
    device: str = train_device_opt(),
    dtype: str = train_dtype_opt(),
):
    """Train the small causal LM on the arithmetic-chain task (for `bench passk`), or its draft
    model (for `bench spec`).

    Defaults reproduce the shipped checkpoint `ar-arith` (`ar-arith-draft` with --draft).
    """
    from parasample.models.train_ar import DRAFT_PRESET, ARTrainConfig
    from parasample.models.train_ar import train_ar as fn

    name = "ar-arith-draft" if draft else "ar-arith"
    _train("ar", partial(ARTrainConfig, **(DRAFT_PRESET if draft else {})), fn, steps, seed,
           state or f"results/train/{name}.state.pt",
           export or f"src/parasample/models/checkpoints/{name}.pt", threads, device, dtype)


def train_rl(
    sampler: Sampler = typer.Option(Sampler.iid, "--sampler", "-s", help="Source of each group's "
                                    "uniforms: iid, arithmetic, stratified, lattice, sobol or "
                                    "antithetic (every sample stays an exact draw from the "
                                    "policy)."),
    group_size: int = group_size_opt(8),
    problems: int = typer.Option(16, "--problems-per-step", min=1, help="Groups per step (a step "
                                 "draws problems x G samples)."),
    steps: int = typer.Option(200, "--steps", min=1, help="Steps, one batch each (about 1.1 s "
                              "at 16 x 8 samples on 2 cores)."),
    updates: int = updates_opt(),
    loss_average: str = loss_average_opt(),
    lr: float = grpo_lr_opt("1e-4 collapses the shipped model's pass@1; 3e-5 is stable"),
    clip: float = typer.Option(0.2, "--clip", callback=greater_than(0.0, 1.0), help="Policy-ratio "
                               "clip epsilon in (0, 1)."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", callback=greater_than(0.0),
                                      help="Sampling temperature (> 0) of the policy."),
    eval_every: int = RL_EVAL[0],
    eval_problems: int = RL_EVAL[1],
    eval_samples: int = RL_EVAL[2],
    model: str = typer.Option("ar-arith", "--model", help="Shipped AR checkpoint name or a .pt "
                              "file from `parasample train ar` to start from."),
    seed: int = seed_opt(0, "the problems and of every group's source"),
    state: str = train_state_opt("results/train/rl-<sampler>-G<G>-seed<seed>.state.pt"),
    out: str = typer.Option(None, "--out", help="CSV of the held-out curve, bench rl's rl.csv "
                            "columns (step, mean reward and zero-variance fraction since the "
                            "last evaluation, pass@1, pass@G, seconds), rewritten after every "
                            "evaluation. Default: the state path with .csv."),
    threads: int = threads_opt(2),
    device: str = train_device_opt(),
    dtype: str = train_dtype_opt(),
):
    """GRPO on the shipped small AR model (arithmetic chains), groups drawn from a source.

    Group-relative advantages, clipped policy ratio; prints and writes held-out pass@1 and
    pass@G every --eval-every steps, with the fraction of zero-variance groups (all right or all
    wrong: no signal). Resumes from --state when rerun.
    """
    from pathlib import Path

    from parasample.bench.csvlog import write_csv
    from parasample.bench.rl import RL_HEADER, curve_rows
    from parasample.rl import GRPOConfig
    from parasample.rl import train_rl as fn

    state = state or f"results/train/rl-{sampler.value}-G{group_size}-seed{seed}.state.pt"
    path = Path(out) if out else Path(state).with_suffix("").with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write_curve(cfg: GRPOConfig, history: list[dict]) -> None:
        # after every evaluation, atomically: a killed or interrupted run keeps its curve so far
        write_csv(path, RL_HEADER, curve_rows(cfg, {"history": history}))

    final = _train("rl", GRPOConfig, fn, steps, seed, state, None, threads, device, dtype,
                   on_eval=write_curve, sampler=sampler.value, group_size=group_size,
                   problems_per_step=problems, updates_per_batch=updates,
                   loss_average=loss_average, lr=lr, clip=clip, temperature=temperature,
                   eval_every=eval_every, eval_problems=eval_problems,
                   eval_samples=eval_samples, model=model)
    write_curve(final["train_config"], final["history"])  # also when a rerun had nothing to do
    console.print(f"wrote {path}")
