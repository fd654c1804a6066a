"""``parasample bench passk``: correlated parallel sampling (QuasiMoTTo, seed 003).

For every (model, task, sampler) the harness draws, per problem, R batches of ``k_max`` samples
whose uniforms come from the sampler's source (one correlated group per batch), scores them with
the task's exact checker, and reads pass@k for every power-of-two k <= k_max off the first k
samples of each batch (every power-of-two prefix of a Sobol, lattice or antithetic group is
itself a group of that sampler; for arithmetic sampling the first 2^j code points are a
shifted 2^j-point grid). i.i.d. samples use the unbiased estimator over all R * k_max.
Beside it, every row reports the stride estimator (the mean over the k_max/k aligned k-blocks of
a batch, each distributed as a k-batch where the source ``splits_into`` them: unbiased, lower
variance), the standard errors of both from the sampling alone, and the fraction of k-blocks with
all samples right or all wrong (a GRPO group of that size with no learning signal). The
``stratified`` source is not swept: its prefixes are not stratified samples of fewer points.

Outputs under ``out``: ``passk.csv`` (one row per sampler, model, task, k), ``summary.csv``
(samples saved at matched pass@k per correlated sampler, with bootstrap SE over problems),
``throughput.csv`` (our engine against ``transformers`` ``generate(do_sample=True)``, and the
correlated sources against i.i.d., in one run), ``passk.png``. Raw per-problem results are kept
in ``raw/`` after each chunk, so an interrupted run resumes where it stopped.

This module is the runner; the workloads are :mod:`parasample.bench.passk_tasks` and the rows and
summaries :mod:`parasample.bench.passk_summary` (both re-exported here).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import read_csv, write_csv
from parasample.bench.passk_summary import passk_rows, summary_rows
from parasample.bench.passk_tasks import (
    PasskTask,
    TaskSpec,
    ar_chain_task,
    build_task,
    qwen_preset,
    short_task,
    smollm2_add_task,
    smollm2_gsm8k_task,
)
from parasample.bench.timing import machine_fields
from parasample.errors import InputError, require_at_least
from parasample.files import atomic_path
from parasample.noise import derive_generator, make_source, source_class

__all__ = ["PasskBenchConfig", "PasskTask", "PASSK_HEADER", "SUMMARY_HEADER",
           "THROUGHPUT_HEADER", "SAMPLERS", "ar_chain_task", "smollm2_add_task", "qwen_preset",
           "own_groups", "short_task",
           "smollm2_gsm8k_task", "sample_task", "passk_rows", "summary_rows",
           "measure_throughput", "run_benchmark"]

SAMPLERS = ("iid", "sobol", "lattice", "antithetic", "arithmetic")
PASSK_HEADER = ["sampler", "model", "task", "k", "pass_at_k", "stderr", "sampling_se",
                "stride_pass_at_k", "stride_stderr", "stride_sampling_se", "zero_variance",
                "zero_variance_se", "distinct_answers", "n_problems", "tokens", "wall_s",
                "device", "dtype"]
SUMMARY_HEADER = ["sampler", "model", "task", "k", "pass_at_k", "iid_pass_at_k", "of_bound",
                  "samples_saved", "samples_saved_se", "dropped"]
THROUGHPUT_HEADER = ["engine", "prefill", "sampler", "model", "batch_size", "new_tokens",
                     "tokens", "wall_s", "tokens_per_s", "ratio_vs_hf", "wall_vs_iid", "reps",
                     "device", "dtype", "torch_threads"]


@dataclass(frozen=True)
class PasskBenchConfig:
    """Sweep settings; the problem counts are sized so the default run fits 30 min on 2 cores.

    Attributes:
        k_max: largest k (a power of two); pass@k is reported for k = 1, 2, 4, ..., k_max.
        temperature: the small AR model's (its pass@1 is set at temperature 1).
        lm_temperature: SmolLM2's (at 1 its single-digit additions are rarely right; at 0.7
            its pass@1 is about 0.3).
        top_p: identical for every sampler and model.
        ar_problems, ar_batches: held-out arithmetic chains for the small AR model and the R
            independent k_max-batches per problem.
        add_problems, gsm8k_problems: problems for SmolLM2 (one k_max-batch each).
        gsm8k_tokens: SmolLM2's answer budget on GSM8K.
        operands: (lo, hi), the operand range of the short-answer questions; None: the
            model's own (:func:`~parasample.bench.passk_tasks.short_task`).
        throughput_batch, throughput_tokens, throughput_reps: the engine comparison.
        n_boot: bootstrap resamples of the problems for the samples-saved SE.
    """

    k_max: int = 64
    temperature: float = 1.0
    lm_temperature: float = 0.7
    top_p: float = 1.0
    ar_problems: int = 128
    ar_batches: int = 4
    add_problems: int = 64
    gsm8k_problems: int = 3
    gsm8k_tokens: int = 128
    operands: tuple[int, int] | None = None
    throughput_batch: int = 32
    throughput_tokens: int = 32
    throughput_reps: int = 3
    n_boot: int = 500
    samplers: tuple[str, ...] = SAMPLERS
    seed: int = 0

    def __post_init__(self):
        if self.k_max < 2 or self.k_max & (self.k_max - 1):
            raise InputError(f"k_max={self.k_max}: Sobol and lattice batches need a power of two "
                             f">= 2; use {1 << max(1, (self.k_max - 1).bit_length())}.")
        SamplingConfig(temperature=self.temperature, top_p=self.top_p)  # validates them
        SamplingConfig(temperature=self.lm_temperature)
        require_at_least(self, 1, "ar_batches", "gsm8k_tokens", "throughput_batch",
                         "throughput_tokens", "throughput_reps", "n_boot")
        for name in ("ar_problems", "add_problems", "gsm8k_problems"):
            if getattr(self, name) < 0:
                raise InputError(f"{name}={getattr(self, name)} must be >= 0 (0 skips the task).")
        if self.operands is not None:
            short_task("smollm2", self.operands)  # validates the range
        if "iid" not in self.samplers:
            raise InputError("samplers must include iid: samples saved are measured against it.")
        for s in self.samplers:
            make_source(s, self.k_max, self.k_max, generator=torch.Generator())  # valid names

    @property
    def ks(self) -> list[int]:
        return [1 << j for j in range(self.k_max.bit_length())]

    @classmethod
    def quick(cls, **kw) -> PasskBenchConfig:
        """A run of about a minute (tests, smoke checks): k up to 8, a few problems."""
        base = dict(k_max=8, ar_problems=8, ar_batches=2, add_problems=2, gsm8k_problems=0,
                    throughput_batch=4, throughput_tokens=4, throughput_reps=1, n_boot=50)
        return cls(**{**base, **kw})


def own_groups(sampler: str, cfg: PasskBenchConfig) -> bool:
    """Whether the sampler's k-batches must be drawn as groups of their own for each k: the
    first k samples of its k_max-group are not a k-group of it (stratified sampling: a prefix
    covers k random strata of k_max, not one of each of k)."""
    return any(not source_class(sampler).splits_into(cfg.k_max, k) for k in cfg.ks if k >= 2)


def draw_chunk(task: PasskTask, sampler: str, cfg: PasskBenchConfig, c: int) -> dict:
    """Chunk ``c`` of ``task`` (``rows_per_call`` rows, whole problems) with ``sampler``: its
    ``correct`` and ``tokens [P, R, W]``, ``answers`` (flat) and generation ``wall_s``; W =
    k_max, or, for a sampler with :func:`own_groups`, one group of each k side by side (W =
    sum of the ks)."""
    K, R = cfg.k_max, task.batches
    sizes = cfg.ks if own_groups(sampler, cfg) else [K]
    W = sum(sizes)
    per_call = max(1, task.rows_per_call // (R * W))
    chunk = task.problems[c * per_call:(c + 1) * per_call]
    config = SamplingConfig(temperature=task.temperature, top_p=cfg.top_p,
                            max_new_tokens=task.max_new_tokens)
    ids, mask = task.encode(chunk)
    P = len(chunk)
    correct, tokens, answers, wall = [], [], [], 0.0
    for k in sizes:
        src = make_source(sampler, P * R * k, k, generator=derive_generator(
            cfg.seed, task.model_name, task.name, sampler, c, *(() if k == K else (k,))))
        t0 = time.perf_counter()
        if task.engine is None:
            out = generate(task.model, ids, mask, src, config, samples_per_prompt=R * k)
        else:
            out = task.engine.generate(ids, mask, src, config, samples_per_prompt=R * k)
        wall += time.perf_counter() - t0
        texts = task.texts(out.tokens)
        probs = [p for p in chunk for _ in range(R * k)]
        correct.append(torch.tensor([task.correct(t, p) for t, p in
                                     zip(texts, probs, strict=True)]).view(P, R, k))
        tokens.append(out.lengths.cpu().view(P, R, k))
        answers.append([task.answer(t) for t in texts])
    # answers flat in (problem, batch, column) order, the columns of every k side by side
    flat = [answers[i][(p * R + r) * k:(p * R + r + 1) * k]
            for p in range(P) for r in range(R) for i, k in enumerate(sizes)]
    return {"correct": torch.cat(correct, -1), "tokens": torch.cat(tokens, -1),
            "answers": [a for group in flat for a in group], "wall_s": wall}


def _remote_draw_chunk(spec: TaskSpec, sampler: str, cfg: PasskBenchConfig, c: int) -> dict:
    return draw_chunk(build_task(spec), sampler, cfg, c)


def sample_task(task: PasskTask, sampler: str, cfg: PasskBenchConfig, raw_dir: Path, *,
                on_rows=None, executor=None, task_spec: TaskSpec | None = None) -> dict:
    """Draw and score every batch of ``task`` with ``sampler`` (resuming from ``raw_dir``; with
    an ``executor``, the missing chunks run as its units, built from ``task_spec``).

    Returns ``correct [P, R, K]`` bool, ``tokens [P, R, K]`` (generated tokens per sample),
    ``answers`` (nested lists [P][R][K]) and ``wall_s`` (generation seconds, scoring excluded).
    """
    K, R = cfg.k_max, task.batches
    W = sum(cfg.ks) if own_groups(sampler, cfg) else K
    path = raw_dir / f"{task.model_name}-{task.name}-{sampler}.pt"
    # what determines these samples (other settings of the run do not invalidate them)
    key = {"k_max": K, "batches": R, "top_p": cfg.top_p, "seed": cfg.seed, "task": task.name,
           "model": task.model_name, "sampler": sampler, "n_problems": len(task.problems),
           "temperature": task.temperature, "max_new_tokens": task.max_new_tokens,
           "device": str(task.device), "dtype": str(task.dtype),
           **({} if task.engine is None else {"engine": type(task.engine).__name__})}
    saved = torch.load(path, weights_only=False) if path.exists() else None
    if saved is None or saved["key"] != key:
        saved = {"key": key, "chunks": {}, "wall_s": 0.0}
    per_call = max(1, task.rows_per_call // (R * W))
    n_chunks = -(-len(task.problems) // per_call)
    todo = [c for c in range(n_chunks) if c not in saved["chunks"]]
    if on_rows and len(todo) < n_chunks:  # drawn by an earlier run: done from the start
        on_rows(sum(int(ch["correct"].numel()) for ch in saved["chunks"].values()))
    if executor is None or executor.name == "local":
        draws = (draw_chunk(task, sampler, cfg, c) for c in todo)
    else:
        draws = executor.map(_remote_draw_chunk, [(task_spec, sampler, cfg, c) for c in todo])
    for c in todo:
        chunk = next(draws)
        saved["wall_s"] += chunk.pop("wall_s")
        saved["chunks"][c] = chunk
        with atomic_path(path) as tmp:  # an interruption loses at most the chunks in progress
            torch.save(saved, tmp)
        if on_rows:
            on_rows(int(chunk["correct"].numel()))
    chunks = [saved["chunks"][c] for c in sorted(saved["chunks"])]
    answers = [a for ch in chunks for a in ch["answers"]]
    P = len(task.problems)
    res = {"correct": torch.cat([ch["correct"] for ch in chunks]),
           "tokens": torch.cat([ch["tokens"] for ch in chunks]),
           "answers": [[answers[(p * R + r) * W:(p * R + r + 1) * W] for r in range(R)]
                       for p in range(P)],
           "wall_s": saved["wall_s"]}
    if W == K:
        return res
    # one group of each k, side by side: split them; "correct" keeps the k_max group
    by_k, at = {}, 0
    for k in cfg.ks:
        by_k[k] = {"correct": res["correct"][:, :, at:at + k],
                   "tokens": res["tokens"][:, :, at:at + k],
                   "answers": [[b[at:at + k] for b in prob] for prob in res["answers"]]}
        at += k
    return {**by_k[K], "by_k": by_k, "wall_s": res["wall_s"]}


def measure_throughput(lm, prompt: str, cfg: PasskBenchConfig, samplers=SAMPLERS,
                       progress=None) -> list[dict]:
    """Tokens/s of our engine and of ``transformers`` ``generate(do_sample=True)`` on ``lm``.

    Every run makes ``throughput_batch`` samples of exactly ``throughput_tokens`` new tokens of
    one prompt (EOS ignored; ``min_new_tokens`` for transformers), temperature 1, no top-k /
    top-p, after one warm-up each. Configurations are interleaved ``throughput_reps`` times and
    the median wall time is kept. ``prefill``: ``per-row`` prefills the prompt for each row, as
    ``generate(num_return_sequences=...)`` does; ``shared`` prefills once and repeats the cache.
    """
    B, N = cfg.throughput_batch, cfg.throughput_tokens
    ids, mask = lm.encode_prompts([prompt])
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    dtype = next(lm.model.parameters()).dtype

    def ours(sampler, shared, n_tokens, rep):
        sc = SamplingConfig(max_new_tokens=n_tokens, ignore_eos=True)
        src = make_source(sampler, B, B, generator=torch.Generator().manual_seed(rep))
        if shared:
            return generate(lm, ids, mask, src, sc, samples_per_prompt=B)
        return generate(lm, ids.expand(B, -1), mask.expand(B, -1), src, sc)

    @torch.inference_mode()
    def hf(n_tokens, rep):
        torch.manual_seed(rep)  # transformers samples from the global RNG
        return lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                 num_return_sequences=B, max_new_tokens=n_tokens,
                                 min_new_tokens=n_tokens, temperature=1.0, top_k=0, top_p=1.0,
                                 pad_token_id=lm.pad_id)

    runs = {("transformers.generate", "per-row", "iid"): hf,
            ("parasample", "per-row", "iid"): lambda n, r: ours("iid", False, n, r)}
    for s in samplers:
        runs[("parasample", "shared", s)] = lambda n, r, s=s: ours(s, True, n, r)
    for fn in runs.values():
        fn(2, 0)  # warm-up: first-call allocations and lazy initialisation
    walls = {name: [] for name in runs}
    for rep in range(cfg.throughput_reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(N, rep + 1)
            walls[name].append(time.perf_counter() - t0)
            if progress:
                progress(1)
    med = {name: statistics.median(w) for name, w in walls.items()}
    hf_wall = med[("transformers.generate", "per-row", "iid")]
    iid_wall = med[("parasample", "shared", "iid")]
    rows = []
    for (engine, prefill, sampler), wall in med.items():
        rows.append({"engine": engine, "prefill": prefill, "sampler": sampler,
                     "model": getattr(lm, "name", "hf"), "batch_size": B, "new_tokens": N,
                     "tokens": B * N, "wall_s": round(wall, 3),
                     "tokens_per_s": round(B * N / wall, 1),
                     "ratio_vs_hf": round(hf_wall / wall, 3),
                     "wall_vs_iid": round(wall / iid_wall, 3) if prefill == "shared" else "",
                     "reps": cfg.throughput_reps, **machine_fields(lm.device, dtype)})
    return rows


def run_benchmark(cfg: PasskBenchConfig, out: Path, tasks: list[PasskTask], *,
                  executor=None, task_specs: list[TaskSpec] | None = None,
                  throughput_lm=None, throughput_prompt: str = "", progress=None) -> dict:
    """Run every task x sampler (resuming), then write the CSVs; returns the summary heads.

    ``progress(kind, amount)`` is called with ("rows", n) after each generated chunk and
    ("runs", 1) after each timing run.
    """
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw"
    raw.mkdir(exist_ok=True)
    ks = cfg.ks
    passk, summary, heads = [], [], {}
    for i, task in enumerate(tasks):
        if not task.problems:
            continue
        results = {}
        for sampler in cfg.samplers:
            results[sampler] = sample_task(task, sampler, cfg, raw, on_rows=(
                (lambda n: progress("rows", n)) if progress else None), executor=executor,
                task_spec=None if task_specs is None else task_specs[i])
            passk += passk_rows(task, sampler, results[sampler], ks)
            write_csv(out / "passk.csv", PASSK_HEADER, passk)
        rows, h = summary_rows(task, results, ks, cfg.n_boot, cfg.seed)
        summary += rows
        heads[(task.model_name, task.name)] = h
        write_csv(out / "summary.csv", SUMMARY_HEADER, summary)
    done = read_csv(out / "throughput.csv")
    where = {} if throughput_lm is None else machine_fields(
        throughput_lm.device, next(throughput_lm.model.parameters()).dtype)
    cols = ("batch_size", "new_tokens", "reps", "device", "dtype")
    same = bool(done) and [done[0].get(c) for c in cols] == [
        str(cfg.throughput_batch), str(cfg.throughput_tokens), str(cfg.throughput_reps),
        where.get("device"), where.get("dtype")]
    if throughput_lm is not None and not same:  # timings already taken are kept on a rerun
        tp = measure_throughput(throughput_lm, throughput_prompt, cfg, progress=(
            (lambda n: progress("runs", n)) if progress else None))
        write_csv(out / "throughput.csv", THROUGHPUT_HEADER, tp)
    return heads
