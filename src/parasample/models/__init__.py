"""The small models parasample trains and ships, their training and loading."""

from parasample.models.registry import DEFAULT_DLLM, checkpoint_path, load_dllm
from parasample.models.transformer import MaskedLMAdapter, TinyTransformer, TransformerConfig

__all__ = ["DEFAULT_DLLM", "MaskedLMAdapter", "TinyTransformer", "TransformerConfig",
           "checkpoint_path", "load_dllm"]
