"""``parasample bench gsm8k``: greedy GSM8K pass@1 of a chat model under the instruct protocol.

The first ``problems`` test problems, each sent through the chat template with
:func:`~parasample.tasks.gsm8k.protocol_prompt`, decoded greedily (transformers'
``generate(do_sample=False)``, batched with left padding; greedy is the argmax, which no
inverse-CDF sampler reproduces at a positive temperature) for at most ``max_new_tokens``
tokens, the answer read by :func:`~parasample.tasks.gsm8k.extract_answer`. ``greedy.csv`` keeps
every output text (the recorded outputs the extraction tests are built from), one batch
appended at a time, so an interrupted run resumes; ``summary.csv`` has pass@1 with its
standard error over problems and the decode's tokens/s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from parasample.bench.csvlog import ResumableCSV, write_csv
from parasample.bench.timing import machine_fields
from parasample.errors import require_at_least

__all__ = ["GSM8KBenchConfig", "GREEDY_HEADER", "SUMMARY_HEADER", "run_greedy", "summary"]

GREEDY_HEADER = ["model", "index", "answer", "extracted", "correct", "new_tokens", "finished",
                 "text"]
SUMMARY_HEADER = ["model", "problems", "pass_at_1", "stderr", "unfinished", "mean_new_tokens",
                  "max_new_tokens", "wall_s", "tokens_per_s", "batch_size", "device", "dtype",
                  "torch_threads"]


@dataclass(frozen=True)
class GSM8KBenchConfig:
    problems: int = 200
    max_new_tokens: int = 320
    batch_size: int = 8

    @classmethod
    def quick(cls, **kw) -> GSM8KBenchConfig:
        return cls(**{"problems": 4, "max_new_tokens": 48, **kw})

    def __post_init__(self):
        require_at_least(self, 1, "problems", "max_new_tokens", "batch_size")


@torch.inference_mode()
def _greedy(lm, texts: list[str], max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy continuations ``[B, T]`` (EOS-padded) of the chat prompts and their lengths."""
    ids, mask = lm.encode_prompts(texts)
    out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                            do_sample=False, max_new_tokens=max_new_tokens,
                            pad_token_id=lm.pad_id, eos_token_id=lm.eos_id, top_k=None,
                            top_p=None, temperature=None)
    new = out[:, ids.shape[1]:].cpu()
    is_eos = new == lm.eos_id
    lengths = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, new.shape[1])
    return new, lengths


def run_greedy(lm, model_name: str, cfg: GSM8KBenchConfig, out: Path, *, data=None,
               progress=None) -> list[dict]:
    """Decode every unfinished batch of problems, appending its rows to ``greedy.csv`` and its
    decode time to ``batches.csv`` (the summary's tokens/s sums the batches' own times, so a
    resumed run reports the same kind of figure); returns all rows."""
    from parasample.tasks.gsm8k import (
        extract_answer,
        load_gsm8k,
        normalize_number,
        protocol_prompt,
    )

    problems = load_gsm8k(data, limit=cfg.problems)
    csv = ResumableCSV(out / "greedy.csv", GREEDY_HEADER, ["model", "index"])
    times = ResumableCSV(out / "batches.csv", ["model", "first", "size", "wall_s", "tokens"],
                         ["model", "first", "size"])
    for first in range(0, len(problems), cfg.batch_size):
        chunk = problems[first:first + cfg.batch_size]
        if csv.done({"model": model_name, "index": first + len(chunk) - 1}):
            if progress:
                progress(len(chunk))
            continue
        t0 = time.perf_counter()
        new, lengths = _greedy(lm, [protocol_prompt(p.question) for p in chunk],
                               cfg.max_new_tokens)
        wall = time.perf_counter() - t0
        texts = lm.decode(new)
        for j, (p, text) in enumerate(zip(chunk, texts, strict=True)):
            got = extract_answer(text)
            csv.append({"model": model_name, "index": first + j, "answer": p.answer,
                        "extracted": got or "", "correct": int(got is not None and got ==
                                                                normalize_number(p.answer)),
                        "new_tokens": int(lengths[j]),
                        "finished": int(bool((new[j] == lm.eos_id).any())), "text": text})
        times.append({"model": model_name, "first": first, "size": len(chunk),
                      "wall_s": round(wall, 3), "tokens": int(lengths.sum())})
        if progress:
            progress(len(chunk))
    return csv.rows


def summary(lm, model_name: str, cfg: GSM8KBenchConfig, out: Path, dtype) -> dict:
    """``summary.csv``: pass@1 +- SE over problems, unfinished answers, tokens/s."""
    from parasample.bench.csvlog import read_csv

    rows = [r for r in read_csv(out / "greedy.csv") if r["model"] == model_name]
    batches = [r for r in read_csv(out / "batches.csv") if r["model"] == model_name]
    n = len(rows)
    ok = [int(r["correct"]) for r in rows]
    p = sum(ok) / n
    wall = sum(float(b["wall_s"]) for b in batches)
    tokens = sum(int(b["tokens"]) for b in batches)
    row = {"model": model_name, "problems": n, "pass_at_1": round(p, 4),
           "stderr": round(math.sqrt(p * (1 - p) / max(1, n - 1)), 4),
           "unfinished": sum(1 for r in rows if r["finished"] == "0"),
           "mean_new_tokens": round(sum(int(r["new_tokens"]) for r in rows) / n, 1),
           "max_new_tokens": cfg.max_new_tokens, "wall_s": round(wall, 1),
           "tokens_per_s": round(tokens / wall, 2) if wall else "",
           "batch_size": cfg.batch_size, **machine_fields(lm.device, dtype)}
    write_csv(out / "summary.csv", SUMMARY_HEADER, [row])
    return row
