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

from parasample.errors import InputError

__all__ = ["TransformerConfig", "TinyTransformer", "KVCache", "MaskedLMAdapter",
           "CausalLMAdapter"]


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
            raise InputError(f"d_model={self.d_model} must split into n_heads={self.n_heads} "
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

    def forward(self, x, cos, sin, cache=None, start: int = 0, kv_out: list | None = None):
        """``x [B, L, D]`` (positions start..start+L-1) -> ``[B, L, D]``.

        ``cache``: this layer's (keys, values) buffers ``[B, H, T, Dh]``; the new positions are
        written in place. A causal model's preallocated buffers (T = max_len) are then read at
        positions 0..start+L-1; a bidirectional model's (T = the sequence length, filled by an
        earlier full pass) are read whole: the new positions attend to fresh keys for themselves
        and to the cached, possibly stale ones elsewhere (Fast-dLLM's approximate cache).
        ``start`` may be a ``[B]`` tensor (a causal cache whose rows hold different lengths
        after speculative decoding's per-row rollback): row b's positions are then
        start[b]..start[b]+L-1 and each query sees its own row's keys up to itself.
        ``kv_out``: a list that receives this layer's (keys, values) of a full pass.
        """
        B, L, D = x.shape
        H = self.cfg.n_heads
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)  # [B, H, L, Dh]
        if kv_out is not None:
            kv_out.append((k, v.contiguous()))
        if isinstance(start, torch.Tensor):  # ragged causal cache: per-row write and mask
            pos = start[:, None] + torch.arange(L, device=x.device)  # [B, L]
            rows = torch.arange(B, device=x.device)[:, None]  # [B, 1]
            cache[0][rows, :, pos] = k.transpose(1, 2)  # [B, L, H, Dh] at each row's positions
            cache[1][rows, :, pos] = v.transpose(1, 2)
            end = int(pos.max()) + 1
            k, v = cache[0][:, :, :end], cache[1][:, :, :end]
            sees = torch.arange(end, device=x.device) <= pos[:, :, None]  # [B, L, end]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=sees[:, None])
        else:
            mask = None
            if cache is not None:
                cache[0][:, :, start:start + L] = k
                cache[1][:, :, start:start + L] = v
                end = start + L if self.cfg.causal else cache[0].shape[2]
                k, v = cache[0][:, :, :end], cache[1][:, :, :end]
                if self.cfg.causal and start > 0 and L > 1:
                    # several new positions after cached ones (a speculative verification):
                    # query i sees keys 0..start+i (SDPA's is_causal would align top-left)
                    mask = (torch.arange(end, device=x.device)
                            <= start + torch.arange(L, device=x.device)[:, None])  # [L, end]
            # a prefill (start = 0) is causal as usual; one new position attends to all before
            a = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and self.cfg.causal and L > 1)
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.ln2(x))


class KVCache:
    """Preallocated keys and values of a causal TinyTransformer: per layer two
    ``[B, H, max_len, Dh]`` buffers and the number of positions filled.

    Written in place as the sequence grows (a concatenating cache spent most of the sampling
    time copying); like the transformers caches, a state must not be reused once advanced.
    ``length`` is an int while every row holds the same number of positions, and a ``[B]``
    tensor once :meth:`rollback` has given rows different lengths.
    """

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]],
                 length: int | torch.Tensor = 0):
        self.layers, self.length = layers, length

    def rollback(self, drop: torch.Tensor) -> KVCache:
        """Forget the last ``drop[b]`` positions of each row (``drop [B]`` >= 0), in place:
        only the lengths change, the next write overwrites them."""
        B = self.layers[0][0].shape[0]
        length = torch.as_tensor(self.length, device=drop.device).expand(B) - drop
        # rows of one length (always at batch 1) keep the int: the shared-position path, with
        # no per-row mask or scatter in the next forward
        lo, hi = int(length.min()), int(length.max())
        self.length = lo if lo == hi else length
        return self

    @classmethod
    def empty(cls, cfg: TransformerConfig, batch: int, dtype, device) -> KVCache:
        shape = (batch, cfg.n_heads, cfg.max_len, cfg.d_model // cfg.n_heads)
        # zeros, not empty: a ragged row's attention reads past its own length (masked out,
        # but a NaN of uninitialised memory times weight 0 is still NaN)
        return cls([(torch.zeros(shape, dtype=dtype, device=device),
                     torch.zeros(shape, dtype=dtype, device=device))
                    for _ in range(cfg.n_layers)])

    def select(self, index: torch.Tensor) -> KVCache:
        """Rows ``index [B']`` (copied; B' may exceed B)."""
        length = self.length[index] if isinstance(self.length, torch.Tensor) else self.length
        return KVCache([(k[index], v[index]) for k, v in self.layers], length)


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

    def forward(self, tokens: torch.Tensor, kv_out: list | None = None) -> torch.Tensor:
        """``tokens [B, L]`` -> logits ``[B, L, V]`` (no cache). ``kv_out``, if given, receives
        every layer's (keys, values) ``[B, H, L, Dh]``: the full pass that (re)fills a
        bidirectional block cache computes exactly what this plain pass computes."""
        return self._run(tokens, None, kv_out=kv_out)

    def forward_window(self, tokens: torch.Tensor, start: int,
                       kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Bidirectional models: logits ``[B, W, V]`` of the window ``tokens [B, W]`` at
        positions start..start+W-1, attending to fresh keys and values for the window and to
        ``kv``'s (from an earlier full pass, see :meth:`forward`) for every other position.
        ``kv`` is updated in place at the window."""
        if self.cfg.causal:
            raise ValueError("forward_window is the block cache of a bidirectional model.")
        W = tokens.shape[1]
        x = self.embed(tokens)
        cos, sin = self.cos[start:start + W], self.sin[start:start + W]
        for blk, layer_kv in zip(self.blocks, kv, strict=True):
            x = blk(x, cos, sin, layer_kv, start)
        return self.head(self.ln_f(x)).float()

    def forward_cached(self, tokens: torch.Tensor, cache: KVCache | None = None
                       ) -> tuple[torch.Tensor, KVCache | None]:
        """Logits ``[B, L, V]`` of ``tokens [B, L]`` that follow the positions held in ``cache``.

        Without a cache the sequence starts at position 0 and a new cache holding it is
        returned; with one, it is extended in place. Causal models only.
        """
        if not self.cfg.causal:
            raise ValueError("a KV cache extends a causal model; this one is bidirectional.")
        if cache is None:
            cache = KVCache.empty(self.cfg, tokens.shape[0], self.embed.weight.dtype,
                                  tokens.device)
        return self._run(tokens, cache), cache

    def _run(self, tokens: torch.Tensor, cache: KVCache | None, kv_out: list | None = None
             ) -> torch.Tensor:
        L = tokens.shape[1]
        start = 0 if cache is None else cache.length  # int, or [B] for a ragged cache
        longest = start if isinstance(start, int) else int(start.max())
        if longest + L > self.cfg.max_len:
            raise InputError(f"sequence of {longest + L} tokens "
                             f"exceeds this model's context of {self.cfg.max_len}; shorten the "
                             "prompt or gen_length.")
        x = self.embed(tokens)
        if isinstance(start, torch.Tensor):  # per-row positions: [B, 1, L, Dh/2] tables
            pos = start[:, None] + torch.arange(L, device=tokens.device)
            cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]
        else:
            cos, sin = self.cos[start:start + L], self.sin[start:start + L]
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, None if cache is None else cache.layers[i], start, kv_out)
        if cache is not None:
            cache.length = start + L
        return self.head(self.ln_f(x)).float()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _Adapter:
    """What both views of a TinyTransformer share: the model in eval mode, its tokenizer, sizes
    and device. ``causal`` is the attention the view needs; the other kind is refused."""

    def __init__(self, model: TinyTransformer, tokenizer, causal: bool):
        if model.cfg.causal != causal:
            raise ValueError("a causal transformer is not a masked LM; train it with "
                             "causal=False." if model.cfg.causal else "a bidirectional "
                             "transformer is not an AR LM; train it with causal=True.")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.vocab_size = model.cfg.vocab_size
        self.max_length = model.cfg.max_len

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device


class MaskedLMAdapter(_Adapter):
    """:class:`~parasample.targets.MaskedModel` view of a bidirectional TinyTransformer, with the
    block-cache hooks (``logits_and_kv``, ``logits_window``) that diffusion decoding's prefix and
    dual caches use.

    The arithmetic-chain layout left-pads every prompt to a fixed region, so the attention mask
    is not needed (it is accepted and ignored)."""

    def __init__(self, model: TinyTransformer, mask_id: int, eos_id: int | None = None,
                 tokenizer=None):
        super().__init__(model, tokenizer, causal=False)
        self.mask_id, self.eos_id = mask_id, eos_id

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        return self.model(tokens.to(self.device))

    @torch.inference_mode()
    def logits_and_kv(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """The plain full pass (the same logits as :meth:`logits`) and every layer's K/V."""
        kv: list = []
        return self.model(tokens.to(self.device), kv_out=kv), kv

    @torch.inference_mode()
    def logits_window(self, tokens: torch.Tensor, start: int, kv) -> torch.Tensor:
        """Logits of a window of positions against cached K/V elsewhere (updated in place)."""
        return self.model.forward_window(tokens.to(self.device), start, kv)


class CausalLMAdapter(_Adapter):
    """:class:`~parasample.targets.ARModel` view of a causal TinyTransformer on the
    arithmetic-chain layout (prompts left-padded to a fixed region, so all rows share positions).

    ``use_cache=False`` recomputes the whole sequence at every step: the reference that the
    KV-cached path is tested against.
    """

    def __init__(self, model: TinyTransformer, eos_id: int, tokenizer=None,
                 use_cache: bool = True):
        super().__init__(model, tokenizer, causal=True)
        self.eos_id = eos_id
        self.use_cache = use_cache  # the KV cache is written in place (see KVCache)

    @torch.inference_mode()
    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Prefill ``prompt_ids [B, P]`` (padding is part of the layout the model was trained
        on, so the attention mask is not needed) -> (next-token logits ``[B, V]``, state)."""
        prompt_ids = prompt_ids.to(self.device)
        if not self.use_cache:
            return self.model(prompt_ids)[:, -1], prompt_ids
        logits, cache = self.model.forward_cached(prompt_ids)
        return logits[:, -1], cache

    @torch.inference_mode()
    def advance(self, state, tokens: torch.Tensor):
        tokens = tokens.to(self.device)
        if self.use_cache:
            logits, cache = self.model.forward_cached(tokens[:, None], state)
            return logits[:, -1], cache
        seq = torch.cat([state, tokens[:, None]], dim=1)  # [B, t + 1]
        return self.model(seq)[:, -1], seq

    @torch.inference_mode()
    def extend(self, state, tokens: torch.Tensor):
        """Append ``tokens [B, D]`` in one forward -> (logits ``[B, D, V]``, state): speculative
        decoding's verification pass (KV-cached models only)."""
        self._need_cache("extend")
        logits, cache = self.model.forward_cached(tokens.to(self.device), state)
        return logits, cache

    def rollback(self, state, drop: torch.Tensor):
        """Forget the last ``drop[b]`` tokens of each row (rejected drafts)."""
        self._need_cache("rollback")
        return state.rollback(drop.to(self.device))

    def _need_cache(self, what: str) -> None:
        if not self.use_cache:
            raise ValueError(f"{what} needs the KV-cached model; load it with use_cache=True.")

    def reorder(self, state, index: torch.Tensor):
        """Rows ``index [B']`` of the state (B' may exceed B: rows are repeated)."""
        return state.select(index) if self.use_cache else state[index]
