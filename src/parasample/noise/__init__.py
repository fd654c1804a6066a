"""All randomness in parasample enters here (see :mod:`parasample.noise.sources`)."""

from parasample.noise.categorical import (
    EPS_UNIFORM,
    gumbel_argmax,
    icdf_categorical,
    icdf_categorical_many,
    icdf_residual,
)
from parasample.noise.sources import (
    SOURCES,
    AntitheticSource,
    ArithmeticSource,
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
    "ArithmeticSource",
    "IIDSource",
    "LatticeSource",
    "SobolSource",
    "UniformSource",
    "gumbel_argmax",
    "icdf_categorical",
    "icdf_categorical_many",
    "icdf_residual",
    "make_source",
]
