"""``bench dllm``'s exact parts beside the sweep: speculative decoding against the one-token-
per-step sampler it reproduces (``spec.csv``), and the dual cache's accuracy cost measured
paired on the same problems (``cache_paired.csv``).

Speculative rows (:mod:`parasample.diffusion.speculative`): S is fixed-steps decoding at one
token per step, B = 32, no cache, with low-confidence remasking at T = 0 (stage2-S256's
configuration) and top-probability remasking at T = 1 (low confidence reads the draw, which is
biased at T > 0). ``sequential`` runs S; ``spec-kK`` drafts K of S's steps per call, ``spec-
adaptive`` grows / shrinks K. Every row decodes the same problems with the same source and
seed, so ``identical_to_sequential`` is the fraction of rows whose tokens equal S's.
``spec-rejection-kK`` (T > 0) is the law-exact variant: S's law, not S's tokens, so its
identical fraction and accuracy are those of other exact samples; its calls per token and
``mean_committed`` sit beside ``spec-kK``'s (the acceptance of the two verifiers). The call
count and forward rows are exact counts; wallclock is one timed pass after a warm-up decode
(on a CPU a call over k + 1 contexts costs about k + 1 rows, so speculation saves calls, not
seconds; a GPU runs the k + 1 rows for about the price of one).

Paired cache cost: threshold decoding at B = 32 (stage1-B32's configuration) with and without
the dual cache on the same problems; the discordant counts and McNemar's exact test (a two-sided
binomial test on the discordant pairs) decide whether the cache changes accuracy.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from parasample.bench.csvlog import ResumableCSV
from parasample.bench.timing import machine_fields
from parasample.diffusion import (
    DecodeConfig,
    FixedSteps,
    Threshold,
    decode,
    low_confidence,
    make_cache,
    speculative,
    top_prob,
)
from parasample.errors import InputError
from parasample.noise import derive_generator, make_source
from parasample.targets import NFECounter

__all__ = ["SpecPartConfig", "SPEC_HEADER", "PAIRED_HEADER", "spec_runs", "spec_table",
           "paired_table", "mcnemar_p"]

SPEC_HEADER = [
    "run_name", "temperature", "score", "draft_len", "adaptive", "n_problems", "batch_size",
    "seed", "gen_length", "block_length", "accuracy", "nfe", "calls_per_token",
    "forward_rows_per_token", "calls_saved", "wall_s", "tokens_per_s", "speedup_wall",
    "identical_to_sequential", "mean_committed", "acceptance_hist", "device", "dtype",
    "torch_threads"]
PAIRED_HEADER = [
    "config", "n_problems", "seed", "accuracy_none", "accuracy_dual", "difference",
    "none_only", "dual_only", "mcnemar_p", "nfe_none", "nfe_dual", "device", "dtype"]


@dataclass(frozen=True)
class SpecPartConfig:
    """problems: problems decoded by every speculative row (0 skips the part); draft_lens: the
    fixed k of the ``spec-kK`` rows; rejection_draft_lens: the k of the law-exact
    ``spec-rejection-kK`` rows (at T > 0); temperatures: S's temperatures; paired_problems:
    problems of the paired cache comparison (0 skips it)."""

    problems: int = 16
    draft_lens: tuple[int, ...] = (2, 4, 8)
    adaptive: bool = True
    rejection_draft_lens: tuple[int, ...] = (4,)
    temperatures: tuple[float, ...] = (0.0, 1.0)
    paired_problems: int = 256

    def __post_init__(self):
        if self.problems < 0 or self.paired_problems < 0:
            raise InputError(f"problems={self.problems} and paired_problems="
                             f"{self.paired_problems} must be >= 0 (0 skips the part).")
        for k in self.draft_lens + self.rejection_draft_lens:
            speculative.SpecDecodeConfig(k)  # validates the range with its own message


def sequential_config(gen_length: int, block: int, temperature: float) -> DecodeConfig:
    """S: one token per step, no cache; low confidence at T = 0, top probability at T > 0."""
    return DecodeConfig(gen_length, block, gen_length, rule=FixedSteps(),
                        score=low_confidence if temperature == 0 else top_prob,
                        temperature=temperature, cache=make_cache("none"))


def spec_runs(part: SpecPartConfig, temperature: float
              ) -> list[tuple[str, speculative.SpecDecodeConfig | None]]:
    """(name, speculative config or None for S) in run order: S first, then each k, adaptive,
    and at T > 0 the law-exact rows."""
    runs = [("sequential", None)]
    runs += [(f"spec-k{k}", speculative.SpecDecodeConfig(k)) for k in part.draft_lens]
    if part.adaptive:
        runs.append(("spec-adaptive", speculative.SpecDecodeConfig(2, adaptive=True)))
    if temperature > 0:
        runs += [(f"spec-rejection-k{k}", speculative.SpecDecodeConfig(k, verify="rejection"))
                 for k in part.rejection_draft_lens]
    return runs


def _source(dc: DecodeConfig, seed: int, temperature: float, batch: int, rows: int):
    if not dc.needs_noise:
        return None
    return make_source("iid", rows, generator=derive_generator(seed, "spec", temperature, batch))


def _decode_all(task, problems, dc, spec, batch_size, seed):
    """Every problem through S (``spec`` None) or the speculative decoder: tokens ``[N, G]``,
    correct flags, calls, forward rows, committed-per-call list, wall seconds."""
    model = NFECounter(task.model)
    toks, ok, rows, committed, wall = [], [], 0, [], 0.0
    for b, i in enumerate(range(0, len(problems), batch_size)):
        batch = problems[i:i + batch_size]
        prompt, mask = task.encode(batch)
        src = _source(dc, seed, dc.temperature, b, len(batch))
        t0 = time.perf_counter()
        if spec is None:
            out = decode(model, prompt, dc, src, attention_mask=mask)
            rows += dc.steps * len(batch)  # every call of S runs every row of the batch
        else:
            out = speculative.decode(model, prompt, dc, spec, src, attention_mask=mask)
            rows += out.forward_rows
            committed += out.committed
        wall += time.perf_counter() - t0
        toks.append(out.tokens.cpu())
        texts = task.texts(out.tokens)
        ok += [task.correct(t, p) for t, p in zip(texts, batch, strict=True)]
    return torch.cat(toks), ok, model.nfe, rows, committed, wall


def spec_table(task, part: SpecPartConfig, gen_length: int, block: int, batch_size: int,
               seed: int, out: Path, log=None, progress=None) -> list[dict]:
    """Run (or resume) the speculative rows at each temperature; S's tokens are kept in
    ``raw/`` so a resumed run still checks identity. Writes ``spec.csv``."""
    from parasample.bench.dllm import answer_tokens

    problems = task.problems[:part.problems]
    n_batches = -(-len(problems) // batch_size)
    csv = ResumableCSV(out / "spec.csv", SPEC_HEADER,
                       ["run_name", "temperature", "n_problems", "batch_size", "seed",
                        "gen_length", "block_length", "device", "dtype"])
    where = machine_fields(task.device, task.dtype)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows = []
    for T in part.temperatures:
        dc = sequential_config(gen_length, block, T)
        ref_path = raw / f"spec-sequential-T{T:g}.pt"
        ref = torch.load(ref_path) if ref_path.exists() else None
        if ref is not None and ref["key"] != [len(problems), batch_size, seed, repr(dc)]:
            ref = None
        # one small warm-up decode per temperature: allocator and kernels ready before timing
        warm = task.encode(problems[:1])[0]
        speculative.decode(task.model, warm, dc, speculative.SpecDecodeConfig(2),
                           _source(dc, seed, T, -1, 1))
        seq_row = None
        for name, spec in spec_runs(part, T):
            key = {"run_name": name, "temperature": T, "n_problems": len(problems),
                   "batch_size": batch_size, "seed": seed, "gen_length": gen_length,
                   "block_length": block, **where}
            done = csv.done(key)
            if done is not None and (spec is not None or ref is not None):
                rows.append(done)
                seq_row = done if spec is None else seq_row
                if progress:
                    progress(len(problems))
                continue
            toks, ok, nfe, frows, committed, wall = _decode_all(task, problems, dc, spec,
                                                                batch_size, seed)
            if spec is None:
                ref = {"key": [len(problems), batch_size, seed, repr(dc)], "tokens": toks}
                torch.save(ref, ref_path)
            n_tok = answer_tokens(toks, task.eos_id)
            same = (toks == ref["tokens"]).all(1).double().mean().item()
            hist = Counter(committed)
            row = {**key, "score": dc.score.name, "draft_len": 1 if spec is None
                   else spec.draft_len, "adaptive": bool(spec and spec.adaptive),
                   "accuracy": round(sum(ok) / len(ok), 4), "nfe": nfe,
                   "calls_per_token": round(nfe / (n_batches * gen_length), 4),
                   "forward_rows_per_token": round(frows / (len(problems) * gen_length), 4),
                   "calls_saved": 1.0, "wall_s": round(wall, 3),
                   "tokens_per_s": round(n_tok / wall, 2), "speedup_wall": 1.0,
                   "identical_to_sequential": round(same, 4),
                   "mean_committed": round(sum(committed) / len(committed), 3)
                   if committed else 1.0,
                   "acceptance_hist": ";".join(f"{c}:{hist[c]}" for c in sorted(hist))
                   if hist else "1:all"}
            if spec is None:
                seq_row = row
            elif seq_row is not None:
                row["calls_saved"] = round(float(seq_row["nfe"]) / nfe, 3)
                row["speedup_wall"] = round(float(seq_row["wall_s"]) / wall, 3)
            if done is None:
                csv.append(row)
            rows.append(row)
            if log:
                log(f"spec T={T:g} {name}: {row['calls_per_token']} calls/token "
                    f"({row['calls_saved']}x fewer), identical {row['identical_to_sequential']},"
                    f" {row['tokens_per_s']} tok/s ({row['speedup_wall']}x)")
            if progress:
                progress(len(problems))
    return rows


def mcnemar_p(none_only: int, dual_only: int) -> float:
    """McNemar's exact test: two-sided binomial p-value of the discordant pairs at 1/2."""
    from scipy.stats import binomtest

    n = none_only + dual_only
    return 1.0 if n == 0 else float(binomtest(none_only, n, 0.5).pvalue)


def paired_table(task, problems: int, gen_length: int, block: int, threshold: float,
                 batch_size: int, seed: int, out: Path, log=None, progress=None) -> dict:
    """Threshold decoding at B = ``block``, T = 0, with and without the dual cache on the same
    ``problems``: accuracy of each, the discordant counts and McNemar's p. Per-problem results
    are kept in ``raw/`` (resumable per cache); writes ``cache_paired.csv``."""
    probs = task.problems[:problems]
    if len(probs) < problems:
        raise InputError(f"the paired cache comparison asks for {problems} problems but the task "
                         f"loaded {len(probs)}.")
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    where = machine_fields(task.device, task.dtype)
    ok, nfe = {}, {}
    for cache in ("none", "dual"):
        dc = DecodeConfig(gen_length, block, gen_length // block, rule=Threshold(threshold),
                          cache=make_cache(cache))
        path = raw / f"paired-{cache}.pt"
        key = [problems, batch_size, seed, repr(dc)]
        saved = torch.load(path) if path.exists() else None
        if saved is None or saved["key"] != key:
            model, flags = NFECounter(task.model), []
            for i in range(0, problems, batch_size):
                batch = probs[i:i + batch_size]
                prompt, mask = task.encode(batch)
                toks = decode(model, prompt, dc, None, attention_mask=mask).tokens
                flags += [task.correct(t, p) for t, p in
                          zip(task.texts(toks), batch, strict=True)]
                if progress:
                    progress(len(batch))
            saved = {"key": key, "ok": flags, "nfe": model.nfe}
            torch.save(saved, path)
        elif progress:
            progress(problems)
        ok[cache], nfe[cache] = torch.tensor(saved["ok"]), saved["nfe"]
    a, b = ok["none"], ok["dual"]
    none_only, dual_only = int((a & ~b).sum()), int((b & ~a).sum())
    row = {"config": f"threshold{threshold}-B{block}-T0", "n_problems": problems, "seed": seed,
           "accuracy_none": round(a.double().mean().item(), 4),
           "accuracy_dual": round(b.double().mean().item(), 4),
           "difference": round((b.double().mean() - a.double().mean()).item(), 4),
           "none_only": none_only, "dual_only": dual_only,
           "mcnemar_p": round(mcnemar_p(none_only, dual_only), 4),
           "nfe_none": nfe["none"], "nfe_dual": nfe["dual"],
           "device": where["device"], "dtype": where["dtype"]}
    csv = ResumableCSV(out / "cache_paired.csv", PAIRED_HEADER,
                       ["config", "n_problems", "seed", "device", "dtype"])
    if not csv.done(row):
        csv.append(row)
    if log:
        log(f"dual cache, paired on {problems} problems: accuracy {row['accuracy_dual']} vs "
            f"{row['accuracy_none']} ({100 * row['difference']:+.1f} points), discordant "
            f"{none_only} / {dual_only}, McNemar p = {row['mcnemar_p']}")
    return row
