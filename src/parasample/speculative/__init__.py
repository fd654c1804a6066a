"""Exact speculative decoding: drafters (n-gram, sibling samples, a draft model) and verifiers
(``identical``: token-identical to sequential sampling with the same uniforms; ``rejection``:
Chen / Leviathan speculative sampling, exact in law)."""

from parasample.speculative.drafters import DRAFTERS, ModelDrafter, NGramDrafter, SiblingDrafter
from parasample.speculative.engine import (
    VERIFIERS,
    DraftContext,
    SpecConfig,
    SpecGeneration,
    SpecInfo,
    SpecNoise,
    SpecState,
    generate,
    init,
    step,
)

__all__ = ["DRAFTERS", "VERIFIERS", "DraftContext", "ModelDrafter", "NGramDrafter",
           "SiblingDrafter", "SpecConfig", "SpecGeneration", "SpecInfo", "SpecNoise", "SpecState",
           "generate", "init", "step"]
