"""Sources by name: the ``--sampler`` names of the command line and every config."""

from __future__ import annotations

import torch

from parasample.errors import InputError
from parasample.noise.carried import ArithmeticSource, StratifiedSource
from parasample.noise.sources import (
    AntitheticSource,
    IIDSource,
    LatticeSource,
    SobolSource,
    UniformSource,
)

__all__ = ["SOURCES", "make_source", "source_class"]


SOURCES: dict[str, type[UniformSource]] = {
    s.name: s for s in (IIDSource, SobolSource, LatticeSource, AntitheticSource,
                        ArithmeticSource, StratifiedSource)
}


def source_class(name: str) -> type[UniformSource]:
    """The class behind a sampler name (``arithmetic:5`` -> :class:`ArithmeticSource`)."""
    try:
        return SOURCES[name.partition(":")[0]]
    except KeyError:
        raise InputError(
            f"unknown sampler {name!r}; choose one of: {', '.join(SOURCES)}."
        ) from None


def make_source(name: str, n: int, k: int | None = None, *, generator: torch.Generator,
                **kwargs) -> UniformSource:
    """Build a source by name (one of :data:`SOURCES`); ``arithmetic:B`` / ``stratified:B``
    carry B bits of the residual (``carry_bits=B``)."""
    bits = name.partition(":")[2]
    cls = source_class(name)
    if bits:
        if not cls.carries_residual or not bits.isdigit():
            raise InputError(f"sampler {name!r}: only arithmetic and stratified sampling carry "
                             "a residual, written NAME:BITS (e.g. arithmetic:5).")
        kwargs["carry_bits"] = int(bits)
    return cls(n, k, generator=generator, **kwargs)
