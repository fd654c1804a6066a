"""Masked / diffusion LMs from transformers (BERT-, LLaDA-, Dream-style), from a local directory.

Shares the prompt helpers of :mod:`parasample.targets.hf`."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from parasample.errors import InputError
from parasample.targets.hf import _decode_until_eos, _prompt_ids, _resolve

__all__ = ["HFMaskedLM", "load_masked_lm"]


@dataclass
class HFMaskedLM:
    """:class:`~parasample.targets.MaskedModel` over a transformers masked LM (BERT-, LLaDA-style).

    ``model(input_ids).logits`` must be ``[B, L, V]``. The mask id comes from the argument,
    else the tokenizer, else the config. Prompts of different lengths decode together
    left-padded, with an attention mask; positions then count real tokens only (when the model
    takes ``position_ids``), so a padded row decodes as it would alone. No block cache: HF
    masked LMs expose no per-layer keys and values for a bidirectional cache.
    """

    model: Any
    mask_id: int | None = None
    tokenizer: Any = None
    name: str = "hf-masked-lm"

    def __post_init__(self):
        self.model.eval()
        if self.mask_id is None and self.tokenizer is not None:
            self.mask_id = self.tokenizer.mask_token_id
        if self.mask_id is None:
            self.mask_id = getattr(self.model.config, "mask_token_id", None)
        if self.mask_id is None:
            raise InputError(
                "this model has no mask token id (neither tokenizer.mask_token_id nor "
                "config.mask_token_id); pass mask_id=... explicitly. Masked-diffusion decoding "
                "needs one."
            )
        self.vocab_size = int(self.model.config.vocab_size)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 1 << 30))
        self.device = next(self.model.parameters()).device
        self.eos_id = getattr(self.tokenizer, "eos_token_id", None)
        self.pad_id = getattr(self.tokenizer, "pad_token_id", None)
        params = inspect.signature(self.model.forward).parameters
        self._kw = {k for k in ("attention_mask", "position_ids") if k in params}

    def encode_prompt(self, text: str, chat: bool = True) -> torch.Tensor:
        """One prompt -> ``[1, P]`` ids (chat template applied when the tokenizer has one)."""
        return self.encode_prompts([text], chat)[0]

    def encode_prompts(self, texts: list[str], chat: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> left-padded ``ids [B, P]`` and ``attention_mask [B, P]``."""
        if self.tokenizer is None:
            raise InputError("this masked LM was built without a tokenizer; pass tokenizer=...")
        chat = chat and bool(getattr(self.tokenizer, "chat_template", None))
        rows = [_prompt_ids(self.tokenizer, t, chat) for t in texts]
        P = max(len(r) for r in rows)
        if any(len(r) != P for r in rows) and self.pad_id is None:
            raise InputError(f"prompts of different lengths ({min(map(len, rows))}-{P} tokens) "
                             f"need a pad token, and {self.name}'s tokenizer has none; use "
                             "--batch-size 1 or set tokenizer.pad_token_id.")
        ids = torch.full((len(rows), P), self.pad_id if self.pad_id is not None else 0)
        mask = torch.zeros(len(rows), P, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, P - len(r):], mask[i, P - len(r):] = torch.tensor(r), 1
        return ids, mask

    def decode(self, ids: torch.Tensor) -> list[str]:
        """``[B, G]`` -> texts cut at the first EOS."""
        return _decode_until_eos(self.tokenizer, ids, self.eos_id)

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        if tokens.shape[1] > self.max_length:
            raise InputError(f"sequence of {tokens.shape[1]} tokens exceeds the model's context of "
                             f"{self.max_length}; shorten the prompt or gen_length.")
        tokens, kw = tokens.to(self.device), {}
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
            if "attention_mask" not in self._kw:
                raise InputError(f"{self.name} takes no attention mask, so prompts of different "
                                 "lengths cannot decode together; use --batch-size 1.")
            kw["attention_mask"] = attention_mask
            if "position_ids" in self._kw:
                kw["position_ids"] = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return self.model(input_ids=tokens, **kw).logits.float()


@functools.lru_cache(maxsize=2)
def load_masked_lm(path: str, mask_id: int | None = None, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu") -> HFMaskedLM:
    """Load a masked / diffusion LM (BERT-style, or LLaDA/Dream-style with local remote code)
    from a local directory; ``model(x).logits`` must be ``[B, L, V]``. Cached per process."""
    directory, gguf = _resolve(path)
    if gguf:
        raise InputError("GGUF files hold causal LMs here; pass a masked LM's model directory.")
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    kw = {"local_files_only": True, "trust_remote_code": True}
    tok = AutoTokenizer.from_pretrained(directory, **kw)
    try:
        model = AutoModelForMaskedLM.from_pretrained(directory, dtype=dtype, **kw)
    except ValueError:  # LLaDA / Dream register only AutoModel in their remote code
        model = AutoModel.from_pretrained(directory, dtype=dtype, **kw)
    return HFMaskedLM(model.to(device), mask_id=mask_id, tokenizer=tok,
                      name=Path(directory).name)
