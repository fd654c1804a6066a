"""What is sampled: the Target protocols and the NFE-counting wrapper.

Three kinds of target, all batch-first (dimension 0 is chains / particles / samples):

* :class:`EnergyTarget` - an unnormalised distribution over fixed-length token sequences,
  ``log_prob(tokens [B, L]) -> [B]`` (log pi up to a constant); MCMC and exact enumeration use it.
* :class:`ARModel` - an autoregressive LM that the ancestral engine steps through with a cache:
  ``start(prompt_ids [B, P], attention_mask [B, P]) -> (logits [B, V], state)`` then
  ``advance(state, tokens [B]) -> (logits [B, V], state)``. ``state`` is opaque to the engine
  (a KV cache for HF models, the prefix itself for toys).
* :class:`MaskedModel` - a bidirectional masked LM: ``logits(tokens [B, L]) -> [B, L, V]`` with
  a ``mask_id``.

:class:`NFECounter` wraps any of them and counts model calls (forward passes), the unit in which
parasample reports compute.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["EnergyTarget", "ARModel", "MaskedModel", "NFECounter"]


@runtime_checkable
class EnergyTarget(Protocol):
    """Unnormalised target over sequences in ``{0..vocab_size-1}^length``."""

    vocab_size: int
    length: int

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L]`` int64 -> ``[B]`` float, log pi(tokens) up to an additive constant."""
        ...


@runtime_checkable
class ARModel(Protocol):
    """An autoregressive LM stepped token by token with an opaque cache state.

    Optional: ``pads_exactly = True`` says that :meth:`start` gives every row the results of its
    unpadded prompt however much left padding (attention mask 0) it carries (transformers'
    causal LMs, whose positions come from the mask); QUEST then prefills a kept prefix together
    with the prompt.

    Optional, for speculative decoding: ``extend(state, tokens [B, D]) -> (logits [B, D, V],
    state)`` appends D tokens to every row in one forward (``logits[:, j]`` follows
    ``tokens[:, j]``), and ``rollback(state, drop [B]) -> state`` forgets the last ``drop[b]``
    tokens of row b, after which the row continues exactly as if they had never been fed."""

    vocab_size: int
    eos_id: int | None

    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor
              ) -> tuple[torch.Tensor, Any]:
        """Prefill: ``prompt_ids [B, P]`` (left-padded), ``attention_mask [B, P]`` ->
        (next-token logits ``[B, V]`` float32, state)."""
        ...

    def advance(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Append ``tokens [B]`` -> (next-token logits ``[B, V]`` float32, new state)."""
        ...

    def reorder(self, state: Any, index: torch.Tensor) -> Any:
        """The state whose row b is row ``index[b]`` of ``state`` (SMC resampling; ``index`` may
        be longer than the batch, repeating rows, to draw k samples after one prefill)."""
        ...


@runtime_checkable
class MaskedModel(Protocol):
    """A masked (diffusion) LM: all positions' logits from one bidirectional pass.

    ``attention_mask [B, L]`` (1 = real token) lets left-padded prompts of different lengths
    decode together; models whose layout needs none may ignore it. Models that support
    diffusion decoding's prefix / dual caches also have ``logits_and_kv(tokens, attention_mask)
    -> (logits, kv)`` (the plain pass plus every layer's keys and values) and
    ``logits_window(tokens_window [B, W], start, kv) -> [B, W, V]`` (a window of positions
    against the cached keys and values elsewhere, updating kv in place).
    """

    vocab_size: int
    mask_id: int

    def logits(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        """``tokens [B, L]`` -> ``[B, L, V]`` float32."""
        ...


# Methods of the protocols above that run the model once per call.
_MODEL_CALLS = ("log_prob", "start", "advance", "extend", "logits", "next_logits",
                "logits_and_kv", "logits_window")


class NFECounter:
    """Transparent wrapper that counts model calls (NFE) of the wrapped target or model.

    Every attribute is forwarded; calls of ``log_prob``, ``start``, ``advance``, ``extend``,
    ``logits``, ``next_logits``, ``logits_and_kv`` and ``logits_window`` add one to :attr:`nfe`
    each (one batched forward pass, whatever the batch or window) and their wall seconds to
    :attr:`forward_s`. It is the harness's instrument: samplers never count or time anything
    themselves.
    """

    def __init__(self, inner: Any):
        self.inner = inner
        self.nfe = 0
        self.forward_s = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in _MODEL_CALLS and callable(attr):
            def counted(*args, **kwargs):
                self.nfe += 1
                t0 = time.perf_counter()
                try:
                    return attr(*args, **kwargs)
                finally:
                    self.forward_s += time.perf_counter() - t0
            return counted
        return attr

    def reset(self) -> int:
        """Zero both counters and return the call count it had."""
        n, self.nfe, self.forward_s = self.nfe, 0, 0.0
        return n
