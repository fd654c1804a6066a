"""The small models parasample trains and ships, their training and loading."""

from parasample.models.registry import DEFAULT_AR, DEFAULT_DLLM, checkpoint_path, load_ar, load_dllm
from parasample.models.transformer import (
                                        CausalLMAdapter,
                                        MaskedLMAdapter,
                                        TinyTransformer,
                                        TransformerConfig,
)

__all__ = ["DEFAULT_AR", "DEFAULT_DLLM", "CausalLMAdapter", "MaskedLMAdapter", "TinyTransformer",
           "TransformerConfig", "checkpoint_path", "load_ar", "load_dllm"]
