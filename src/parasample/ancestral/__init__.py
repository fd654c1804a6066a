"""Batched, cached ancestral sampling driven by a UniformSource."""

from parasample.ancestral.engine import (
    AncestralState,
    Draw,
    Generation,
    SamplingConfig,
    StepInfo,
    check_batch,
    draw,
    generate,
    init,
    lengths_with_eos,
    prefill,
    sampling_probs,
    select_rows,
    step,
    top_p_mask,
    top_p_mask_by_sort,
)

__all__ = ["AncestralState", "Draw", "Generation", "SamplingConfig", "StepInfo", "check_batch",
           "draw", "generate", "init", "lengths_with_eos", "prefill", "sampling_probs",
           "select_rows", "step", "top_p_mask", "top_p_mask_by_sort"]
