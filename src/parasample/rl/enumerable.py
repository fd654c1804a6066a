"""GRPO on an exactly enumerable task: steps to a target and gradient error, without noise.

Seed 003 claims that correlated groups reach a GRPO target in fewer steps. On a real model the
question drowns in evaluation noise (a held-out pass@1 is itself an estimate). Here the policy is
a table of next-token logits over a tiny vocabulary (V tokens, L positions; the logits of
position t depend on t and the two previous tokens, as in :class:`~parasample.targets.ToyARLM`),
so the V^L sequences can be enumerated: the expected reward J(theta) = sum_x pi(x) r(x) and its
gradient are computed exactly, and "steps until J reaches a target" is a property of the run.

The reward is verifiable: 1 when the tokens (digits 0..V-1) sum to ``target_sum``, else 0 (a
one-line puzzle whose answer the policy must learn to write). Every deterministic policy is a
table, so a policy that always writes one correct sequence exists: the reachable reward is 1.

GRPO is the library's (:mod:`parasample.rl.grpo`): group-relative advantages
:func:`~parasample.rl.grpo.group_advantages`, the clipped ratio
:func:`~parasample.rl.grpo.clipped_objective`, AdamW with betas (0.9, 0.98), the linear warm-up
and cosine schedule :func:`~parasample.models.trainer.lr_at`, gradient norm clipped at 1; groups
drawn by :func:`parasample.ancestral.generate` from any source (every sample an exact draw of
the policy). Many seeds train at once as one stacked table ``[S, ...]``: AdamW is elementwise and
each seed's loss touches only its slice, so the seeds are independent runs; only the gradient
clip is written by hand, per seed (``torch.nn.utils.clip_grad_norm_`` clips the norm of all
parameters together, which would couple the seeds).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.errors import InputError, require_at_least
from parasample.noise import SOURCES, derive_generator, make_source
from parasample.rl.grpo import clipped_objective, group_advantages

__all__ = ["EnumTask", "EnumGRPOConfig", "TabularPolicy", "train_enum", "gradient_study",
           "grpo_gradients"]


@dataclass(frozen=True)
class EnumTask:
    """The task: sequences of ``length`` digits in 0..vocab_size-1, reward 1 when they sum to
    ``target_sum``; the start policy's logits are ``sharpness * N(0, 1)`` drawn from
    ``init_seed`` (the same start for every run). The defaults start at J = 0.086."""

    vocab_size: int = 4
    length: int = 5
    target_sum: int = 9
    sharpness: float = 1.5
    init_seed: int = 0

    def __post_init__(self):
        if not 2 <= self.vocab_size <= 8 or not 2 <= self.length <= 6:
            raise InputError(f"vocab_size={self.vocab_size}, length={self.length}: the "
                             "enumerable task takes 2..8 tokens and 2..6 positions (V^L "
                             "sequences are enumerated).")
        if not 0 <= self.target_sum <= (self.vocab_size - 1) * self.length:
            top = (self.vocab_size - 1) * self.length
            raise InputError(f"target_sum={self.target_sum}: {self.length} digits of "
                             f"0..{self.vocab_size - 1} sum to 0..{top}.")
        if self.sharpness < 0:
            raise InputError(f"sharpness={self.sharpness} must be >= 0.")

    def sequences(self) -> torch.Tensor:
        """All ``[N = V^L, L]`` sequences, row n is n written in base V (first token most
        significant)."""
        return torch.tensor(list(itertools.product(range(self.vocab_size), repeat=self.length)),
                            dtype=torch.long)

    def reward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [..., L]`` -> ``[...]`` float64 reward in {0, 1}."""
        return (tokens.sum(-1) == self.target_sum).double()

    def index(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [..., L]`` -> ``[...]`` row of each sequence in :meth:`sequences`."""
        powers = self.vocab_size ** torch.arange(self.length - 1, -1, -1)
        return (tokens.long() * powers).sum(-1)

    def start_table(self, seeds: int) -> torch.Tensor:
        """``[S, L, V+1, V+1, V]`` float64: the start policy, repeated for S seeds."""
        V = self.vocab_size
        g = torch.Generator().manual_seed(self.init_seed)
        table = self.sharpness * torch.randn(self.length, V + 1, V + 1, V, generator=g)
        return table.double()[None].repeat(seeds, 1, 1, 1, 1)


class TabularPolicy(torch.nn.Module):
    """S independent tabular policies ``table [S, L, V+1, V+1, V]`` (index V: before the
    start). As an :class:`~parasample.targets.ARModel` for the ancestral engine, a row's prompt
    is one token, the index of its policy."""

    eos_id = None

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())
        self.vocab_size = table.shape[-1]
        self.length = table.shape[1]

    def _logits(self, policy: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """``policy [B]``, ``prefix [B, t]`` -> next-token logits ``[B, V]`` (float32: the
        engine's dtype; the training objective uses :meth:`token_logprobs` in float64)."""
        B, t = prefix.shape
        V = self.vocab_size
        ctx = torch.cat([torch.full((B, 2), V, dtype=torch.long), prefix], dim=1)  # [B, t+2]
        return self.table.detach()[policy, t, ctx[:, t], ctx[:, t + 1]].float()

    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        policy = prompt_ids[:, -1].long()
        prefix = torch.empty(len(policy), 0, dtype=torch.long)
        return self._logits(policy, prefix), (policy, prefix)

    def advance(self, state, tokens: torch.Tensor):
        policy, prefix = state
        prefix = torch.cat([prefix, tokens.long()[:, None]], dim=1)
        return self._logits(policy, prefix), (policy, prefix)

    def reorder(self, state, index: torch.Tensor):
        return state[0][index], state[1][index]

    def token_logprobs(self, policy: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``policy [B]``, ``tokens [B, L]`` -> ``[B, L]`` float64 log pi(x_t | x_<t),
        differentiable in the table."""
        B, L = tokens.shape
        V = self.vocab_size
        ctx = torch.cat([torch.full((B, 2), V, dtype=torch.long), tokens], dim=1)  # [B, L+2]
        pos = torch.arange(L)
        logits = self.table[policy[:, None], pos[None], ctx[:, :L], ctx[:, 1:L + 1]]  # [B,L,V]
        return torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]

    def sequence_logprobs(self, sequences: torch.Tensor) -> torch.Tensor:
        """``sequences [N, L]`` -> ``[S, N]`` log pi_s(x) of every policy."""
        S, N = self.table.shape[0], sequences.shape[0]
        policy = torch.arange(S).repeat_interleave(N)
        return self.token_logprobs(policy, sequences.repeat(S, 1)).sum(-1).view(S, N)


@dataclass(frozen=True)
class EnumGRPOConfig:
    """A GRPO run on :class:`EnumTask` (``seeds`` independent runs at once).

    Attributes:
        sampler, group_size: the source of each group's uniforms and G.
        samples_per_step: samples per step, ``samples_per_step / G`` groups of G (the same cost
            for every G).
        steps, lr, warmup, clip: the optimiser and the ratio clip, as in
            :class:`~parasample.rl.GRPOConfig`.
        seeds, seed: the number of independent runs, trained at once; step t's groups of all
            runs come from one source seeded from (seed, sampler, G, seeds, t), whose groups
            are independent of one another.
    """

    sampler: str = "iid"
    group_size: int = 8
    samples_per_step: int = 32
    steps: int = 150
    lr: float = 0.05
    warmup: int = 1
    clip: float = 0.2
    seeds: int = 64
    seed: int = 0
    task: EnumTask = EnumTask()

    def __post_init__(self):
        if self.sampler not in SOURCES:
            raise InputError(f"sampler {self.sampler!r}: choose one of {', '.join(SOURCES)}.")
        if self.group_size < 2:
            raise InputError(f"group_size={self.group_size}: a group-relative advantage needs "
                             "G >= 2.")
        try:  # the source's own check (a scrambled Sobol net needs a power of two, ...)
            make_source(self.sampler, self.group_size, self.group_size,
                        generator=torch.Generator().manual_seed(0))
        except ValueError as e:
            raise InputError(f"G={self.group_size} with the {self.sampler} sampler: {e}") from None
        if self.samples_per_step % self.group_size or self.samples_per_step < self.group_size:
            raise InputError(f"samples_per_step={self.samples_per_step} with G="
                             f"{self.group_size}: give a multiple of G, so each step has whole "
                             "groups.")
        require_at_least(self, 1, "steps", "warmup", "seeds")
        if not 0 < self.lr < 1 or not 0 < self.clip < 1:
            raise InputError(f"lr={self.lr} and clip={self.clip} must lie in (0, 1).")


def draw_groups(policy: TabularPolicy, rows: torch.Tensor, sampler: str, G: int,
                generator: torch.Generator) -> torch.Tensor:
    """``rows [R]`` policy index of each group -> ``[R, G, L]`` tokens: R groups of G samples
    from one source (its groups are independent of one another, so groups of different
    policies are independent runs)."""
    R, L = len(rows), policy.length
    src = make_source(sampler, R * G, G, generator=generator)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=L, ignore_eos=True)
    ids = rows[:, None]  # [R, 1]: a row's prompt is its policy's index
    gen = generate(policy, ids, torch.ones_like(ids), src, sampling, samples_per_prompt=G)
    return gen.tokens.view(R, G, L)


def train_enum(cfg: EnumGRPOConfig, progress=None) -> dict[str, torch.Tensor]:
    """Run ``cfg.seeds`` GRPO runs; returns ``reward [steps+1, S]`` (exact expected reward
    after each step, step 0 the start), ``sampled_reward`` and ``zero_variance`` ``[steps, S]``
    (the mean reward of the step's samples and its fraction of groups with equal rewards)."""
    from parasample.models.trainer import lr_at

    task, S, G = cfg.task, cfg.seeds, cfg.group_size
    M = cfg.samples_per_step // G  # groups per step and seed
    policy = TabularPolicy(task.start_table(S))
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    X, r_all = task.sequences(), task.reward(task.sequences())  # [N, L], [N]

    def exact() -> torch.Tensor:  # [S] expected reward of every run, by enumeration
        with torch.no_grad():
            return (policy.sequence_logprobs(X).exp() * r_all).sum(-1)

    reward, sampled, zero = [exact()], [], []
    rows = torch.arange(S).repeat_interleave(M)  # [S M]
    for step in range(cfg.steps):
        g = derive_generator(cfg.seed, "rl-enum", cfg.sampler, G, S, step)
        with torch.no_grad():
            tokens = draw_groups(policy, rows, cfg.sampler, G, g)  # [S M, G, L]
        r = task.reward(tokens)  # [S M, G]
        flat = tokens.view(-1, task.length)  # [S M G, L]
        who = rows.repeat_interleave(G)  # [S M G]
        logp = policy.token_logprobs(who, flat)  # [S M G, L]
        adv = group_advantages(r).reshape(-1)  # [S M G]
        # S x the mean over all samples = the sum of the S runs' own GRPO losses
        loss = S * clipped_objective(logp, logp.detach(), adv, torch.ones_like(logp), cfg.clip)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = policy.table.grad  # [S, ...]
        norm = grad.flatten(1).norm(dim=1)  # [S]: clip_grad_norm_(max_norm=1) per run
        grad.mul_((1.0 / (norm + 1e-6)).clamp(max=1.0).view(S, 1, 1, 1, 1))
        opt.step()
        reward.append(exact())
        sampled.append(r.view(S, M, G).mean((1, 2)))
        zero.append((r.min(1).values == r.max(1).values).double().view(S, M).mean(1))
        if progress:
            progress(1)
    return {"reward": torch.stack(reward), "sampled_reward": torch.stack(sampled),
            "zero_variance": torch.stack(zero)}


def grpo_gradients(task: EnumTask, table: torch.Tensor, tokens: torch.Tensor
                   ) -> torch.Tensor:
    """The GRPO update direction of each group at the sampling policy (ratio 1, where the clip
    is inactive): ``tokens [R, G, L]`` -> ``[R, P]``, minus the gradient of
    :func:`~parasample.rl.grpo.clipped_objective` on that one group, flattened. In closed form
    ``(1 / (G L)) sum_i A_i grad log pi(x_i)``, with the score vectors of all V^L sequences
    computed once (tested against autograd of the objective)."""
    R, G, L = tokens.shape
    score = score_vectors(task, table)  # [N, P]
    adv = group_advantages(task.reward(tokens))  # [R, G]
    weight = torch.zeros(R, score.shape[0], dtype=score.dtype)  # [R, N]: A summed per sequence
    weight.scatter_add_(1, task.index(tokens), adv)
    return weight @ score / (G * L)


def score_vectors(task: EnumTask, table: torch.Tensor) -> torch.Tensor:
    """``table [L, V+1, V+1, V]`` -> ``[N, P]`` grad log pi(x) of every sequence."""
    X = task.sequences()
    policy = TabularPolicy(table[None])
    logp = policy.sequence_logprobs(X)[0]  # [N]
    rows = [torch.autograd.grad(lp, policy.table, retain_graph=True)[0].flatten()
            for lp in logp]
    return torch.stack(rows)


def exact_gradient(task: EnumTask, table: torch.Tensor) -> torch.Tensor:
    """``[P]`` grad J of the expected reward, by enumeration."""
    policy = TabularPolicy(table[None])
    X = task.sequences()
    J = (policy.sequence_logprobs(X)[0].exp() * task.reward(X)).sum()
    return torch.autograd.grad(J, policy.table)[0].flatten()


def gradient_study(task: EnumTask, sampler: str, G: int, groups: int, seed: int = 0,
                   table: torch.Tensor | None = None) -> dict[str, float]:
    """The error of one group's GRPO update against the exact policy gradient, over ``groups``
    independent groups of ``sampler`` at the policy ``table`` (default: the start).

    GRPO's update is a scaled, biased estimate of grad J (the advantages are divided by the
    group's standard deviation; the log-probabilities are averaged over tokens), so the exact
    gradient is compared at its best scale c = <E g, grad J> / |grad J|^2. Returns ``mse`` =
    mean |g - c grad J|^2 = ``variance`` (mean |g - E g|^2, around this source's own expected
    update) + ``bias2`` (|E g - c grad J|^2), each also ``relative`` to |c grad J|^2; ``cosine``
    (the mean cosine of g with grad J, zero-variance groups counting 0), ``zero_variance`` (the
    fraction of groups with equal rewards) and ``scale`` c."""
    table = task.start_table(1)[0] if table is None else table
    policy = TabularPolicy(table[None])
    g = derive_generator(seed, "rl-enum-grad", sampler, G)
    with torch.no_grad():
        tokens = draw_groups(policy, torch.zeros(groups, dtype=torch.long), sampler, G, g)
    est = grpo_gradients(task, table, tokens)  # [R, P]
    true = exact_gradient(task, table)  # [P]
    mean = est.mean(0)
    c = float(mean @ true / (true @ true))
    ref = c * true
    variance = float(((est - mean) ** 2).sum(1).mean())
    bias2 = float(((mean - ref) ** 2).sum())
    norm2 = float(ref @ ref)
    cos = (est @ true) / (est.norm(dim=1) * true.norm()).clamp(min=1e-300)
    r = task.reward(tokens)
    return {"mse": variance + bias2, "variance": variance, "bias2": bias2,
            "relative_mse": (variance + bias2) / norm2, "relative_variance": variance / norm2,
            "relative_bias2": bias2 / norm2, "cosine": float(cos.mean()),
            "zero_variance": float((r.min(1).values == r.max(1).values).double().mean()),
            "scale": c}
