"""All randomness in parasample enters here (see :mod:`parasample.noise.sources`)."""

from parasample.noise.categorical import (
    EPS_UNIFORM,
    gumbel_argmax,
    icdf_categorical,
    icdf_categorical_many,
)
from parasample.noise.sources import (
    SOURCES,
    AntitheticSource,
    IIDSource,
    LatticeSource,
    SobolSource,
    UniformSource,
    make_source,
)

__all__ = [
    "EPS_UNIFORM",
    "SOURCES",
    "AntitheticSource",
    "IIDSource",
    "LatticeSource",
    "SobolSource",
    "UniformSource",
    "gumbel_argmax",
    "icdf_categorical",
    "icdf_categorical_many",
    "make_source",
]
