"""Correlated sampling inside ``transformers``' ``model.generate``.

transformers samples with ``torch.multinomial`` from the global RNG, so no user-chosen uniform
can drive it. :class:`SourceLogitsProcessor` takes over the draw: at every step it shapes the raw
logits with the :class:`~parasample.ancestral.SamplingConfig` (temperature, top-p), draws each
row's token by inverse CDF from the next uniform of a parasample
:class:`~parasample.noise.UniformSource` (carrying arithmetic sampling's residual), and returns
logits that are -inf everywhere but at that token, so generate's own sampling can only pick it.
The result is token for token what :func:`parasample.ancestral.generate` draws from the same
model, source and settings, with every sample an exact draw from q.

Use :func:`generate`, which also switches off generate's own logits warpers (top-k 50 by
default), or pass the processor yourself with ``do_sample=True, temperature=1.0, top_k=0,
top_p=1.0``: a processor sees the logits after generate's built-in processors.
"""

from __future__ import annotations

import torch

from parasample.ancestral import SamplingConfig, draw
from parasample.errors import InputError
from parasample.noise import UniformSource
from parasample.workspace import Workspace

__all__ = ["SourceLogitsProcessor", "generate"]


def _base():
    try:
        from transformers import LogitsProcessor
    except ImportError as e:  # pragma: no cover - transformers is a dependency
        raise ImportError("parasample.integrations.transformers needs transformers: "
                          "pip install transformers") from e
    return LogitsProcessor


class SourceLogitsProcessor(_base()):
    """Force every row's next token to the inverse-CDF draw from ``source``'s next uniform.

    Args:
        source: n rows = the batch generate runs (prompts x num_return_sequences, prompt-major,
            as generate expands them); dimension t drives step t.
        config: temperature and top-p applied to the raw logits (``max_new_tokens`` is
            generate's to enforce).
        eos_id: the model's EOS; after it a row only emits EOS (as parasample's engine does;
            pass ``pad_token_id=eos_id`` to generate for identical outputs), unless
            ``config.ignore_eos``, where EOS is an ordinary token, as in the engine.
    """

    def __init__(self, source: UniformSource, config: SamplingConfig, eos_id: int | None):
        self.source, self.config, self.eos_id = source, config, eos_id
        self.done = self.logq = self.residual = None
        self._work = Workspace()  # the per-step [B, V] float64 buffers, reused (same bits)
        #: log q of each drawn token, ``[B, t]`` (0 after EOS), for callers that need it
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        B = scores.shape[0]
        if B != self.source.n:
            raise InputError(f"the uniform source serves {self.source.n} rows but generate runs "
                             f"{B}; build it with n = prompts x num_return_sequences = {B}.")
        dev = scores.device
        if self.done is None:
            self.done = torch.zeros(B, dtype=torch.bool, device=dev)
            self.logq = torch.zeros(B, dtype=torch.float64, device=dev)
            if self.source.carries_residual:
                self.residual = torch.full((B,), torch.nan, dtype=torch.float64, device=dev)
        u = self.source.uniform().to(dev)  # [B]
        # the engine's own draw (arithmetic sampling's carried code point included)
        tok, logq, _, self.residual = draw(
            scores, u, self.config, residual=self.residual, prefix_logq=self.logq,
            carry_bits=self.source.carry_bits, raw_logp=False, workspace=self._work)  # [B]
        if self.eos_id is not None and not self.config.ignore_eos:
            tok = torch.where(self.done, self.eos_id, tok)
            logq = torch.where(self.done, 0.0, logq)
            self.done = self.done | (tok == self.eos_id)
        self.logq = self.logq + logq
        self.logprobs.append(logq)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, tok[:, None], 0.0)


#: generate's own processors and warpers, switched off so the source's draw is the only one
NEUTRAL = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, min_p=None, typical_p=1.0,
               repetition_penalty=1.0, no_repeat_ngram_size=0, epsilon_cutoff=0.0,
               eta_cutoff=0.0)


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             source: UniformSource, config: SamplingConfig, *, samples_per_prompt: int = 1,
             eos_id: int | None = None, **generate_kwargs) -> torch.Tensor:
    """``model.generate`` with every token drawn from ``source``: ``[P * k, T]`` new tokens
    (prompt-major, EOS-padded), token-identical to :func:`parasample.ancestral.generate`.

    ``input_ids [P, L]`` left-padded; ``source.n = P * samples_per_prompt``; ``eos_id``
    defaults to the model's generation config's.
    """
    if eos_id is None:
        eos = model.generation_config.eos_token_id
        eos_id = eos[0] if isinstance(eos, list) else eos
    proc = SourceLogitsProcessor(source, config, eos_id)
    from transformers import LogitsProcessorList

    out = model.generate(input_ids=input_ids.to(model.device),
                         attention_mask=attention_mask.to(model.device),
                         num_return_sequences=samples_per_prompt,
                         max_new_tokens=config.max_new_tokens,
                         logits_processor=LogitsProcessorList([proc]),
                         pad_token_id=eos_id, eos_token_id=None if config.ignore_eos else eos_id,
                         **{**NEUTRAL, **generate_kwargs})
    return out[:, input_ids.shape[1]:]
