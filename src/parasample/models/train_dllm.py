"""Training the shipped masked-diffusion LM on arithmetic chains (``parasample train dllm``).

Objective (LLaDA SFT): for each example draw t ~ U(eps, 1], mask answer positions with probability
t, and minimise sum over masked positions of CE / t, normalised by the answer length; the prompt is
never masked. Made efficient for 2 CPU cores:

* **padding does not dominate**: EOS padding after the first EOS gets weight ``pad_weight``;
* **short answers mostly**: most batches use a ``short_gen``-long answer region; one batch in
  ``long_every`` uses the full ``gen_length`` so every position of the 256-long region is seen;
  rotary positions make the two consistent;
* **curriculum**: the number of chained operations grows from 1 to ``max_ops`` over the first
  ``curriculum_frac`` of training;
* **semi-autoregressive masks**: with probability ``prefix_prob`` the answer left of a random
  cut stays visible and only the rest is masked with probability t, the situation block decoding
  creates (still a masked-diffusion loss, with another mask distribution);
* **resumable**: the full training state (weights, optimiser, data RNG, curve) is saved every
  ``ckpt_every`` steps and on interruption; a rerun of the same command continues from it.

The shipped checkpoint holds float16 weights, the configs and the training curve.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from parasample.models.data import PROMPT_LEN, encode_answers, encode_prompts
from parasample.models.transformer import TinyTransformer, TransformerConfig
from parasample.tasks.arith import ArithChainTask, CharTokenizer

__all__ = ["DLLMTrainConfig", "masked_diffusion_loss", "train_dllm", "export_checkpoint"]


@dataclass(frozen=True)
class DLLMTrainConfig:
    """Everything that determines the trained weights (with the seed)."""

    steps: int = 2500
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    gen_length: int = 256
    short_gen: int = 64
    long_every: int = 16
    pad_weight: float = 0.1
    prefix_prob: float = 0.5
    max_ops: int = 4
    max_value: int = 20  # values 0..20: ~570 (value, op, operand) facts, 4 chained operations
    curriculum_frac: float = 0.15
    eps: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "gen_length", "short_gen", "long_every", "max_ops"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr={self.lr} must be in (0, 1).")
        if self.short_gen > self.gen_length:
            raise ValueError(f"short_gen={self.short_gen} exceeds gen_length={self.gen_length}.")


def masked_diffusion_loss(model, prompt: torch.Tensor, answer: torch.Tensor,
                          lengths: torch.Tensor, cfg: DLLMTrainConfig, mask_id: int,
                          g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the weighted masked-diffusion loss.

    Args: ``prompt [B, P]``, ``answer [B, G]`` (EOS-padded), ``lengths [B]`` (chars + first EOS).
    Returns: (scalar loss, ``[B, G]`` bool mask of the positions that were masked).
    """
    B, G = answer.shape
    t = cfg.eps + (1 - cfg.eps) * torch.rand(B, 1, generator=g)  # [B, 1]
    masked = torch.rand(B, G, generator=g) < t  # [B, G]
    pos = torch.arange(G)[None]  # [1, G]
    cut = (torch.rand(B, 1, generator=g) * (lengths[:, None] + 1)).long()  # [B, 1]
    prefix = torch.rand(B, 1, generator=g) < cfg.prefix_prob
    masked &= ~(prefix & (pos < cut))
    x = torch.cat([prompt, torch.where(masked, mask_id, answer)], dim=1)
    logits = model(x)[:, prompt.shape[1]:]  # [B, G, V]
    ce = F.cross_entropy(logits.reshape(B * G, -1), answer.reshape(-1), reduction="none")
    w = torch.where(pos < lengths[:, None], 1.0, cfg.pad_weight)  # [B, G]
    per_ex = (ce.view(B, G) * masked * w).sum(1) / (t[:, 0] * w.sum(1))
    return per_ex.mean(), masked


def _lr(step: int, cfg: DLLMTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _batch(step: int, cfg: DLLMTrainConfig, tok: CharTokenizer, g: torch.Generator):
    ramp = min(1.0, step / max(1, cfg.curriculum_frac * cfg.steps))
    top = 1 + round(ramp * (cfg.max_ops - 1))
    probs = []
    for _ in range(cfg.batch_size):
        n_ops = int(torch.randint(1, top + 1, (1,), generator=g))
        task = ArithChainTask(n_ops=n_ops, max_value=cfg.max_value)
        while True:  # training split only: held-out prompts are never trained on
            p = task.sample(g)
            if not task.is_test(p.prompt):
                break
        probs.append(p)
    G = cfg.gen_length if (step + 1) % cfg.long_every == 0 else cfg.short_gen
    answer, lengths = encode_answers(probs, tok, G)
    return encode_prompts([p.prompt for p in probs], tok), answer, lengths


@torch.no_grad()
def _heldout_token_accuracy(model, tok, batch) -> float:
    """Accuracy on the answer characters (not padding) of a fixed held-out batch, half masked."""
    prompt, answer, lengths, masked = batch
    x = torch.cat([prompt, torch.where(masked, tok.mask_id, answer)], dim=1)
    pred = model(x)[:, prompt.shape[1]:].argmax(-1)
    real = masked & (torch.arange(answer.shape[1])[None] < lengths[:, None] - 1)
    return float(((pred == answer) & real).sum() / real.sum().clamp(min=1))


def train_dllm(cfg: DLLMTrainConfig, state_path: Path, *, progress=None, log=None) -> dict:
    """Train (or resume from ``state_path``) and return the final training state dict.

    ``progress(step, total, metrics)`` and ``log(message)`` are optional callbacks (the CLI shows
    a progress bar); training itself never prints.
    """
    tok = CharTokenizer()
    torch.manual_seed(cfg.seed)  # weight init only; every data draw uses the explicit generator
    mcfg = TransformerConfig(vocab_size=tok.vocab_size, d_model=cfg.d_model,
                             n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                             max_len=PROMPT_LEN + cfg.gen_length, causal=False)
    model = TinyTransformer(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                            weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    state = {"step": 0, "history": [], "elapsed_s": 0.0}
    if state_path.exists():
        saved = torch.load(state_path, weights_only=False)
        if saved["train_config"] != asdict(cfg):
            raise ValueError(f"{state_path} was written with another training config; delete it "
                             "or use another --out to start afresh.")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        g.set_state(saved["rng"])
        state = {k: saved[k] for k in ("step", "history", "elapsed_s")}
        if log:
            log(f"resuming from step {state['step']} ({state_path})")

    eg = torch.Generator().manual_seed(10_000 + cfg.seed)
    eval_probs = ArithChainTask(n_ops=cfg.max_ops, max_value=cfg.max_value).problems(
        128, split="test", seed=cfg.seed)
    ea, el = encode_answers(eval_probs, tok, cfg.short_gen)
    eval_batch = (encode_prompts([p.prompt for p in eval_probs], tok), ea, el,
                  torch.rand(ea.shape, generator=eg) < 0.5)

    def save():
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "rng": g.get_state(),
                    "train_config": asdict(cfg), "model_config": mcfg.to_dict(), **state}, tmp)
        tmp.replace(state_path)  # atomic: an interruption never leaves a half-written state

    state_path.parent.mkdir(parents=True, exist_ok=True)
    model.train()
    t0, ema = time.perf_counter() - state["elapsed_s"], None
    try:
        while state["step"] < cfg.steps:
            step = state["step"]
            for group in opt.param_groups:
                group["lr"] = _lr(step, cfg)
            prompt, answer, lengths = _batch(step, cfg, tok, g)
            loss, _ = masked_diffusion_loss(model, prompt, answer, lengths, cfg, tok.mask_id, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss_f = float(loss.detach())
            ema = loss_f if ema is None else 0.98 * ema + 0.02 * loss_f
            state["step"] = step + 1
            state["elapsed_s"] = time.perf_counter() - t0
            if state["step"] % 100 == 0 or state["step"] == cfg.steps:
                model.eval()
                acc = _heldout_token_accuracy(model, tok, eval_batch)
                model.train()
                state["history"].append({"step": state["step"], "loss": round(ema, 4),
                                         "heldout_token_acc": round(acc, 4),
                                         "elapsed_s": round(state["elapsed_s"], 1)})
                if log:
                    log(f"step {state['step']}: loss {ema:.3f}, held-out token acc {acc:.3f}, "
                        f"{state['elapsed_s'] / 60:.1f} min")
            if state["step"] % 250 == 0:
                save()
            if progress:
                progress(state["step"], cfg.steps, {"loss": ema})
    finally:
        save()  # also on Ctrl-C: nothing is lost, the next run resumes here
    return {"model": model, "model_config": mcfg, "train_config": cfg, **state}


def export_checkpoint(state_path: Path, out: Path) -> Path:
    """Write the small shipped checkpoint (float16 weights, configs, curve) from a state file."""
    saved = torch.load(state_path, weights_only=False)
    weights = {k: v.half() for k, v in saved["model"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "model_config": saved["model_config"],
                "train_config": saved["train_config"], "history": saved["history"],
                "step": saved["step"], "elapsed_s": saved["elapsed_s"]}, out)
    return out
