"""Masked-diffusion parallel decoding: one block-decoding loop with pluggable rules."""

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
)

__all__ = ["SCORES", "DecodeConfig", "DecodeInfo", "DecodeState", "Decoded", "FixedSteps",
           "Threshold", "TransferRule", "decode", "init", "low_confidence", "num_transfer_tokens",
           "random_confidence", "step"]
