"""Exact distributions of small targets by enumeration of every state."""

from __future__ import annotations

import torch

__all__ = ["MAX_STATES", "enumerate_states", "state_index", "exact_distribution"]

#: Largest state space parasample enumerates (2^20 Ising states, 8^6 toy sequences, ...).
MAX_STATES = 2**20


def enumerate_states(vocab_size: int, length: int) -> torch.Tensor:
    """All sequences of ``{0..V-1}^L`` in base-V order: ``[V^L, L]`` int64.

    Row i is the base-V expansion of i, most significant digit first, so that
    ``state_index(enumerate_states(V, L), V) == arange(V^L)``.
    """
    n = vocab_size**length
    if n > MAX_STATES:
        raise ValueError(
            f"{vocab_size}^{length} = {n} states is too many to enumerate for an exact metric "
            f"(limit {MAX_STATES}); use a shorter length or smaller vocabulary "
            f"(e.g. Ising n <= 20)."
        )
    i = torch.arange(n)[:, None]  # [n, 1]
    powers = vocab_size ** torch.arange(length - 1, -1, -1)  # [L]
    return (i // powers) % vocab_size  # [n, L]


def state_index(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``tokens [..., L]`` -> ``[...]`` the index of each sequence in :func:`enumerate_states`."""
    L = tokens.shape[-1]
    powers = vocab_size ** torch.arange(L - 1, -1, -1, device=tokens.device)
    return (tokens.long() * powers).sum(-1)


@torch.no_grad()
def exact_distribution(target, batch: int = 65536) -> torch.Tensor:
    """Normalised probabilities ``[V^L]`` (float64) of an EnergyTarget, by enumeration.

    ``target`` needs ``vocab_size``, ``length`` and ``log_prob``. Index i is the probability of
    ``enumerate_states(V, L)[i]``.
    """
    states = enumerate_states(target.vocab_size, target.length)
    logp = torch.cat([target.log_prob(states[i:i + batch]).to(torch.float64)
                      for i in range(0, states.shape[0], batch)])
    return torch.softmax(logp, dim=0)
