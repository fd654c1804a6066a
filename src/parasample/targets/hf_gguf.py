"""transformers' GGUF loader as parasample uses it: dense weights, no progress bar of its own,
and a dense directory made once from a GGUF file (:func:`dense_dir`)."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from parasample.files import atomic_dir

__all__ = ["dense_dir", "dense_gguf", "quiet_gguf"]


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


def dense_dir(gguf: str | os.PathLike, out: str | os.PathLike,
              tokenizer: str | os.PathLike | None = None) -> Path:
    """A GGUF model as a transformers directory of dense float32 safetensors (with the GGUF's
    tokenizer, or the saved ``tokenizer`` directory), made once in ``out``.

    Why: transformers dequantises a GGUF file in Python at every load (about 10 s for
    SmolLM2-135M, tens of seconds for the Qwen models on 2 cores), while the dense directory
    loads in about a second in float32; vLLM needs a directory too. The weights are the
    dequantised GGUF tensors saved as they are, so a model loads bit-identical from either, in
    every dtype (tests/test_targets.py::test_gguf_files_load_as_dense_weights_in_the_asked_dtype:
    SmolLM2 in float64, bfloat16 and float16; tests/test_qwen.py::
    test_the_dense_directory_holds_the_gguf_weights: the Qwen 0.5B in float32).
    A model loaded from GGUF refuses ``save_pretrained`` (its quantisation config does not
    serialise), so the weights move into a LlamaForCausalLM / Qwen2ForCausalLM built on the
    meta device from the config without it: no second copy in memory. Written to a temporary
    folder first, so an interrupted conversion leaves nothing half-made.
    """
    out = Path(out)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    from transformers import AutoModelForCausalLM

    from parasample.targets import hf

    # the uncached loaders: the GGUF model is dropped once its weights are saved
    lm = hf.load_gguf_causal_lm.__wrapped__(str(gguf), str(tokenizer)) \
        if tokenizer is not None else hf.load_causal_lm.__wrapped__(str(gguf))
    config = lm.model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(lm.model.state_dict(), assign=True)
    with atomic_dir(out) as tmp:
        fresh.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
    return out
