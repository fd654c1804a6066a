"""Masked-diffusion parallel decoding: one block-decoding loop with pluggable rules."""

from parasample.diffusion import speculative
from parasample.diffusion.caches import (
    CACHES,
    BlockCache,
    DualCache,
    NoCache,
    PrefixCache,
    make_cache,
)
from parasample.diffusion.decode import (
    DecodeConfig,
    Decoded,
    DecodeInfo,
    DecodeState,
    decode,
    init,
    step,
)
from parasample.diffusion.rules import (
    SCORES,
    FixedSteps,
    Threshold,
    TransferRule,
    low_confidence,
    num_transfer_tokens,
    random_confidence,
    top_prob,
)
from parasample.diffusion.speculative import SpecDecodeConfig, SpecDecoded

__all__ = ["CACHES", "SCORES", "BlockCache", "DecodeConfig", "DecodeInfo", "DecodeState",
           "Decoded", "DualCache", "FixedSteps", "NoCache", "PrefixCache", "SpecDecodeConfig",
           "SpecDecoded", "Threshold", "TransferRule", "decode", "init", "low_confidence",
           "make_cache", "num_transfer_tokens", "random_confidence", "speculative", "step",
           "top_prob"]
