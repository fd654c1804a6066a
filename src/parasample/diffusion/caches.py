"""Block caches for masked-diffusion decoding (Fast-dLLM), pluggable like the transfer rules.

A bidirectional model's keys and values at a position depend on every other position, so a
cache is an approximation: it keeps the K/V of a full pass and reuses them while the current
block is decoded, recomputing only a window of positions per step.

* :class:`NoCache` - every step is a full pass over prompt + answer (the reference).
* :class:`PrefixCache` - the window is the current block and everything right of it; the
  prompt and decoded blocks to the left come from the cache.
* :class:`DualCache` - the window is the current block alone; both sides come from the cache.

A full pass refreshes the cache at the first step of every block (and, with ``refresh_every=k``,
at every k-th step of a block). The refreshing step uses that full pass's logits, so a cache
refreshed at every step (``refresh_every=1``) decodes exactly what :class:`NoCache` decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from parasample.errors import InputError

__all__ = ["BlockCache", "NoCache", "PrefixCache", "DualCache", "CACHES", "make_cache"]


class BlockCache(Protocol):
    """How one decoding step gets the current block's logits."""

    name: str

    def check(self, model) -> None:
        """Raise a ValueError naming the model if it cannot use this cache."""

    def logits(self, model, x: torch.Tensor, blk: slice, s: int, kv: Any,
               attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """``x [B, T]`` -> (the block's logits ``[B, Lb, V]``, the cache state for the next
        step). ``s`` is the step within the block (0 at its first step)."""


@dataclass(frozen=True)
class NoCache:
    """A full pass at every step."""

    name = "none"

    def check(self, model) -> None:
        return None

    def logits(self, model, x, blk, s, kv, attention_mask):
        # models with a fixed layout may take no mask at all (MaskedModel's minimal form)
        out = model.logits(x) if attention_mask is None else model.logits(x, attention_mask)
        return out[:, blk], None


@dataclass(frozen=True)
class _WindowCache:
    refresh_every: int = 0  # 0: refresh at block boundaries only (Fast-dLLM)

    def __post_init__(self):
        if self.refresh_every < 0:
            raise InputError(f"refresh_every={self.refresh_every} must be >= 0 (0 refreshes at "
                             "block boundaries only).")

    def window(self, blk: slice, total: int) -> slice:
        raise NotImplementedError

    def check(self, model) -> None:
        if not (hasattr(model, "logits_and_kv") and hasattr(model, "logits_window")):
            name = type(getattr(model, "model", model)).__name__
            raise InputError(f"{name} does not support the {self.name} cache (its architecture "
                             "exposes no per-layer keys and values to reuse); use --cache none.")

    def logits(self, model, x, blk, s, kv, attention_mask):
        refresh = kv is None or s == 0 or (self.refresh_every and s % self.refresh_every == 0)
        if refresh:
            logits, kv = model.logits_and_kv(x, attention_mask)
            return logits[:, blk], kv
        win = self.window(blk, x.shape[1])
        logits = model.logits_window(x[:, win], win.start, kv)  # [B, W, V]
        return logits[:, blk.start - win.start:blk.stop - win.start], kv


@dataclass(frozen=True)
class PrefixCache(_WindowCache):
    """K/V left of the current block reused; the block and everything right of it recomputed."""

    name = "prefix"

    def window(self, blk, total):
        return slice(blk.start, total)


@dataclass(frozen=True)
class DualCache(_WindowCache):
    """K/V on both sides of the current block reused; only the block is recomputed."""

    name = "dual"

    def window(self, blk, total):
        return blk


CACHES: dict[str, type] = {c.name: c for c in (NoCache, PrefixCache, DualCache)}


def make_cache(name: str, **kwargs) -> BlockCache:
    """A cache by name: ``none``, ``prefix`` or ``dual``."""
    if name not in CACHES:
        raise InputError(f"unknown cache {name!r}; choose one of: {', '.join(CACHES)}.")
    return CACHES[name](**kwargs)
