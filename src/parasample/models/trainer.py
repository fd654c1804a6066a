"""The resumable training loop shared by ``parasample train dllm`` and ``parasample train ar``.

One loop, the objective and data plugged in: AdamW with linear warm-up and cosine decay to 10%
of the peak rate, gradient clipping at 1, a held-out evaluation every ``eval_every`` steps, and
the full state (weights, optimiser, data RNG, curve) saved every ``ckpt_every`` steps and on
interruption, so a rerun of the same command continues where it stopped and ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from parasample.errors import InputError
from parasample.files import atomic_path

__all__ = ["lr_at", "run_training", "export_checkpoint"]


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, then raise KeyboardInterrupt: an
    optimiser step interrupted half-way would leave weights that no resumed run reproduces.
    Signal handlers can only be set from the main thread; elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt


def lr_at(step: int, *, lr: float, warmup: int, steps: int) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then cosine to lr / 10."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def run_training(model: torch.nn.Module, model_config: Any, cfg: Any, state_path: Path, *,
                 batch: Callable[[int, torch.Generator], Any],
                 loss: Callable[[Any, torch.Generator], torch.Tensor],
                 evaluate: Callable[[], dict[str, float]],
                 device: torch.device | str = "cpu", autocast: torch.dtype | None = None,
                 progress=None, log=None, eval_every: int = 100, ckpt_every: int = 250,
                 eval_at_start: bool = False, updates_per_batch: int = 1,
                 on_eval: Callable[[list[dict]], None] | None = None) -> dict:
    """Train ``model`` (or resume from ``state_path``) and return the final training state.

    ``cfg`` is a frozen dataclass with ``steps, lr, warmup, weight_decay, seed``; it is stored in
    the state and a resume with another config is refused. ``batch(step, g)`` draws a batch
    from the data generator ``g``; ``loss(batch, g)`` is the scalar objective (it may draw its
    masks from ``g``), or (objective, metrics of this step): those are kept for every step in the
    state's ``steps`` list, and their means since the last evaluation join its ``history`` row;
    ``evaluate()`` returns held-out metrics (the model is in eval mode); ``eval_at_start`` adds
    a step-0 row to ``history`` (where a run starts from a trained model).
    ``updates_per_batch`` optimiser updates are taken on each batch (PPO / GRPO's inner
    iterations; the step's metrics are the first's, on the batch as drawn); a step is one batch.
    ``progress(step, total, metrics)`` and ``log(message)`` are optional callbacks (the CLI
    shows a progress bar); training itself never prints. ``on_eval(history)`` is called after
    every evaluation with the history so far (the CLI writes its curve CSV there, so a killed
    run keeps its curve). The model trains on ``device`` (data
    and masks are drawn on the CPU, from the explicit generator, so a seed gives the same batches
    everywhere), under ``torch.autocast`` to ``autocast`` when given (weights stay float32). The
    shipped checkpoints were trained on the CPU in float32.
    """
    device = torch.device(device)
    model.to(device)
    amp = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else \
        contextlib.nullcontext
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                            weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    state = {"step": 0, "history": [], "steps": [], "elapsed_s": 0.0}
    if state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved["train_config"] != asdict(cfg):
            raise InputError(f"{state_path} was written with another training config; delete it "
                             "or use another --state path to start afresh.")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        g.set_state(saved["rng"])
        state = {"steps": saved.get("steps", []),  # states written before per-step metrics
                 **{k: saved[k] for k in ("step", "history", "elapsed_s")}}
        if log:
            log(f"resuming from step {state['step']} ({state_path})")

    def save():
        weights = {k: v.cpu() for k, v in model.state_dict().items()}
        with atomic_path(state_path) as tmp:  # an interruption never leaves a torn state
            torch.save({"model": weights, "optim": opt.state_dict(), "rng": g.get_state(),
                        "train_config": asdict(cfg), "model_config": model_config.to_dict(),
                        **state}, tmp)

    state_path.parent.mkdir(parents=True, exist_ok=True)
    model.train()
    t0, ema = time.perf_counter() - state["elapsed_s"], None

    def evaluate_into_history() -> None:
        """Held-out metrics of the current step, with the step metrics' means since the last
        evaluation. Also run on a resume that stopped inside an evaluation, so an interrupted
        run's history equals an uninterrupted one's."""
        model.eval()
        with torch.no_grad():
            metrics = evaluate()
        model.train()
        since = state["history"][-1]["step"] if state["history"] else 0
        window = [m for m in state["steps"] if m["step"] > since]
        means = {k: sum(m[k] for m in window) / len(window)
                 for k in (window[0] if window else {}) if k != "step"}
        state["history"].append({"step": state["step"],
                                 **({} if ema is None else {"loss": round(ema, 4)}),
                                 **{k: round(v, 4) for k, v in means.items()},
                                 **{k: round(v, 4) for k, v in metrics.items()},
                                 "elapsed_s": round(state["elapsed_s"], 1)})
        if log:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            lossed = "" if ema is None else f"loss {ema:.3f}, "
            log(f"step {state['step']}: {lossed}{shown}, {state['elapsed_s'] / 60:.1f} min")
        if on_eval:
            on_eval(list(state["history"]))

    def due() -> bool:  # an evaluation point whose row is not in the history yet
        at = state["step"] % eval_every == 0 or state["step"] == cfg.steps
        last = state["history"][-1]["step"] if state["history"] else None
        return at and last != state["step"] and (state["step"] > 0 or eval_at_start)

    try:
        if due():  # step 0 (eval_at_start), or a resume that stopped inside an evaluation
            evaluate_into_history()
        while state["step"] < cfg.steps:
            step = state["step"]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
            with amp():
                b = batch(step, g)
            with contextlib.ExitStack() as updating:
                for update in range(updates_per_batch):
                    with amp():
                        value = loss(b, g)
                    value, metrics = value if isinstance(value, tuple) else (value, None)
                    if update == 0:  # the metrics of the batch as drawn (on-policy)
                        loss_f, step_metrics = float(value.detach()), metrics
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    if update == 0:  # the updates and their bookkeeping happen together
                        updating.enter_context(_interrupts_deferred())
                    opt.step()
                ema = loss_f if ema is None else 0.98 * ema + 0.02 * loss_f
                state["step"] = step + 1
                if step_metrics is not None:
                    state["steps"].append({"step": step + 1, **step_metrics})
                state["elapsed_s"] = time.perf_counter() - t0
            if due():
                evaluate_into_history()
            if state["step"] % ckpt_every == 0:
                save()
            if progress:
                progress(state["step"], cfg.steps, {"loss": ema})
    finally:
        save()  # also on Ctrl-C: nothing is lost, the next run resumes here
    return {"model": model, "model_config": model_config, "train_config": cfg, **state}


def export_checkpoint(state_path: Path, out: Path) -> Path:
    """Write the small shipped checkpoint (float16 weights, configs, curve) from a state file."""
    saved = torch.load(state_path, weights_only=False)
    weights = {k: v.half() for k, v in saved["model"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "model_config": saved["model_config"],
                "train_config": saved["train_config"], "history": saved["history"],
                "step": saved["step"], "elapsed_s": saved["elapsed_s"]}, out)
    return out
