"""An energy over fixed-length continuations from a transformers causal LM (for p-NCG and QUEST)."""

from __future__ import annotations

import torch

from parasample.errors import InputError
from parasample.targets.hf import HFCausalLM

__all__ = ["HFEnergy"]


class HFEnergy:
    """:class:`~parasample.targets.EnergyTarget` pi(y) = p_LM(y | prompt) over fixed-length y.

    E(y) = -log p_LM(y | prompt) for y in V^length, EOS an ordinary token (no stopping), so
    ancestral sampling without EOS stops draws exactly from pi. ``log_prob_embedded`` is
    differentiable in the embeddings of y, on both sides of the model: as inputs, and as the
    output logits h . e_y, which needs tied input / output embeddings (SmolLM2 has them).
    """

    def __init__(self, lm: HFCausalLM, prompt_ids: torch.Tensor, length: int):
        model = lm.model
        if not getattr(model.config, "tie_word_embeddings", False):
            raise InputError("HFEnergy needs a model with tied input/output embeddings (the "
                             "gradient of log p w.r.t. an output token's embedding).")
        if prompt_ids.dim() != 1 or prompt_ids.numel() == 0:
            raise InputError("prompt_ids must be a non-empty 1-D tensor of token ids.")
        if prompt_ids.numel() + length > lm.max_length:
            raise InputError(f"prompt ({prompt_ids.numel()}) + length ({length}) exceeds the "
                             f"model's context of {lm.max_length}; use shorter sequences.")
        model.requires_grad_(False)  # gradients w.r.t. embeddings only
        self.lm, self.length = lm, length
        self.prompt_ids = prompt_ids.to(lm.device)
        self.embedding = model.get_input_embeddings().weight.detach()  # [V, D]
        self.vocab_size = self.embedding.shape[0]

    def log_prob_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """``e [B, L, D]`` -> ``[B]`` log p_LM(y | prompt) at embedding points."""
        B, P = e.shape[0], self.prompt_ids.numel()
        inp = torch.cat([self.embedding[self.prompt_ids].expand(B, -1, -1), e], dim=1)
        h = self.lm.model.model(inputs_embeds=inp).last_hidden_state  # [B, P + L, D]
        hs = h[:, P - 1:P - 1 + e.shape[1]]  # states that predict each y_t
        logits = self.lm.model.lm_head(hs).float()  # [B, L, V]
        return ((hs * e).sum(-1).float() - torch.logsumexp(logits, -1)).sum(-1)

    @torch.no_grad()
    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L]`` -> ``[B]``."""
        return self.log_prob_embedded(self.embedding[tokens])
