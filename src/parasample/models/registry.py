"""Where the shipped checkpoints live and how they load."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from parasample.errors import MissingInputError
from parasample.models.transformer import (
    CausalLMAdapter,
    MaskedLMAdapter,
    TinyTransformer,
    TransformerConfig,
)
from parasample.tasks.arith import CharTokenizer

__all__ = ["CHECKPOINT_DIR", "DEFAULT_DLLM", "DEFAULT_AR", "checkpoint_path", "load_dllm",
           "load_ar", "load_checkpoint"]

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
#: The shipped masked-diffusion LM (arithmetic-chain task), made by `parasample train dllm`.
DEFAULT_DLLM = "dllm-arith"
#: The shipped small AR LM (arithmetic-chain task), made by `parasample train ar`.
DEFAULT_AR = "ar-arith"


def checkpoint_path(name: str) -> Path:
    """A shipped checkpoint's name (e.g. ``dllm-arith``) or a path to a .pt file -> its path."""
    p = Path(name)
    if p.suffix == ".pt" or p.exists():
        if not p.is_file():
            raise MissingInputError(f"checkpoint {str(p)!r} does not exist.")
        return p
    p = CHECKPOINT_DIR / f"{name}.pt"
    if not p.is_file():
        shipped = sorted(c.stem for c in CHECKPOINT_DIR.glob("*.pt"))
        raise MissingInputError(f"no shipped checkpoint named {name!r}; available: "
                                f"{', '.join(shipped) or 'none'}. Train one with "
                                "`parasample train dllm` or `parasample train ar`.")
    return p


def load_checkpoint(name: str, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[TinyTransformer, dict]:
    """Load a checkpoint (shipped float16 or a training state) as a model in ``dtype`` (default
    float32) on ``device``, with its metadata."""
    saved = torch.load(checkpoint_path(name), map_location="cpu", weights_only=False)
    model = TinyTransformer(TransformerConfig(**saved["model_config"]))
    model.load_state_dict({k: v.float() for k, v in saved["model"].items()})
    return model.to(device=device, dtype=dtype).eval(), saved


@functools.lru_cache(maxsize=4)
def load_dllm(name: str = DEFAULT_DLLM, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> MaskedLMAdapter:
    """The shipped masked-diffusion LM as a MaskedModel (cached per process)."""
    model, saved = load_checkpoint(name, device, dtype)
    tok = CharTokenizer()
    adapter = MaskedLMAdapter(model, mask_id=tok.mask_id, eos_id=tok.eos_id, tokenizer=tok)
    adapter.train_config = saved.get("train_config", {})  # the task it was trained on
    return adapter


@functools.lru_cache(maxsize=4)
def load_ar(name: str = DEFAULT_AR, use_cache: bool = True, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32) -> CausalLMAdapter:
    """The shipped small AR LM as an ARModel (cached per process)."""
    model, saved = load_checkpoint(name, device, dtype)
    tok = CharTokenizer()
    adapter = CausalLMAdapter(model, eos_id=tok.eos_id, tokenizer=tok, use_cache=use_cache)
    adapter.train_config = saved.get("train_config", {})  # the task it was trained on
    return adapter
