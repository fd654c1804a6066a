"""Uniforms by (row, dimension), for samplers whose rows move through dimensions at different
speeds (speculative decoding accepts a different number of tokens per row and step).

A :class:`~parasample.noise.UniformSource` hands out dimension after dimension for all rows at
once; :class:`UniformTape` pulls them in that same order, one ``source.uniform()`` per dimension,
and keeps them, so dimension d of row b is the number a sequential sampler driven by the same
source would have used at its step d, whichever row asks first.
"""

from __future__ import annotations

import torch

from parasample.noise.sources import UniformSource

__all__ = ["UniformTape"]


class UniformTape:
    """Random access to a source's dimensions: ``at(dims [B, m]) -> [B, m]`` float64."""

    def __init__(self, source: UniformSource):
        self.source = source
        self._u = torch.empty(source.n, 0, dtype=torch.float64)  # [n, dims pulled so far]

    def at(self, dims: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Dimension ``dims[i, j]`` of row ``rows[i]``: ``dims [R, m]``, ``rows [R]`` ->
        ``[R, m]`` float64 (on the CPU, like the sources)."""
        dims, rows = dims.cpu(), rows.cpu()
        need = int(dims.max()) + 1 if dims.numel() else 0
        if need > self._u.shape[1]:
            new = [self.source.uniform() for _ in range(need - self._u.shape[1])]
            self._u = torch.cat([self._u, torch.stack(new, dim=1).to(torch.float64)], dim=1)
        return self._u[rows].gather(1, dims)
