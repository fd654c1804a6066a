"""GRPO on the shipped small AR LM, groups drawn by any parasample source (seed 003's RL claim).

Each step draws ``problems_per_step`` training problems of the arithmetic-chain task the model was
trained on, G samples of each from one correlated group of the chosen source (every sample an
exact draw from the current policy, whatever the source), and rewards 1 for a correct final
answer. Advantages are group-relative, ``(r - mean_g r) / (std_g r + eps)``: a group whose
samples are all right or all wrong has zero advantage everywhere and teaches nothing, which is
what correlated groups are meant to make rarer. The objective is the clipped policy ratio
(PPO / GRPO) against the sampling policy's log-probabilities, averaged over each sample's tokens
and then over samples. One optimiser step per batch, so the ratio starts at 1 and the clipping
only bounds numerical drift between the KV-cached sampler and the training forward.

The loop, checkpointing and resumption are :func:`parasample.models.trainer.run_training`'s;
every random draw comes from the run's explicit generator or a generator derived from
(seed, sampler, G, step), so an interrupted run resumes to the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.errors import InputError, require_at_least
from parasample.models.data import PROMPT_LEN, encode_prompts
from parasample.noise import SOURCES, derive_generator, make_source

__all__ = ["GRPOConfig", "LOSS_AVERAGES", "group_advantages", "clipped_objective", "train_rl"]


#: How the clipped objective averages over tokens (:func:`clipped_objective`).
LOSS_AVERAGES = ("sample", "token")


@dataclass(frozen=True)
class GRPOConfig:
    """Everything that determines a GRPO run (with the seed).

    Attributes:
        sampler: the source of each group's uniforms (``iid``, ``arithmetic``, ``stratified``,
            ``lattice``, ...).
        group_size: G, samples per problem (allowed by the source: Sobol and lattice groups need
            a power of two, antithetic ones an even number).
        problems_per_step: groups per step; a step draws ``problems_per_step * G`` samples.
        updates_per_batch: optimiser updates on each step's batch (GRPO's inner iterations mu:
            after the first, the policy ratio moves away from 1 and the clip bounds it).
        steps, lr, warmup, weight_decay: the optimiser (AdamW, linear warm-up, cosine to lr/10,
            gradient norm clipped at 1: :mod:`parasample.models.trainer`).
        clip: the policy-ratio clip epsilon.
        loss_average: ``sample`` (each sample's token mean, then the mean over samples) or
            ``token`` (one mean over the batch's tokens): see :func:`clipped_objective`.
        temperature: of the sampling policy (1: the model's own distribution).
        eval_every, eval_problems, eval_samples: every ``eval_every`` steps, held-out pass@1
            (the fraction correct of ``eval_samples`` i.i.d. samples per problem: an unbiased
            estimate with a smaller variance than one sample's) and pass@G (one group of the
            sampler per problem).
        model: the shipped AR checkpoint (or a .pt file) to start from.
    """

    sampler: str = "iid"
    group_size: int = 8
    problems_per_step: int = 16
    updates_per_batch: int = 1
    steps: int = 200
    lr: float = 3e-5
    warmup: int = 1
    weight_decay: float = 0.0
    clip: float = 0.2
    loss_average: str = "sample"
    temperature: float = 1.0
    eval_every: int = 25
    eval_problems: int = 256
    eval_samples: int = 4
    model: str = "ar-arith"
    seed: int = 0

    def __post_init__(self):
        if self.sampler not in SOURCES:
            raise InputError(f"sampler {self.sampler!r}: choose one of {', '.join(SOURCES)}.")
        require_at_least(self, 1, "group_size", "problems_per_step", "updates_per_batch", "steps",
                         "warmup", "eval_every", "eval_problems", "eval_samples")
        if self.group_size < 2:
            raise InputError(f"group_size={self.group_size}: a group-relative advantage needs "
                             "G >= 2 samples per problem.")
        try:  # the source's own check (e.g. a scrambled Sobol net needs a power of two)
            make_source(self.sampler, self.group_size, self.group_size,
                        generator=torch.Generator().manual_seed(0))
        except ValueError as e:
            raise InputError(f"group size G={self.group_size} with the {self.sampler} sampler: "
                             f"{e}") from None
        if not 0 < self.lr < 1:
            raise InputError(f"lr={self.lr} must be in (0, 1).")
        if not 0 < self.clip < 1:
            raise InputError(f"clip={self.clip} must be in (0, 1).")
        if self.loss_average not in LOSS_AVERAGES:
            raise InputError(f"loss_average={self.loss_average!r}: choose one of "
                             f"{', '.join(LOSS_AVERAGES)}.")
        SamplingConfig(temperature=self.temperature)  # validates it


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``rewards [B, G]`` -> group-relative advantages ``[B, G]``; 0 in zero-variance groups."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
                      mask: torch.Tensor, clip: float, average: str = "sample") -> torch.Tensor:
    """The GRPO loss to minimise, ``-mean min(ratio A_i, clip(ratio) A_i)`` over tokens:
    ``average="sample"`` means over each sample's tokens, then over samples (GRPO's paper);
    ``"token"`` one mean over every token of the batch (DAPO, Dr. GRPO), so a long sample's
    tokens weigh as much as a short one's instead of being diluted by its length.

    ``logp, old_logp, mask [N, T]`` (current and sampling log-probs of the sampled tokens, 1 on
    real tokens), ``adv [N]``.
    """
    if average not in LOSS_AVERAGES:
        raise InputError(f"average={average!r}: choose one of {', '.join(LOSS_AVERAGES)}.")
    ratio = torch.exp(logp - old_logp)  # [N, T]
    a = adv[:, None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a) * mask  # [N, T]
    if average == "token":
        return -surrogate.sum() / mask.sum().clamp(min=1)
    per_sample = surrogate.sum(1) / mask.sum(1).clamp(min=1)  # [N]
    return -per_sample.mean()


def train_rl(cfg: GRPOConfig, state_path: Path, *, progress=None, log=None, device="cpu",
             autocast=None, on_eval=None) -> dict:
    """Run GRPO (or resume it from ``state_path``); returns the training state, whose
    ``history`` holds one row per evaluation (held-out pass@1 and pass@G, and the means of the
    per-step ``reward`` and ``zero_variance`` since the previous one) and ``steps`` every step's;
    ``on_eval(history)`` is called after every evaluation (``run_training``'s hook).
    """
    from parasample.models.registry import load_checkpoint
    from parasample.models.train_ar import correct_matrix, solved_fraction
    from parasample.models.trainer import run_training
    from parasample.models.transformer import CausalLMAdapter
    from parasample.tasks.arith import ArithChainTask, CharTokenizer

    model, saved = load_checkpoint(cfg.model)  # a fresh float32 copy: it is trained in place
    tc, tok = saved.get("train_config", {}), CharTokenizer()
    task = ArithChainTask(n_ops=tc.get("n_ops", 4), max_operand=tc.get("max_operand", 9),
                          max_value=tc.get("max_value", 20))
    gen_length = tc.get("gen_length", 48)
    adapter = CausalLMAdapter(model, eos_id=tok.eos_id, tokenizer=tok)
    sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=gen_length)
    B, G = cfg.problems_per_step, cfg.group_size
    # the same held-out problems for every run: seeds and samplers differ in training only
    heldout = task.problems(cfg.eval_problems, split="test", seed=0)

    def batch(step: int, g: torch.Generator) -> dict:
        problems = []
        while len(problems) < B:  # training split only
            p = task.sample(g)
            if not task.is_test(p.prompt):
                problems.append(p)
        ids = encode_prompts([p.prompt for p in problems], tok)  # [B, P]
        src = make_source(cfg.sampler, B * G, G,
                          generator=derive_generator(cfg.seed, "rl", cfg.sampler, G, step))
        out = generate(adapter, ids, torch.ones_like(ids), src, sampling, samples_per_prompt=G)
        rewards = torch.tensor([float(task.is_correct(tok.decode(r), problems[i // G].answer))
                                for i, r in enumerate(out.tokens)]).view(B, G)
        return {"ids": ids.repeat_interleave(G, dim=0), "tokens": out.tokens.cpu(),
                "old_logp": out.logprobs.cpu().float(), "lengths": out.lengths.cpu(),
                "rewards": rewards}

    def loss(b: dict, g: torch.Generator):
        dev = next(model.parameters()).device
        T = b["tokens"].shape[1]
        x = torch.cat([b["ids"], b["tokens"]], dim=1).to(dev)  # [B G, P + T]
        logits = model(x[:, :-1])[:, PROMPT_LEN - 1:].float()  # [B G, T, V]: the samples
        logp = torch.log_softmax(logits / cfg.temperature, dim=-1).gather(
            -1, b["tokens"].to(dev)[..., None])[..., 0]  # [B G, T]
        mask = (torch.arange(T)[None] < b["lengths"][:, None]).float().to(dev)  # [B G, T]
        adv = group_advantages(b["rewards"]).reshape(-1).to(dev)  # [B G]
        value = clipped_objective(logp, b["old_logp"].to(dev), adv, mask, cfg.clip,
                                  cfg.loss_average)
        r = b["rewards"]
        constant = (r.min(1).values == r.max(1).values).double()
        return value, {"reward": float(r.mean()), "zero_variance": float(constant.mean())}

    def evaluate() -> dict:
        pass1 = float(correct_matrix(adapter, task, heldout, "iid", cfg.eval_samples,
                                     derive_generator(cfg.seed, "rl-eval", "iid"),
                                     sampling).double().mean())
        passg = solved_fraction(adapter, task, heldout, cfg.sampler, G,
                                derive_generator(cfg.seed, "rl-eval", cfg.sampler, G), sampling)
        return {"heldout_pass1": pass1, f"heldout_pass{G}": passg}

    return run_training(model, model.cfg, cfg, state_path, batch=batch, loss=loss,
                        evaluate=evaluate, progress=progress, log=log, device=device,
                        autocast=autocast, eval_every=cfg.eval_every, ckpt_every=cfg.eval_every,
                        eval_at_start=True, updates_per_batch=cfg.updates_per_batch,
                        on_eval=on_eval)
