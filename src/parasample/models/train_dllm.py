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
* **result characters weigh more**: the characters of each computed value (after a step's second
  ``=`` and after ``#``) get weight ``result_weight``; they carry the arithmetic facts, the rest
  of a trace is copying that the model learns in a few hundred steps;
* **semi-autoregressive masks**: with probability ``prefix_prob`` the answer left of a random
  cut stays visible and only the rest is masked with probability t, the situation block decoding
  creates (still a masked-diffusion loss, with another mask distribution);
* **resumable**: the full training state (weights, optimiser, data RNG, curve) is saved every
  ``ckpt_every`` steps and on interruption; a rerun of the same command continues from it;
* **continued training**: ``init`` names a checkpoint (e.g. the shipped ``dllm-arith``) whose
  weights start the run, so a new task (long chains with restated rules, :data:`PRESETS`)
  builds on the facts an earlier model learned.

The shipped checkpoint holds float16 weights, the configs and the training curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from parasample.errors import InputError, require_at_least
from parasample.models.data import PROMPT_LEN, encode_answers, encode_prompts, result_positions
from parasample.models.trainer import export_checkpoint, run_training
from parasample.models.transformer import TinyTransformer, TransformerConfig
from parasample.tasks.arith import ArithChainTask, CharTokenizer

__all__ = ["DLLMTrainConfig", "PRESETS", "masked_diffusion_loss", "train_dllm",
           "export_checkpoint"]


@dataclass(frozen=True)
class DLLMTrainConfig:
    """Everything that determines the trained weights (with the seed)."""

    steps: int = 4000  # the shipped models' recipes: PRESETS
    batch_size: int = 64
    lr: float = 1e-3  # peak rate of AdamW (schedule: trainer.lr_at)
    warmup: int = 200
    weight_decay: float = 0.01
    d_model: int = 256  # bidirectional rotary transformer: width
    n_layers: int = 4  # depth
    n_heads: int = 4
    gen_length: int = 256  # answer region of the long batches and of decoding
    short_gen: int = 48  # answer region of the other batches
    long_every: int = 16  # one batch in long_every is long
    pad_weight: float = 0.1  # loss weight of the EOS padding after the first EOS
    prefix_prob: float = 0.7  # chance that a row keeps a visible answer prefix
    result_weight: float = 2.0  # loss weight of the computed values' characters
    max_ops: int = 4  # chained operations at most (the curriculum grows to it)
    # values 0..9, operands 1..5: single-character values, so every step is one of ~150 facts.
    # (values <= 20 gave 12.5% exact after 2500 steps: result characters were right 68% of the
    # time with the trace prefix visible; the facts, not the chaining, were the bottleneck.)
    max_value: int = 9
    max_operand: int = 5
    curriculum_frac: float = 0.15  # the fraction of training over which chains grow
    eps: float = 1e-3  # masking rates t are drawn from U(eps, 1]
    # the task's trace format (see ArithChainTask.restate) and the prompt region it needs
    restate: bool = False
    prompt_len: int = PROMPT_LEN
    # a checkpoint (shipped name or .pt path) whose weights start training; "" = random init
    init: str = ""
    seed: int = 0

    def __post_init__(self):
        require_at_least(self, 1, "steps", "batch_size", "gen_length", "short_gen", "long_every",
                         "max_ops", "prompt_len")
        if not 0 < self.lr < 1:
            raise InputError(f"lr={self.lr} must be in (0, 1).")
        if self.pad_weight < 0 or self.result_weight <= 0:
            raise InputError(f"pad_weight={self.pad_weight} must be >= 0 and result_weight="
                             f"{self.result_weight} > 0.")
        self.task(self.max_ops)
        if self.short_gen > self.gen_length:
            raise InputError(f"short_gen={self.short_gen} exceeds gen_length={self.gen_length}.")

    def task(self, n_ops: int) -> ArithChainTask:
        return ArithChainTask(n_ops=n_ops, max_operand=self.max_operand,
                              max_value=self.max_value, restate=self.restate)


#: Named training recipes: ``arith-short`` is the shipped ``dllm-arith`` (4-operation chains,
#: 34-character answers); ``chain`` is the shipped ``dllm-chain`` (14-operation chains with
#: restated rules, 170-character answers that fill 66% of the 256-position window), continued
#: from ``dllm-arith``'s weights.
PRESETS: dict[str, dict] = {
    "arith-short": {},
    "chain": dict(steps=2400, batch_size=32, warmup=100, lr=5e-4, short_gen=176, max_ops=14,
                  restate=True, prompt_len=96, init="dllm-arith", curriculum_frac=0.1),
}

def masked_diffusion_loss(model, prompt: torch.Tensor, answer: torch.Tensor,
                          lengths: torch.Tensor, results: torch.Tensor, cfg: DLLMTrainConfig,
                          mask_id: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the weighted masked-diffusion loss.

    Args: ``prompt [B, P]``, ``answer [B, G]`` (EOS-padded), ``lengths [B]`` (chars + first EOS),
    ``results [B, G]`` bool, the characters of computed values.
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
    dev = next(model.parameters()).device  # masks are drawn on the CPU (the data generator's)
    logits = model(x.to(dev))[:, prompt.shape[1]:].float()  # [B, G, V]
    ce = F.cross_entropy(logits.reshape(B * G, -1), answer.to(dev).reshape(-1),
                         reduction="none").cpu()
    w = torch.where(pos < lengths[:, None], 1.0, cfg.pad_weight)  # [B, G]
    w = torch.where(results, cfg.result_weight, w)
    per_ex = (ce.view(B, G) * masked * w).sum(1) / (t[:, 0] * w.sum(1))
    return per_ex.mean(), masked


def _batch(step: int, cfg: DLLMTrainConfig, tok: CharTokenizer, g: torch.Generator):
    ramp = min(1.0, step / max(1, cfg.curriculum_frac * cfg.steps))
    top = 1 + round(ramp * (cfg.max_ops - 1))
    probs = []
    for _ in range(cfg.batch_size):
        n_ops = int(torch.randint(1, top + 1, (1,), generator=g))
        task = cfg.task(n_ops)
        while True:  # training split only: held-out prompts are never trained on
            p = task.sample(g)
            if not task.is_test(p.prompt):
                break
        probs.append(p)
    G = cfg.gen_length if (step + 1) % cfg.long_every == 0 else cfg.short_gen
    answer, lengths = encode_answers(probs, tok, G)
    return (encode_prompts([p.prompt for p in probs], tok, cfg.prompt_len), answer, lengths,
            result_positions(probs, G))


@torch.no_grad()
def _heldout_accuracy(model, tok, batch) -> tuple[float, float]:
    """Accuracy on the answer characters (not padding) of a fixed held-out batch, half masked:
    over all of them, and over the result characters (the arithmetic facts)."""
    prompt, answer, lengths, results, masked = batch
    x = torch.cat([prompt, torch.where(masked, tok.mask_id, answer)], dim=1)
    pred = model(x.to(next(model.parameters()).device))[:, prompt.shape[1]:].argmax(-1).cpu()
    real = masked & (torch.arange(answer.shape[1])[None] < lengths[:, None] - 1)
    right = pred == answer
    return (float((right & real).sum() / real.sum().clamp(min=1)),
            float((right & real & results).sum() / (real & results).sum().clamp(min=1)))


def _load_init(model: TinyTransformer, name: str) -> None:
    """Start from a checkpoint's weights (rotary tables are rebuilt for this model's context)."""
    from parasample.models.registry import load_checkpoint

    init, _ = load_checkpoint(name)
    mine, theirs = model.cfg.to_dict(), init.cfg.to_dict()
    differ = [k for k in mine if k != "max_len" and mine[k] != theirs[k]]
    if differ:
        raise InputError(f"init checkpoint {name!r} has another architecture ("
                         + ", ".join(f"{k}={theirs[k]} vs {mine[k]}" for k in differ)
                         + "); train from scratch or match its sizes.")
    model.load_state_dict(init.state_dict())


def train_dllm(cfg: DLLMTrainConfig, state_path: Path, *, progress=None, log=None,
               device="cpu", autocast=None) -> dict:
    """Train (or resume from ``state_path``) and return the final training state dict (see
    :func:`~parasample.models.trainer.run_training` for the callbacks)."""
    tok = CharTokenizer()
    torch.manual_seed(cfg.seed)  # weight init only; every data draw uses the explicit generator
    mcfg = TransformerConfig(vocab_size=tok.vocab_size, d_model=cfg.d_model,
                             n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                             max_len=cfg.prompt_len + cfg.gen_length, causal=False)
    model = TinyTransformer(mcfg)
    if cfg.init:
        _load_init(model, cfg.init)

    eg = torch.Generator().manual_seed(10_000 + cfg.seed)
    eval_probs = cfg.task(cfg.max_ops).problems(128, split="test", seed=cfg.seed)
    ea, el = encode_answers(eval_probs, tok, cfg.short_gen)
    eval_batch = (encode_prompts([p.prompt for p in eval_probs], tok, cfg.prompt_len), ea, el,
                  result_positions(eval_probs, cfg.short_gen),
                  torch.rand(ea.shape, generator=eg) < 0.5)

    def evaluate():
        acc, res_acc = _heldout_accuracy(model, tok, eval_batch)
        return {"heldout_token_acc": acc, "heldout_result_acc": res_acc}

    def loss(batch, g):
        return masked_diffusion_loss(model, *batch, cfg, tok.mask_id, g)[0]

    return run_training(model, mcfg, cfg, state_path, batch=lambda step, g: _batch(
        step, cfg, tok, g), loss=loss, evaluate=evaluate, progress=progress, log=log,
        device=device, autocast=autocast)
