"""Sequence layout of the arithmetic-chain task for the project's small models.

``[PAD ... PAD, BOS, prompt chars]`` (left-padded to ``PROMPT_LEN``) followed by the answer region
``[solution chars, EOS, EOS, ...]`` padded with EOS to ``gen_length``, as LLaDA's instruction
tuning pads answers.
"""

from __future__ import annotations

import torch

from parasample.errors import InputError
from parasample.tasks.arith import ArithProblem, CharTokenizer

__all__ = ["PROMPT_LEN", "encode_prompts", "encode_answers", "result_positions"]

#: Prompt region length: fits chains of up to 6 operations ("a=24;" + 6 x "b=a*9;" + "g?" + BOS).
PROMPT_LEN = 48


def encode_prompts(prompts: list[str], tok: CharTokenizer, prompt_len: int = PROMPT_LEN
                   ) -> torch.Tensor:
    """Texts -> ``[B, prompt_len]`` int64, BOS + characters, left-padded with PAD."""
    out = torch.full((len(prompts), prompt_len), tok.pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids = [tok.bos_id] + tok.encode(p)
        if len(ids) > prompt_len:
            raise InputError(f"prompt {p!r} has {len(ids)} tokens with BOS; this model's prompt "
                             f"region holds {prompt_len}. Use fewer chained operations.")
        out[i, prompt_len - len(ids):] = torch.tensor(ids)
    return out


def encode_answers(problems: list[ArithProblem], tok: CharTokenizer, gen_length: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Solutions -> ``answers [B, gen_length]`` (EOS-padded) and ``lengths [B]`` (chars + 1 EOS)."""
    out = torch.full((len(problems), gen_length), tok.eos_id, dtype=torch.long)
    lengths = torch.empty(len(problems), dtype=torch.long)
    for i, p in enumerate(problems):
        ids = tok.encode(p.solution)
        if len(ids) + 1 > gen_length:
            raise InputError(f"solution of {len(ids)} characters does not fit gen_length="
                             f"{gen_length}.")
        out[i, :len(ids)] = torch.tensor(ids)
        lengths[i] = len(ids) + 1
    return out, lengths


def result_positions(problems: list[ArithProblem], gen_length: int) -> torch.Tensor:
    """``[B, gen_length]`` bool: the answer-region characters that state a computed value.

    In ``b=7+5=12;#12`` those are ``12`` (after a step's last ``=``) and the final ``12``; the
    same in a restated step ``b=a+5=7+5=12``.
    """
    out = torch.zeros(len(problems), gen_length, dtype=torch.bool)
    for i, p in enumerate(problems):
        pos = 0
        for seg in p.solution.split(";"):
            start = seg.rfind("=") + 1 if seg.count("=") >= 2 else (1 if seg[:1] == "#" else None)
            if start is not None:
                out[i, pos + start:pos + len(seg)] = True
            pos += len(seg) + 1
    return out
