"""``parasample bench engines``' top-p table: the cost of one top-p draw's nucleus, computed by
:func:`~parasample.ancestral.top_p_mask` (``topk`` candidates) against one full sort of the
vocabulary (:func:`~parasample.ancestral.top_p_mask_by_sort`, the rule's definition), on the
model's own next-token distribution after the benchmark's prompt.

Each (rows, temperature, top_p) setting is timed after a warm-up, ``reps`` times with the two
rules interleaved; the median is kept. ``same_mask`` checks that both keep the same tokens (so
every uniform draws the same token); ``kept`` is the mean nucleus size.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from parasample.ancestral import top_p_mask, top_p_mask_by_sort
from parasample.bench.csvlog import write_csv
from parasample.bench.timing import machine_fields, sync

__all__ = ["TOPP_HEADER", "topp_rows"]

TOPP_HEADER = ["model", "vocab_size", "rows", "temperature", "top_p", "kept", "ms_sort",
               "ms_candidates", "speedup", "same_mask", "reps", "device", "dtype",
               "torch_threads"]


def _ms(rule, probs: torch.Tensor, top_p: float) -> float:
    """Milliseconds of one ``rule(probs, top_p)``."""
    sync(probs.device)
    t0 = time.perf_counter()
    rule(probs, top_p)
    sync(probs.device)
    return 1000 * (time.perf_counter() - t0)


def topp_rows(lm, prompt: str, out: Path, *, rows: tuple[int, ...] = (1, 32),
              temperatures: tuple[float, ...] = (0.7, 1.0),
              top_ps: tuple[float, ...] = (0.9, 0.95), reps: int = 20) -> list[dict]:
    """Time both rules on ``lm``'s next-token probabilities after ``prompt`` (float64, as
    :func:`~parasample.ancestral.sampling_probs` computes them), repeated to each row count:
    ``topp.csv`` in ``out`` (a few seconds; rewritten whole)."""
    ids, mask = lm.encode_prompts([prompt])
    with torch.inference_mode():
        logits, _ = lm.start(ids.to(lm.device), mask.to(lm.device))  # [1, V]
    fields = machine_fields(lm.device, next(lm.model.parameters()).dtype)
    table = []
    for n in rows:
        for temperature in temperatures:
            probs = torch.softmax(logits.to(torch.float64) / temperature, -1).expand(n, -1)
            probs = probs.contiguous()  # [n, V]
            for top_p in top_ps:
                fast, ref = top_p_mask(probs, top_p), top_p_mask_by_sort(probs, top_p)  # warm-up
                t_sort, t_fast = [], []
                for _ in range(reps):  # interleaved, so both see the same machine
                    t_sort.append(_ms(top_p_mask_by_sort, probs, top_p))
                    t_fast.append(_ms(top_p_mask, probs, top_p))
                ms_sort, ms_fast = statistics.median(t_sort), statistics.median(t_fast)
                table.append({"model": lm.name, "vocab_size": probs.shape[-1], "rows": n,
                              "temperature": temperature, "top_p": top_p,
                              "kept": round(float(fast.sum(-1).double().mean()), 1),
                              "ms_sort": round(ms_sort, 3), "ms_candidates": round(ms_fast, 3),
                              "speedup": round(ms_sort / ms_fast, 2),
                              "same_mask": bool(torch.equal(fast, ref)), "reps": reps,
                              **fields})
    write_csv(out / "topp.csv", TOPP_HEADER, table)
    return table
