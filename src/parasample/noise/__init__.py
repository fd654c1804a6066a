"""All randomness in parasample enters here (see :mod:`parasample.noise.sources`)."""

from parasample.noise.carried import ArithmeticSource, StratifiedSource
from parasample.noise.categorical import (
    DEEP_LOGQ,
    EPS_UNIFORM,
    carry_code_point,
    gumbel_argmax,
    icdf_categorical,
    icdf_categorical_many,
    icdf_residual,
)
from parasample.noise.registry import SOURCES, make_source, source_class
from parasample.noise.sources import (
    AntitheticSource,
    IIDSource,
    LatticeSource,
    SobolSource,
    UniformSource,
    derive_generator,
)
from parasample.noise.tape import UniformTape

__all__ = [
    "DEEP_LOGQ",
    "EPS_UNIFORM",
    "SOURCES",
    "AntitheticSource",
    "ArithmeticSource",
    "IIDSource",
    "LatticeSource",
    "SobolSource",
    "StratifiedSource",
    "UniformSource",
    "UniformTape",
    "carry_code_point",
    "derive_generator",
    "gumbel_argmax",
    "icdf_categorical",
    "icdf_categorical_many",
    "icdf_residual",
    "make_source",
    "source_class",
]
