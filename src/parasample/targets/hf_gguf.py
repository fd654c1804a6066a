"""transformers' GGUF loader as parasample uses it: dense weights, no progress bar of its own."""

from __future__ import annotations

import contextlib
import functools

__all__ = ["dense_gguf", "quiet_gguf"]


@contextlib.contextmanager
def quiet_gguf():
    """transformers' GGUF loader draws its own tqdm bar ("Converting and de-quantizing GGUF
    tensors"), which its progress-bar switch does not govern; silence it for one load."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - older transformers
        yield
        return
    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def dense_gguf(gguf_file: str) -> dict:
    """``from_pretrained`` arguments that load a GGUF file dequantised into plain dense weights.

    transformers >= 5.25 can keep GGUF weights packed, computing each matmul in float32 with a
    kernel fetched from the Hub (in 5.25 for other architectures than llama and qwen2, which it
    dequantises after a spurious warning that bfloat16 is slow). parasample asks for the dense model
    explicitly, on every machine: its float64 runs must compute in float64 (the token-identity
    tests), its dtype figures measure dense matmuls, and nothing is fetched at run time."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers: dense is the only GGUF path
        return {"gguf_file": gguf_file}
    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(dequantize=True)}
