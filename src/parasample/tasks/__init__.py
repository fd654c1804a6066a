"""Tasks: GSM8K and the synthetic arithmetic-chain task, with exact checkers."""

from parasample.tasks.arith import ArithChainTask, ArithProblem, CharTokenizer, extract_arith_answer
from parasample.tasks.gsm8k import (
    GSM8K_ENV,
    Problem,
    default_gsm8k_path,
    extract_answer,
    format_prompt,
    is_correct,
    load_gsm8k,
    normalize_number,
)

__all__ = ["GSM8K_ENV", "ArithChainTask", "ArithProblem", "CharTokenizer", "Problem",
           "default_gsm8k_path", "extract_answer", "extract_arith_answer", "format_prompt",
           "is_correct", "load_gsm8k", "normalize_number"]
