"""Exact distributions of small targets by enumeration of every state."""

from __future__ import annotations

import torch

from parasample.errors import InputError

__all__ = ["MAX_STATES", "enumerate_states", "state_index", "exact_distribution",
           "any_order_distribution"]

#: Largest state space parasample enumerates (2^20 Ising states, 8^6 toy sequences, ...).
MAX_STATES = 2**20


def enumerate_states(vocab_size: int, length: int) -> torch.Tensor:
    """All sequences of ``{0..V-1}^L`` in base-V order: ``[V^L, L]`` int64.

    Row i is the base-V expansion of i, most significant digit first, so that
    ``state_index(enumerate_states(V, L), V) == arange(V^L)``.
    """
    n = vocab_size**length
    if n > MAX_STATES:
        raise InputError(
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


@torch.no_grad()
def any_order_distribution(model, prompt: torch.Tensor, gen_length: int, block_length: int,
                           temperature: float = 1.0) -> torch.Tensor:
    """The exact law ``[V^G]`` of one-token-per-step masked-diffusion decoding with random
    remasking: blocks left to right, inside a block the positions revealed in a uniformly random
    order, each from the tempered softmax of the model's logits given the tokens revealed so far.

    That is the average over the block-respecting orders sigma of prod_t p(x_sigma(t) | revealed),
    enumerated (every order, every sequence). ``model`` is a MaskedModel whose real tokens are
    0..V-1 and ``mask_id = V = vocab_size - 1``; ``prompt [1, P]``.
    """
    import itertools

    V = model.vocab_size - 1
    if model.mask_id != V:
        raise InputError("any_order_distribution needs mask_id = vocab_size - 1.")
    if gen_length % block_length:
        raise InputError(f"block_length={block_length} must divide gen_length={gen_length}.")
    P = prompt.shape[1]
    blocks = [itertools.permutations(range(b, b + block_length))
              for b in range(0, gen_length, block_length)]
    orders = [sum(perms, ()) for perms in itertools.product(*blocks)]
    start = torch.cat([prompt, torch.full((1, gen_length), V, dtype=torch.long)], dim=1)
    dist = torch.zeros(V**gen_length, dtype=torch.float64)
    for order in orders:
        states, probs = start, torch.ones(1, dtype=torch.float64)  # [S, P + G], [S]
        for pos in order:
            logits = model.logits(states)[:, P + pos, :V].double()  # [S, V]
            p = torch.softmax(logits / temperature, dim=-1)
            states = states.repeat_interleave(V, dim=0)
            states[:, P + pos] = torch.arange(V).repeat(len(probs))
            probs = (probs[:, None] * p).reshape(-1)
        dist.index_add_(0, state_index(states[:, P:], V), probs)
    return dist / len(orders)
