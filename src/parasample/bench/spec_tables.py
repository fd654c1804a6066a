"""``parasample bench spec``'s two tables beside the timings (see :mod:`parasample.bench.spec`):
``costs.csv``, the drafters' cost model (seconds per call of each target and draft model fed 1
and D + 1 tokens), and ``identity.csv``, the fraction of rows whose ``identical``-verifier output
equals sequential sampling's in float32, per source, drafter and sampling setting."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV
from parasample.bench.spec import (
    Group,
    SpecBenchConfig,
    _drafter,
    _prompts,
    _runs,
    _texts,
    groups,
)
from parasample.bench.timing import machine_fields, sync
from parasample.noise import SOURCES, derive_generator, make_source
from parasample.speculative import SpecConfig
from parasample.speculative import generate as spec_generate

__all__ = ["COST_HEADER", "IDENTITY_HEADER", "cost_models", "cost_rows", "identity_rows",
           "identity_sources", "n_steps"]

COST_HEADER = ["model", "role", "batch", "tokens_fed", "seconds_per_call", "relative_to_target",
               "calls_timed", "device", "torch_threads", "dtype"]
_COST_KEY = ["model", "role", "batch", "tokens_fed"]
IDENTITY_HEADER = ["model", "task", "sampler", "carry_bits", "drafter", "temperature", "top_p",
                   "k", "rows", "identical_rows", "identical_fraction",
                   "mean_first_difference", "max_new_tokens", "dtype", "device"]
_IDENTITY_KEY = ["model", "task", "sampler", "carry_bits", "drafter", "temperature", "top_p",
                 "k", "max_new_tokens", "dtype"]


def cost_rows(cfg: SpecBenchConfig, out: Path, *, device="cpu", dtype=torch.float32,
              reps: int = 5) -> list[dict]:
    """``costs.csv``, the cost model of the drafters: seconds per call of each target and draft
    model fed 1 and ``draft_len + 1`` tokens after a prompt of its task, at batch 1 and k
    (median of at least ``reps`` calls after a warm-up), and each relative to its target's
    one-token call at that batch. A step of the model drafter costs one verification of D + 1 tokens
    and D draft calls of about one token each; an n-gram step, the verification alone. The
    default study times the toy pair (and SmolLM2 unless --skip-lm), a real-model run its target
    and draft."""
    log = ResumableCSV(out / "costs.csv", COST_HEADER, _COST_KEY)
    fields = machine_fields(device, dtype)
    for models, prompt in cost_models(cfg, device, dtype):
        for batch in (1, cfg.k):
            base = None  # the target's one-token call at this batch (measured first)
            for label, role, load in models:
                for fed in (1, cfg.draft_len + 1):
                    key = {"model": label, "role": role, "batch": batch, "tokens_fed": fed}
                    row = log.done(key)  # a resumed run keeps the rows it has
                    if row is None:
                        lm = load()
                        ids, mask = prompt(lm)
                        sec, calls = _call_seconds(lm, ids.expand(batch, -1),
                                                   mask.expand(batch, -1), fed, reps, device)
                        base = sec if base is None else base
                        log.append({**key, "seconds_per_call": round(sec, 5),
                                    "relative_to_target": round(sec / base, 3),
                                    "calls_timed": calls, **fields})
                    elif base is None:
                        base = float(row["seconds_per_call"])
    return log.rows


def cost_models(cfg: SpecBenchConfig, device, dtype) -> list[tuple[list, Callable]]:
    """The pairs costs.csv times: each ``([(label, role, load()), ...] target first,
    prompt(lm) -> (ids [1, P], mask [1, P]))``; models load only when a row is missing."""
    from parasample.models.registry import load_ar
    from parasample.targets.named import lm_label, load_lm

    def chat(lm):
        return lm.encode_prompts(_texts("gsm8k", 1, cfg))

    if not cfg.smollm2:
        models = [(lm_label(cfg.model), "target", lambda: load_lm(cfg.model, dtype, device))]
        if cfg.draft:
            models.append((lm_label(cfg.draft), "draft", lambda: load_lm(cfg.draft, dtype,
                                                                          device)))
        return [(models, chat)]
    toy = Group("ar-arith", "arith", 1, ())
    pairs = [([("ar-arith", "target", lambda: load_ar(device=device, dtype=dtype)),
               ("ar-arith-draft", "draft", lambda: load_ar("ar-arith-draft", device=device,
                                                           dtype=dtype))],
              lambda lm: _prompts(toy, cfg, lm)[0])]
    if not cfg.skip_lm:  # SmolLM2 verifies n-gram and sibling drafts: its verification cost
        pairs.append(([("smollm2", "target", lambda: load_lm("smollm2", dtype, device))], chat))
    return pairs


def _call_seconds(lm, ids, mask, fed: int, reps: int, device, min_seconds: float = 0.5
                  ) -> tuple[float, int]:
    """(median seconds, calls timed) of ``lm.extend`` by ``fed`` tokens after the prompt (rolled
    back after each call, so every call sees the same context), over ``reps`` calls after a
    warm-up, or more until ``min_seconds`` have been timed (a small model's millisecond calls
    need many for a stable median)."""
    _, cache = lm.start(ids, mask)
    tokens = ids[:, -fed:].contiguous()
    drop = torch.full((ids.shape[0],), fed, dtype=torch.long)
    walls: list[float] = []
    warm = True
    while warm or len(walls) < reps or sum(walls) < min_seconds:
        sync(device)
        t0 = time.perf_counter()
        _, cache = lm.extend(cache, tokens)
        sync(device)
        if not warm:
            walls.append(time.perf_counter() - t0)
        warm = False
        cache = lm.rollback(cache, drop.to(ids.device))
    return statistics.median(walls), len(walls)


#: sources of the identity table: (name, carry_bits); the carrying ones whole and to a few bits
def identity_sources(k: int) -> list[tuple[str, int | None]]:
    bits = int(math.log2(k)) + 2  # the strata of k rows and a 4x margin
    out = [(s, None) for s in SOURCES]
    out += [(s, b) for s in ("arithmetic", "stratified") for b in (bits, bits + 8)]
    return out


def identity_rows(cfg: SpecBenchConfig, out: Path, *, device="cpu", dtype=torch.float32,
                  progress=None) -> list[dict]:
    """``identity.csv``: per source x drafter x sampling setting, the fraction of the model's
    rows (SmolLM2 or ``cfg.model``) whose ``identical``-verifier output equals sequential
    sampling's (float32 unless --dtype says otherwise), and where the differing rows first
    differ."""
    from parasample.targets.named import lm_label, load_lm

    log = ResumableCSV(out / "identity.csv", IDENTITY_HEADER, _IDENTITY_KEY)
    if cfg.skip_lm or cfg.identity_prompts == 0:
        return log.rows
    lm = None
    k, T = cfg.identity_k, cfg.identity_tokens
    fields = machine_fields(device, dtype)
    for temperature, top_p in ((cfg.temperature, cfg.top_p), (1.0, 1.0)):
        config = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=T)
        for name, bits in identity_sources(k):
            if name == "sobol" and k & (k - 1) or name == "antithetic" and k % 2:
                continue
            seq = None  # sequential sampling once per source, for both drafters
            for drafter in ("ngram", "sibling"):
                key = {"model": lm_label(cfg.model), "task": "gsm8k", "sampler": name,
                       "carry_bits": "" if bits is None else bits, "drafter": drafter,
                       "temperature": temperature, "top_p": top_p, "k": k,
                       "max_new_tokens": T, "dtype": fields["dtype"]}
                if log.done(key):
                    if progress is not None:
                        progress(1)
                    continue
                if lm is None:
                    lm = load_lm(cfg.model, dtype, device)
                    # unseen questions: after the ones the timing groups use
                    texts = _texts("gsm8k", cfg.identity_prompts, cfg, offset=cfg.prompts)
                    ids, mask = lm.encode_prompts(texts)

                def src(name=name, bits=bits, n=ids.shape[0] * k):
                    kw = {} if bits is None else {"carry_bits": bits}
                    return make_source(name, n, k, generator=derive_generator(
                        cfg.seed, "identity", name, bits), **kw)

                if seq is None:
                    seq = generate(lm, ids, mask, src(), config, samples_per_prompt=k)
                spec = spec_generate(lm, ids, mask, src(), config,
                                     SpecConfig(draft_len=cfg.draft_len),
                                     _drafter(drafter, lm, None), samples_per_prompt=k)
                log.append({**key, **_identity(seq, spec), "device": fields["device"]})
                if progress is not None:
                    progress(1)
    return log.rows


def _identity(seq, spec) -> dict:
    """Rows of ``spec`` equal to ``seq``'s (tokens up to and including EOS), and where the
    others first differ (mean token index)."""
    same, first = [], []
    for r in range(seq.tokens.shape[0]):
        a = seq.tokens[r, :int(seq.lengths[r])].tolist()
        b = spec.tokens[r, :int(spec.lengths[r])].tolist()
        same.append(a == b)
        if a != b:
            pairs = zip(a, b, strict=False)  # up to the shorter row
            first.append(next((i for i, (x, y) in enumerate(pairs) if x != y),
                              min(len(a), len(b))))
    return {"rows": len(same), "identical_rows": sum(same),
            "identical_fraction": round(sum(same) / len(same), 4),
            "mean_first_difference": round(sum(first) / len(first), 1) if first else ""}


def n_steps(cfg: SpecBenchConfig) -> int:
    """Progress units of a run (each timed run of every group, and each identity row)."""
    ident = 0
    if not cfg.skip_lm and cfg.identity_prompts:
        k = cfg.identity_k
        ident = 2 * 2 * sum(1 for name, _ in identity_sources(k)
                            if not (name == "sobol" and k & (k - 1) or name == "antithetic"
                                    and k % 2))
    return sum(_runs(g) for g in groups(cfg)) + ident
