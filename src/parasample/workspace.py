"""Scratch tensors reused across draws: :class:`Workspace`.

Why parasample keeps its own: one draw from a 49k vocabulary at batch 128 works on float64
``[128, 49152]`` tensors of 50 MB each (the probabilities, their cumulative sum). PyTorch's CPU
allocator does not cache blocks, and glibc hands blocks that large back to the OS when they
are freed, so every fresh one is page-faulted in again: on a CPU that costs several times the
arithmetic (``sampling_probs`` + ``icdf_categorical`` at that size: about 6x slower with fresh
tensors than with reused ones, the same bits either way). Per-token loops (the engine's
``generate``, the transformers and vLLM logits processors) keep one; a function given none
uses a fresh one.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Workspace"]


class Workspace:
    """Named scratch buffers, grown when a larger one is asked for and otherwise reused.

    ``get(name, shape, dtype, device)`` returns a contiguous tensor of that shape whose content
    is undefined; it is a view of the name's buffer, so the next ``get`` of the same name
    overwrites it (a caller keeps no result across calls). Not thread-safe: one per engine.
    """

    def __init__(self):
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def get(self, name: str, shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
            device: torch.device | str) -> torch.Tensor:
        key, numel = (name, dtype, torch.device(device)), math.prod(shape)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = self._buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)
