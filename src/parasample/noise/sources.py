"""Uniform sources: where every random number in parasample comes from.

A source serves ``n`` rows (dimension 0: samples / chains / particles). Each call
``source.uniform(*shape)`` returns a ``[n, *shape]`` tensor in [0, 1) and advances the
source by ``prod(shape)`` *dimensions*. Rows are split into consecutive groups of ``k``
(``n = groups * k``): within a group the k points are correlated as the source designs
(a scrambled Sobol net, a shifted lattice, antithetic pairs); across groups and across the
i.i.d. source every number is independent.

Contract shared by every source: **each row, on its own, is a sequence of i.i.d. U[0, 1)
numbers**. So any sampler that is exact when driven by i.i.d. uniforms stays exact, row by
row, when driven by a correlated source; only the joint law across the k rows of a group
changes. This is what makes QMC / lattice / antithetic sampling "marginally exact".

Dimensions are consumed in order: a sampler that asks for one uniform per row at each decoding
step uses dimension t at step t, which is what randomised QMC over the per-step uniforms
means. Correlated sources draw their point sets in blocks of ``dim_block`` dimensions; the
blocks are randomised independently, so sequences longer than one block remain exact (the
QMC structure then holds within each block).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from parasample.errors import InputError

__all__ = [
    "UniformSource",
    "IIDSource",
    "SobolSource",
    "LatticeSource",
    "AntitheticSource",
    "derive_generator",
]


def _check_sizes(n: int, k: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n={n!r} rows: a uniform source needs at least one row (n >= 1).")
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k={k!r}: the group size must be a positive integer (k >= 1).")
    if n % k:
        raise InputError(
            f"n={n} rows is not a whole number of groups of k={k}; "
            f"use n = groups * k (e.g. n={k * max(1, n // k)})."
        )


def _check_bits(bits: int | None) -> int | None:
    if bits is not None and not (isinstance(bits, int) and 1 <= bits <= 48):
        raise InputError(f"carry_bits={bits!r}: carry between 1 and 48 bits of the residual "
                         "(about log2 k + 2 keep the stratification of k rows), or None for "
                         "all of it.")
    return bits


def derive_generator(*parts) -> torch.Generator:
    """A fresh generator seeded from a run's identity (``parts``: the seed, the experiment, the
    chunk...): every piece of a sweep draws the same numbers whatever ran before it, so a resumed
    or sharded run writes the same rows as an uninterrupted one."""
    import hashlib

    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "big"))


def _is_pow2(x: int) -> bool:
    return x >= 1 and not x & (x - 1)


def _nested_pow2(k: int, m: int) -> bool:
    """Blocks of a power-of-two group whose first 2^j rows (and so each aligned block of 2^j
    rows) form the same design with 2^j points."""
    return _is_pow2(k) and _is_pow2(m) and m <= k


class UniformSource(ABC):
    """``n`` rows of U[0, 1) numbers, correlated within consecutive groups of ``k`` rows.

    Args:
        n: rows served per call (dimension 0 of every returned tensor).
        k: group size; rows ``[g*k, (g+1)*k)`` form one correlated group.
        generator: the only randomness the source uses.
    """

    name: str = "abstract"
    #: True when a sequential sampler must carry the residual of each inverse-CDF draw into the
    #: next uniform (arithmetic sampling, see :class:`ArithmeticSource`).
    carries_residual: bool = False
    #: None: the whole residual is carried; b: only its top b bits, the rest from the row's own
    #: uniform (:func:`~parasample.noise.carry_code_point`)
    carry_bits: int | None = None

    def __init__(self, n: int, k: int | None = None, *, generator: torch.Generator):
        k = n if k is None else k
        _check_sizes(n, k)
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                "generator must be a torch.Generator, e.g. torch.Generator().manual_seed(0); "
                "parasample never uses the global RNG."
            )
        self.n, self.k, self.groups = n, k, n // k
        self.generator = generator

    @classmethod
    def splits_into(cls, k: int, m: int) -> bool:
        """True when, in a group of ``k`` rows, every aligned block of ``m`` consecutive rows
        (rows ``[b*m, (b+1)*m)``) is distributed exactly as a whole group of ``m`` rows of this
        source. One group then gives k/m identically distributed estimates of any statistic of
        an m-group (for instance "some sample of the m is correct", pass@m), whose mean is
        unbiased with a variance no larger than the first block's (the *stride estimator*:
        QuasiMoTTo's stride-(k/m) subsequences of a lattice in its natural order are parasample's
        blocks, whose rows follow :func:`lattice_order`). The whole group always qualifies."""
        return m == k

    def uniform(self, *shape: int) -> torch.Tensor:
        """Next ``prod(shape)`` dimensions of all rows: float64 ``[n, *shape]`` in [0, 1)."""
        d = math.prod(shape)
        out = self._next(d) if d > 0 else torch.empty(self.n, 0, dtype=torch.float64)
        return out.reshape(self.n, *shape)

    @abstractmethod
    def _next(self, d: int) -> torch.Tensor:
        """``[n, d]`` float64 in [0, 1): the next d dimensions of every row."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, k={self.k})"


class IIDSource(UniformSource):
    """Independent U[0, 1) numbers (the usual sampler)."""

    name = "iid"

    @classmethod
    def splits_into(cls, k: int, m: int) -> bool:
        return m >= 1 and k % m == 0

    def _next(self, d: int) -> torch.Tensor:
        # Drawn dimension-major so that k calls of d/k dimensions equal one call of d (the
        # generator's stream is split the same way whatever the chunking).
        return torch.rand(d, self.n, generator=self.generator, dtype=torch.float64).T


class _BlockSource(UniformSource):
    """A correlated source whose point sets are drawn ``dim_block`` dimensions at a time."""

    def __init__(self, n, k=None, *, generator, dim_block: int = 64):
        super().__init__(n, k, generator=generator)
        if dim_block < 1:
            raise InputError(f"dim_block={dim_block} must be >= 1.")
        self.dim_block = dim_block
        self._buf = torch.empty(self.n, 0, dtype=torch.float64)

    @abstractmethod
    def _block(self) -> torch.Tensor:
        """One freshly randomised block: ``[groups, k, dim_block]`` float64 in [0, 1)."""

    def _next(self, d: int) -> torch.Tensor:
        while self._buf.shape[1] < d:
            block = self._block().reshape(self.n, self.dim_block)
            self._buf = torch.cat([self._buf, block], dim=1)
        out, self._buf = self._buf[:, :d], self._buf[:, d:]
        return out


class SobolSource(_BlockSource):
    """Randomised QMC: each group is an Owen-scrambled Sobol net of k points.

    The rows of a group are the sequence's first k points in order, so its first 2^j rows are
    themselves a scrambled net: one group of k serves every smaller power-of-two batch. The
    nested uniform (Owen) scramble keeps the (t, m, s)-net balance only for power-of-two point
    counts, so ``k`` must be a power of two. Each scrambled point is exactly U[0, 1)^dim_block,
    hence each row is i.i.d. uniform.

    The unscrambled points come from :class:`torch.quasirandom.SobolEngine`; the scramble is
    written here, batched over groups, because a library scramble randomises one point set per
    engine (``scipy.stats.qmc.Sobol(scramble=True)``: about 2 ms each, a Python loop over the
    groups, minutes for 10^5 groups). For k = 2^m points each coordinate of the first k Sobol
    points is a permutation of the digits {0, ..., k - 1} / k, so Owen's scramble is: flip digit
    j of every point with a random bit indexed by the point's j leading digits (k - 1 random
    bits per coordinate: the nodes of a binary tree), then fill the digits past m with
    independent uniforms (a nested uniform scramble of distinct leading digits leaves the later
    digits i.i.d. uniform).
    """

    name = "sobol"

    @classmethod
    def splits_into(cls, k: int, m: int) -> bool:
        # rows [b 2^j, (b+1) 2^j) of a base-2 digital sequence are its first 2^j points XOR a
        # fixed digital shift, and an Owen scramble absorbs the shift: the same law as the prefix
        return _nested_pow2(k, m)

    def __init__(self, n, k=None, *, generator, dim_block: int = 64):
        super().__init__(n, k, generator=generator, dim_block=dim_block)
        if self.k & (self.k - 1):
            up = 1 << (self.k - 1).bit_length()
            raise InputError(
                f"k={self.k}: a scrambled Sobol net needs a power-of-two number of points; "
                f"use k={up} (or the 'iid' or 'antithetic' sampler)."
            )
        self.m = self.k.bit_length() - 1  # digits that tell the k points apart
        base = torch.quasirandom.SobolEngine(self.dim_block, scramble=False).draw(
            self.k, dtype=torch.float64)  # [k, d], multiples of 1/k
        self._digits = torch.round(base * self.k).long()  # [k, d] in 0..k-1

    def _block(self) -> torch.Tensor:
        k, m, d, G = self.k, self.m, self.dim_block, self.groups
        flips = torch.randint(0, 2, (G, d, max(k - 1, 1)), generator=self.generator)  # tree nodes
        a = self._digits.T.expand(G, d, k)  # [G, d, k]
        out = a.clone()
        for j in range(m):  # digit j from the top, flipped by the node of its j leading digits
            node = (1 << j) - 1 + (a >> (m - j))  # [G, d, k]
            out ^= flips.gather(2, node) << (m - 1 - j)
        low = torch.rand(G, d, k, generator=self.generator, dtype=torch.float64)
        return ((out.double() + low) / k).transpose(1, 2)  # [groups, k, dim_block]


def korobov_vector(k: int, d: int) -> torch.Tensor:
    """Generating vector z_j = a^j mod k of a rank-1 Korobov lattice, a odd and near 0.618 k.

    With a odd and coprime to a power-of-two k every coordinate i * z_j / k runs through all k
    residues (each one-dimensional projection is a perfect stratification); the golden-ratio
    multiplier spreads pairs of consecutive dimensions well. We write this by hand because
    neither scipy nor torch ships rank-1 lattice rules.
    """
    a = max(1, round(0.6180339887 * k))
    while math.gcd(a, k) != 1:
        a += 1
    # z_0 = 1: the first coordinate is the plain 1-D grid i/k (arithmetic sampling's code points).
    z, cur = [], 1 % k if k > 1 else 0
    for _ in range(d):
        z.append(cur)
        cur = (cur * a) % k if k > 1 else 0
    return torch.tensor(z, dtype=torch.float64)


def lattice_order(k: int) -> torch.Tensor:
    """Row order of a k-point lattice: for a power-of-two k the bit-reversal (van der Corput)
    permutation of 0..k-1, so every prefix of 2^j rows is itself the 2^j-point lattice with the
    same generating vector (an extensible lattice, Hickernell et al. 2000); else 0..k-1."""
    if k & (k - 1):
        return torch.arange(k)
    m = k.bit_length() - 1
    return torch.tensor([int(format(i, f"0{m}b")[::-1], 2) if m else 0 for i in range(k)])


class LatticeSource(_BlockSource):
    """Randomly shifted rank-1 lattice: x_i = frac(i * z / k + Delta), Delta ~ U[0,1)^d per group.

    The random shift makes every point exactly U[0, 1)^d. Its first coordinate is the
    randomly shifted 1-D grid ``frac(i/k + Delta)`` of arithmetic sampling (Vilnis et al., 2023).
    Rows follow :func:`lattice_order`: for a power-of-two k, the first k' = 2^j rows of a group
    are a shifted k'-point lattice, so one group of k serves every smaller power-of-two batch.
    """

    name = "lattice"

    @classmethod
    def splits_into(cls, k: int, m: int) -> bool:
        # block c holds lattice indices t k/m + c' (t < m): frac(t z / m + c' z / k + Delta),
        # the m-point lattice of the prefix under another uniform shift
        return _nested_pow2(k, m)

    def _block(self) -> torch.Tensor:
        z = korobov_vector(self.k, self.dim_block)  # [d]
        i = lattice_order(self.k).to(torch.float64)[:, None]  # [k, 1]
        base = torch.remainder(i * z[None, :] / self.k, 1.0)  # [k, d]
        shift = torch.rand(self.groups, 1, self.dim_block, generator=self.generator,
                           dtype=torch.float64)
        return torch.remainder(base[None] + shift, 1.0)  # [groups, k, d]


class AntitheticSource(UniformSource):
    """Antithetic pairs: rows 2j and 2j+1 of a group get u and 1 - u (k must be even).

    Every even prefix of a group is a set of whole pairs."""

    name = "antithetic"

    @classmethod
    def splits_into(cls, k: int, m: int) -> bool:
        return m >= 2 and m % 2 == 0 and k % m == 0  # whole, independent pairs

    def __init__(self, n, k=None, *, generator):
        super().__init__(n, k, generator=generator)
        if self.k % 2:
            raise InputError(
                f"k={self.k}: antithetic sampling pairs samples, so k must be even; "
                f"use k={self.k + 1}."
            )

    def _next(self, d: int) -> torch.Tensor:
        u = torch.rand(d, self.n // 2, generator=self.generator, dtype=torch.float64)
        u = u.T[:, None, :]  # [n/2, 1, d], dimension-major as in IIDSource
        # 1 - u lies in (0, 1]; fold the measure-zero value 1.0 back to 0.0 to stay in [0, 1).
        pair = torch.cat([u, torch.remainder(1.0 - u, 1.0)], dim=1)  # [n/2, 2, d]
        return pair.reshape(self.n, d)
