"""Exactly enumerable toy targets: the cyclic Ising chain and a small random AR LM (+ reward tilt).

Their exact distributions come from :mod:`parasample.targets.exact` by enumeration, so every
sampler can be checked against the truth (DESIGN.md, "Distributional tests on exact targets").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from parasample.errors import InputError

__all__ = ["IsingChain", "ToyARLM", "ToyMaskedLM", "TiltedTarget", "count_reward"]

#: Largest vocabulary and length of the toy AR LM (V^L = 262144 states stays enumerable).
TOY_MAX_VOCAB, TOY_MAX_LENGTH = 8, 6


@dataclass(frozen=True)
class IsingChain:
    """Cyclic Ising chain on {-1, +1}^n: E(x) = -(beta/2) sum_i x_i x_{i-1} (indices mod n).

    pi(x) is proportional to exp(-E(x)). Tokens are {0, 1} and map to spins through the
    one-dimensional embedding table :attr:`embedding` (token 0 -> -1, token 1 -> +1), so the
    energy is a differentiable function of embeddings, as gradient samplers (p-NCG) need.
    """

    n: int
    beta: float = 0.42
    vocab_size: int = field(default=2, init=False)

    def __post_init__(self):
        if self.n < 2:
            raise InputError(f"n={self.n}: the cyclic Ising chain needs at least 2 spins.")
        if not self.beta > 0:
            raise InputError(f"beta={self.beta}: the inverse temperature must be > 0.")

    @property
    def length(self) -> int:
        return self.n

    @property
    def embedding(self) -> torch.Tensor:
        """``[V=2, D=1]`` spin value of each token."""
        return torch.tensor([[-1.0], [1.0]])

    def log_prob_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """``e [B, n, 1]`` (spins, possibly relaxed) -> ``[B]`` -E(x), differentiable."""
        x = e[..., 0]  # [B, n]
        return 0.5 * self.beta * (x * torch.roll(x, 1, dims=-1)).sum(-1)

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, n]`` in {0, 1} -> ``[B]`` log pi up to a constant."""
        return self.log_prob_embedded(self.embedding[tokens.long()])


class ToyARLM:
    """A random autoregressive LM over a tiny vocabulary, exactly enumerable.

    The next-token logits depend on the position and the two previous tokens through a random
    table ``[L, V+1, V+1, V]`` (index V stands for "before the start"), scaled by ``sharpness``.
    With ``eos_id`` set, that token ends the sequence: later positions are filled with EOS and
    sequences that continue after EOS have probability zero.

    It implements both :class:`~parasample.targets.ARModel` (for the ancestral engine) and
    :class:`~parasample.targets.EnergyTarget` (``log_prob`` of full sequences).

    Args:
        vocab_size: V <= 8.
        length: L <= 6, the number of generated tokens.
        generator: draws the logits table.
        sharpness: scale of the random logits (larger = peakier, more duplicates under iid).
        eos_id: optional end-of-sequence token.
    """

    def __init__(self, vocab_size: int = 4, length: int = 4, *, generator: torch.Generator,
                 sharpness: float = 1.5, eos_id: int | None = None):
        if not 2 <= vocab_size <= TOY_MAX_VOCAB:
            raise InputError(f"vocab_size={vocab_size}: the toy AR LM supports 2..{TOY_MAX_VOCAB}.")
        if not 1 <= length <= TOY_MAX_LENGTH:
            raise InputError(f"length={length}: the toy AR LM supports 1..{TOY_MAX_LENGTH}.")
        if eos_id is not None and not 0 <= eos_id < vocab_size:
            raise InputError(f"eos_id={eos_id} is not a token of the vocabulary "
                             f"0..{vocab_size - 1}.")
        self.vocab_size, self.length, self.eos_id = vocab_size, length, eos_id
        V = vocab_size
        self.table = sharpness * torch.randn(length, V + 1, V + 1, V, generator=generator)

    # -- ARModel -------------------------------------------------------------------------
    def _logits_after(self, prefix: torch.Tensor) -> torch.Tensor:
        """``prefix [B, t]`` -> next-token logits ``[B, V]`` (float32)."""
        B, t = prefix.shape
        return self._logits_at(prefix, torch.full((B,), t, dtype=torch.long))

    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """The toy LM is unconditional: the prompt only sets the batch size."""
        prefix = torch.empty(prompt_ids.shape[0], 0, dtype=torch.long)
        return self._logits_after(prefix), prefix

    def advance(self, state: torch.Tensor, tokens: torch.Tensor):
        prefix = torch.cat([state, tokens.long()[:, None]], dim=1)
        return self._logits_after(prefix), prefix

    def reorder(self, state, index: torch.Tensor):
        """The state of rows ``index [B]`` (SMC resampling)."""
        if isinstance(state, tuple):  # ragged, after extend / rollback
            return state[0][index], state[1][index]
        return state[index]

    def extend(self, state, tokens: torch.Tensor):
        """Append ``tokens [B, D]`` -> (logits ``[B, D, V]``, ragged state ``(prefixes [B, T],
        lengths [B])``): speculative decoding's verification pass."""
        prefix, length = state if isinstance(state, tuple) else (
            state, torch.full((state.shape[0],), state.shape[1], dtype=torch.long))
        B, D = tokens.shape
        T = int(length.max()) + D
        buf = torch.zeros(B, T, dtype=torch.long)
        buf[:, :prefix.shape[1]] = prefix[:, :T]
        rows = torch.arange(B)[:, None]
        buf[rows, length[:, None] + torch.arange(D)] = tokens.long()
        logits = torch.stack([self._logits_at(buf, length + j + 1) for j in range(D)], dim=1)
        return logits, (buf, length + D)

    def rollback(self, state, drop: torch.Tensor):
        """Forget the last ``drop[b]`` tokens of each row (ragged state from :meth:`extend`)."""
        prefix, length = state
        return prefix, length - drop.cpu()

    def _logits_at(self, buf: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[B, V]`` after the first ``length[b]`` tokens of row b of ``buf``
        (depending on the position and the two tokens before it). After EOS the sequence is
        over: only EOS can follow (padding), with probability one."""
        if int(length.max()) >= self.length:
            raise InputError(f"the toy LM generates {self.length} tokens; a row would pass it.")
        rows = torch.arange(buf.shape[0])
        start = torch.full((buf.shape[0], 2), self.vocab_size, dtype=torch.long)
        ctx = torch.cat([start, buf], dim=1)  # [B, T + 2]
        logits = self.table[length, ctx[rows, length], ctx[rows, length + 1]].clone()  # [B, V]
        if self.eos_id is not None:
            seen = torch.arange(buf.shape[1])[None] < length[:, None]
            done = ((buf == self.eos_id) & seen).any(dim=1)
            logits[done] = float("-inf")
            logits[done, self.eos_id] = 0.0
        return logits

    # -- EnergyTarget --------------------------------------------------------------------
    @property
    def embedding(self) -> torch.Tensor:
        """``[V, V]`` one-hot embedding table (for gradient samplers such as p-NCG)."""
        return torch.eye(self.vocab_size)

    def log_prob_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """``e [B, L, V]`` -> ``[B]``: the multilinear extension of log p in the one-hot
        embeddings, equal to :meth:`log_prob` at one-hot points and differentiable everywhere.

        Only for toys without EOS (EOS makes the conditionals non-multilinear).
        """
        if self.eos_id is not None:
            raise InputError("log_prob_embedded needs a toy LM without eos_id.")
        B, L, V = e.shape
        start = torch.zeros(B, 2, V + 1, dtype=e.dtype)
        start[..., V] = 1.0
        ctx = torch.cat([start, torch.nn.functional.pad(e, (0, 1))], dim=1)  # [B, L+2, V+1]
        total = e.new_zeros(B)
        for t in range(L):
            logp = torch.log_softmax(self.table[t].to(e.dtype), dim=-1)  # [V+1, V+1, V]
            total = total + torch.einsum("ba,bc,acv,bv->b", ctx[:, t], ctx[:, t + 1], logp,
                                         e[:, t])
        return total

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L]`` -> ``[B]`` exact log p(tokens) (-inf for impossible sequences)."""
        B, L = tokens.shape
        if L != self.length:
            raise InputError(f"tokens have length {L}; this toy LM generates length {self.length}.")
        total = torch.zeros(B)
        for t in range(L):
            logp = torch.log_softmax(self._logits_after(tokens[:, :t]), dim=-1)  # [B, V]
            total = total + logp.gather(1, tokens[:, t:t + 1].long())[:, 0]
        return total


class ToyMaskedLM:
    """A random masked (diffusion) LM over a tiny vocabulary, with an exactly enumerable
    any-order law (:func:`~parasample.targets.exact.any_order_distribution`).

    Sequences are ``[prompt_len dummy tokens, length answer tokens]``; tokens 0..V-1 are real
    and ``mask_id = V``. The logits at answer position j depend on every unmasked answer
    position i != j through a random pairwise table (and a random bias per position), so the
    law of one-token-per-step decoding depends on the order in which positions are revealed.

    Args:
        vocab_size: V real tokens (2..8); the model's vocabulary has V + 1 entries.
        length: answer positions (1..6).
        generator: draws the tables.
        sharpness: scale of the random logits.
        prompt_len: dummy prompt positions before the answer.
    """

    def __init__(self, vocab_size: int = 3, length: int = 4, *, generator: torch.Generator,
                 sharpness: float = 1.5, prompt_len: int = 1):
        if not 2 <= vocab_size <= TOY_MAX_VOCAB:
            raise InputError(f"vocab_size={vocab_size}: the toy masked LM supports "
                             f"2..{TOY_MAX_VOCAB}.")
        if not 1 <= length <= TOY_MAX_LENGTH:
            raise InputError(f"length={length}: the toy masked LM supports 1..{TOY_MAX_LENGTH}.")
        V, L = vocab_size, length
        self.vocab_size, self.mask_id, self.length, self.prompt_len = V + 1, V, L, prompt_len
        self.unary = sharpness * torch.randn(L, V, generator=generator)  # [L, V]
        pair = sharpness * torch.randn(L, L, V, V, generator=generator)  # [j, i, a, c]
        self.pair = pair * (1 - torch.eye(L))[:, :, None, None]  # no effect of a position on itself

    def logits(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        """``tokens [B, prompt_len + length]`` -> ``[B, prompt_len + length, V + 1]``."""
        P, V = self.prompt_len, self.mask_id
        ans = tokens[:, P:]  # [B, L]
        known = torch.nn.functional.one_hot(ans.clamp(max=V - 1), V).float()
        known = known * (ans != self.mask_id)[..., None]  # [B, L, V], 0 where masked
        out = self.unary[None] + torch.einsum("bia,jiac->bjc", known, self.pair)  # [B, L, V]
        out = torch.nn.functional.pad(out, (0, 1))  # the mask token's logit (never proposed)
        return torch.cat([out.new_zeros(out.shape[0], P, V + 1), out], dim=1)


@dataclass(frozen=True)
class count_reward:  # noqa: N801 - used like a function: count_reward(1)(tokens)
    """Reward r(y) = number of occurrences of ``token`` in y: ``tokens [B, L] -> [B]``.

    Additive over positions, so :meth:`partial` gives the exact reward-so-far that SMC twists
    with, and :meth:`embedded` its differentiable form on one-hot embeddings.
    """

    token: int

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens == self.token).sum(-1).to(torch.float32)

    def partial(self, tokens: torch.Tensor) -> torch.Tensor:
        """Reward of a prefix ``[B, t]`` (the same count, so r_L = r)."""
        return self(tokens)

    def embedded(self, e: torch.Tensor) -> torch.Tensor:
        """``e [B, L, V]`` one-hot -> ``[B]``."""
        return e[..., self.token].sum(-1)


class TiltedTarget:
    """Reward-tilted target pi(y) proportional to p(y) exp(r(y) / beta).

    ``base`` is any EnergyTarget (log p); ``reward`` maps ``[B, L] -> [B]``. Attributes other
    than ``log_prob`` (vocab_size, length, the AR interface) are those of ``base``.
    """

    def __init__(self, base, reward: Callable[[torch.Tensor], torch.Tensor], beta: float):
        if not beta > 0:
            raise InputError(f"beta={beta}: the tilt temperature must be > 0 (pi ~ p exp(r/beta)).")
        self.base, self.reward, self.beta = base, reward, beta

    def __getattr__(self, name):
        return getattr(self.base, name)

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L] -> [B]``: log p(y) + r(y) / beta."""
        return self.base.log_prob(tokens) + self.reward(tokens) / self.beta

    def log_prob_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """Differentiable form (needs ``base.log_prob_embedded`` and ``reward.embedded``)."""
        return self.base.log_prob_embedded(e) + self.reward.embedded(e) / self.beta
