"""Sources whose rows carry a residual from token to token: arithmetic sampling and
stratified sampling (QuasiMoTTo). One code point per row drives its whole sequence; the samplers
that support them carry ``(u - F(token - 1)) / p(token)`` forward (see
:mod:`parasample.noise.sources` for the contract every source keeps)."""

from __future__ import annotations

import torch

from parasample.noise.sources import UniformSource, _check_bits, _nested_pow2, lattice_order

__all__ = ["ArithmeticSource", "StratifiedSource"]


class _CarriedSource(UniformSource):
    """A source whose code point (dimension 0) drives the row's whole sequence: the sampler
    carries the residual (``carries_residual``), optionally only its top ``carry_bits`` bits.
    ``_dim`` counts the dimensions drawn so far (the streams are dimension-major)."""

    carries_residual = True

    def __init__(self, n, k=None, *, generator, carry_bits: int | None = None):
        super().__init__(n, k, generator=generator)
        self.carry_bits = _check_bits(carry_bits)
        self._dim = 0


class ArithmeticSource(_CarriedSource):
    """Arithmetic sampling (Vilnis et al., 2023): one code point per row drives its whole sequence.

    Dimension 0 of a group is the randomly shifted grid ``frac(i/k + Delta)`` (rows in
    :func:`lattice_order`); every later dimension is one uniform shared by the group's k rows.
    A sequential sampler (``carries_residual``) draws token 0 from the grid point and each next
    token from the residual of the previous draw, where it fell inside its token's interval
    (``icdf_residual``: uniform and independent of the tokens so far). So each row is exactly a
    draw from the model, and the k rows are a stratified sample of *whole sequences* in the
    model's lexicographic order: a sequence of probability p appears floor(kp) or ceil(kp)
    times. Once a row's prefix is rarer than 2^-20, float64 would run short of bits, and the
    sampler rotates the residual by the shared uniform of the step instead (see
    :func:`~parasample.noise.carry_code_point`), which keeps the row exact.

    Without the carry (a sampler that ignores ``carries_residual``), the rows of a group would
    share their uniforms after dimension 0: still exact per row, but nearly identical.

    ``carry_bits`` = b carries only the residual's top b bits and refills the rest from a
    uniform of the row's own (every dimension after the first is then i.i.d. per row): each row
    is still exact, a float32 difference stops compounding from token to token, and the
    stratification is kept to 2^-b (see :func:`~parasample.noise.carry_code_point`).
    """

    name = "arithmetic"

    @classmethod
    def splits_into(cls, k: int, m: int) -> bool:
        # block c: code points frac(t / m + c' / k + Delta), a shifted m-point grid
        return _nested_pow2(k, m)

    def _next(self, d: int) -> torch.Tensor:
        # dimension-major, one shift per (dimension, group) -- per (dimension, row) after the
        # first with carry_bits: the same stream however d is chunked
        cols = []
        for dim in range(self._dim, self._dim + d):
            if dim == 0:  # the code points: a shifted grid per group
                grid = lattice_order(self.k).to(torch.float64) / self.k  # [k]
                shift = torch.rand(self.groups, generator=self.generator, dtype=torch.float64)
                cols.append(torch.remainder(grid.repeat(self.groups)
                                            + shift.repeat_interleave(self.k), 1.0))
            elif self.carry_bits is not None:
                cols.append(torch.rand(self.n, generator=self.generator, dtype=torch.float64))
            else:
                shift = torch.rand(self.groups, generator=self.generator, dtype=torch.float64)
                cols.append(shift.repeat_interleave(self.k))
        self._dim += d
        return torch.stack(cols, dim=1) if cols else torch.empty(self.n, 0,
                                                                  dtype=torch.float64)


class StratifiedSource(_CarriedSource):
    """Stratified sampling of code points (QuasiMoTTo): row i of a group starts from
    ``(pi(i) + v_i) / k`` with pi a uniformly random permutation of the k strata and independent
    jitters v_i ~ U[0, 1); every later dimension is an independent uniform per row.

    Like :class:`ArithmeticSource` it ``carries_residual``: the code point drives the row's whole
    sequence through the inverse CDFs, so the k rows are one draw in each 1/k-stratum of the
    model's lexicographic order of sequences (a sequence of probability p appears k p times on
    average and at most ceil(k p) + 1 times). Unlike arithmetic sampling's shared shift, the
    jitters are independent, and any k works. Each row is exactly uniform: pi(i) is uniform on
    the strata and v_i within one. Its blocks are not stratified samples of fewer points, so a
    group serves only its own size (see :meth:`UniformSource.splits_into`). ``carry_bits`` as
    for :class:`ArithmeticSource`.
    """

    name = "stratified"

    def _next(self, d: int) -> torch.Tensor:
        first = []
        if self._dim == 0:
            perm = torch.stack([torch.randperm(self.k, generator=self.generator)
                                for _ in range(self.groups)]).reshape(self.n)  # [n]
            jitter = torch.rand(self.n, generator=self.generator, dtype=torch.float64)
            first = [((perm.to(torch.float64) + jitter) / self.k)[:, None]]  # [n, 1]
        rest = d - len(first)
        # later dimensions dimension-major, as in IIDSource: the same stream however d is split
        later = torch.rand(rest, self.n, generator=self.generator, dtype=torch.float64).T
        self._dim += d
        return torch.cat([*first, later], dim=1)  # [n, d]
