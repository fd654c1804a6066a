"""Training the shipped small AR LM on arithmetic chains (``parasample train ar``).

A causal rotary transformer on the same sequence layout and tokenizer as the diffusion model:
``[PAD .. BOS prompt] [solution EOS]``, next-token cross-entropy on the solution and its EOS.
It exists so that ``bench passk`` has a fast model whose pass@1 at temperature 1 is well inside
(0, 1): the default budget is chosen to stop while the arithmetic facts are still partly
learned (pass@1 between 0.2 and 0.8), where pass@k has room to grow with k.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from parasample.errors import InputError, require_at_least
from parasample.models.data import PROMPT_LEN, encode_answers, encode_prompts
from parasample.models.trainer import export_checkpoint, run_training
from parasample.models.transformer import CausalLMAdapter, TinyTransformer, TransformerConfig
from parasample.tasks.arith import ArithChainTask, CharTokenizer

__all__ = ["ARTrainConfig", "DRAFT_PRESET", "ar_loss", "train_ar", "export_checkpoint",
           "heldout_pass1", "solved_fraction"]


@dataclass(frozen=True)
class ARTrainConfig:
    """Everything that determines the trained weights (with the seed)."""

    steps: int = 350  # optimiser steps, one batch each
    batch_size: int = 64  # problems per batch
    lr: float = 1e-3  # peak AdamW rate: linear warm-up, then cosine decay to lr / 10
    warmup: int = 50  # warm-up steps
    weight_decay: float = 0.01
    d_model: int = 128  # the causal transformer's width, depth and heads
    n_layers: int = 3
    n_heads: int = 4
    gen_length: int = 48  # answer region: a 4-step trace with values <= 20 and its EOS fit
    n_ops: int = 4  # chained operations per problem (ArithChainTask)
    max_value: int = 20  # every intermediate value lies in 0..max_value
    max_operand: int = 9  # operands are drawn from 1..max_operand
    seed: int = 0

    def __post_init__(self):
        require_at_least(self, 1, "steps", "batch_size", "gen_length", "warmup")
        if not 0 < self.lr < 1:
            raise InputError(f"lr={self.lr} must be in (0, 1).")
        ArithChainTask(n_ops=self.n_ops, max_operand=self.max_operand, max_value=self.max_value)

    def task(self) -> ArithChainTask:
        return ArithChainTask(n_ops=self.n_ops, max_operand=self.max_operand,
                              max_value=self.max_value)


#: The draft model of `bench spec` (``parasample train ar --draft`` -> ar-arith-draft): the
#: target's data, tokenizer and steps in a model about 5x smaller.
DRAFT_PRESET = {"d_model": 64, "n_layers": 2, "n_heads": 2}


def ar_loss(model, prompt: torch.Tensor, answer: torch.Tensor, lengths: torch.Tensor
            ) -> torch.Tensor:
    """Mean next-token CE over the solution characters and the first EOS.

    ``prompt [B, P]``, ``answer [B, G]`` (EOS-padded), ``lengths [B]`` (chars + first EOS).
    """
    x = torch.cat([prompt, answer], dim=1)  # [B, P + G]
    P, G = prompt.shape[1], answer.shape[1]
    dev = next(model.parameters()).device
    logits = model(x[:, :-1].to(dev))[:, P - 1:].float()  # [B, G, V]: predicts the answer
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), answer.to(dev).reshape(-1),
                         reduction="none").view(answer.shape).cpu()
    real = torch.arange(G)[None] < lengths[:, None]  # [B, G]
    return (ce * real).sum() / real.sum()


def _batch(cfg: ARTrainConfig, tok: CharTokenizer, g: torch.Generator):
    task, probs = cfg.task(), []
    while len(probs) < cfg.batch_size:  # training split only
        p = task.sample(g)
        if not task.is_test(p.prompt):
            probs.append(p)
    answer, lengths = encode_answers(probs, tok, cfg.gen_length)
    return encode_prompts([p.prompt for p in probs], tok), answer, lengths


@torch.no_grad()
def correct_matrix(adapter: CausalLMAdapter, task: ArithChainTask, problems: list, sampler: str,
                   k: int, generator: torch.Generator, config) -> torch.Tensor:
    """``[P, k]`` bool: which samples of one k-group of ``sampler`` per problem are correct."""
    from parasample.ancestral import generate
    from parasample.noise import make_source

    tok = CharTokenizer()
    ids = encode_prompts([p.prompt for p in problems], tok)  # [P, L]
    src = make_source(sampler, len(problems) * k, k, generator=generator)
    out = generate(adapter, ids, torch.ones_like(ids), src, config, samples_per_prompt=k)
    ok = torch.tensor([task.is_correct(tok.decode(r), problems[i // k].answer)
                       for i, r in enumerate(out.tokens)]).view(len(problems), k)
    return ok


def solved_fraction(adapter: CausalLMAdapter, task: ArithChainTask, problems: list, sampler: str,
                    k: int, generator: torch.Generator, config) -> float:
    """Fraction of ``problems`` with a correct answer among one k-group of ``sampler`` each
    (pass@k of that sampler; k = 1 with ``iid``: pass@1)."""
    ok = correct_matrix(adapter, task, problems, sampler, k, generator, config)
    return float(ok.any(1).double().mean())


def heldout_pass1(adapter: CausalLMAdapter, task: ArithChainTask, n: int, seed: int,
                  gen_length: int) -> float:
    """Fraction of ``n`` held-out problems solved by one temperature-1 sample each."""
    from parasample.ancestral import SamplingConfig

    return solved_fraction(adapter, task, task.problems(n, split="test", seed=seed), "iid", 1,
                           torch.Generator().manual_seed(seed),
                           SamplingConfig(max_new_tokens=gen_length))


def train_ar(cfg: ARTrainConfig, state_path: Path, *, progress=None, log=None, device="cpu",
             autocast=None) -> dict:
    """Train (or resume from ``state_path``) and return the final training state dict."""
    tok = CharTokenizer()
    torch.manual_seed(cfg.seed)  # weight init only; every data draw uses the explicit generator
    mcfg = TransformerConfig(vocab_size=tok.vocab_size, d_model=cfg.d_model,
                             n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                             max_len=PROMPT_LEN + cfg.gen_length, causal=True)
    model = TinyTransformer(mcfg)

    def evaluate():
        adapter = CausalLMAdapter(model, eos_id=tok.eos_id, tokenizer=tok)
        pass1 = heldout_pass1(adapter, cfg.task(), 128, cfg.seed, cfg.gen_length)
        return {"heldout_pass1": pass1}

    return run_training(model, mcfg, cfg, state_path, batch=lambda step, g: _batch(cfg, tok, g),
                        loss=lambda batch, g: ar_loss(model, *batch), evaluate=evaluate,
                        progress=progress, log=log, device=device, autocast=autocast)
