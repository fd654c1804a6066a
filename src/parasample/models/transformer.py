"""The small transformer the project trains and ships (bidirectional for masked diffusion,
causal for AR).

Written here rather than taken from transformers because the shipped checkpoints must stay a few
MB, train at about one step per second on 2 CPU cores, and use rotary positions (which extend to
sequence lengths seen rarely in training); a 60-line pre-LayerNorm block on top of
``F.scaled_dot_product_attention`` does that with no framework overhead per call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TransformerConfig", "TinyTransformer", "MaskedLMAdapter"]


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture; ``causal=False`` makes a masked (diffusion) LM, ``True`` an AR LM."""

    vocab_size: int
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    max_len: int = 512
    causal: bool = False
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into n_heads={self.n_heads} "
                             "heads of even size (rotary embeddings rotate pairs).")

    def to_dict(self) -> dict:
        return asdict(self)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the head dim: x [B, H, L, Dh]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class _Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model))

    def forward(self, x, cos, sin):  # x [B, L, D]
        B, L, D = x.shape
        H = self.cfg.n_heads
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)  # [B, H, L, Dh]
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.cfg.causal)
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """Token ids ``[B, L]`` -> logits ``[B, L, V]`` (float32), with rotary positions."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        dh = cfg.d_model // cfg.n_heads
        inv = cfg.rope_base ** (-torch.arange(0, dh, 2, dtype=torch.float32) / dh)  # [Dh/2]
        ang = torch.arange(cfg.max_len, dtype=torch.float32)[:, None] * inv[None]  # [Lmax, Dh/2]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[1]
        if L > self.cfg.max_len:
            raise ValueError(f"sequence of {L} tokens exceeds this model's context of "
                             f"{self.cfg.max_len}; shorten the prompt or gen_length.")
        x = self.embed(tokens)
        cos, sin = self.cos[:L], self.sin[:L]
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.head(self.ln_f(x)).float()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class MaskedLMAdapter:
    """:class:`~parasample.targets.MaskedModel` view of a bidirectional TinyTransformer."""

    def __init__(self, model: TinyTransformer, mask_id: int, eos_id: int | None = None,
                 tokenizer=None):
        if model.cfg.causal:
            raise ValueError("a causal transformer is not a masked LM; train it with causal=False.")
        self.model, self.mask_id, self.eos_id, self.tokenizer = model.eval(), mask_id, eos_id, \
            tokenizer
        self.vocab_size = model.cfg.vocab_size
        self.max_length = model.cfg.max_len

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)
