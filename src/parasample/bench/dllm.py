"""``parasample bench dllm``: the masked-diffusion decoding benchmark of seed 004.

Stage 1 (block sweep): B in {4, ..., 256}, steps = num_blocks, confidence-threshold decoding.
Stage 2 (step sweep): B = 32, S in {8, ..., 256}, fixed-steps decoding with LLaDA's schedule and
low-confidence remasking; stage2-S256 is the sequential reference (one token per step).
Both stages run once per block cache (``none`` and Fast-dLLM's ``dual`` by default); a cached
row's name ends in ``+<cache>`` (``stage1-B32+dual``). Then threshold decoding at B = 32 is
repeated at temperature 0.5 and 1 (``temp-T0.5``; T = 0 is stage1-B32), and k samples per
held-out problem are drawn at temperature 1 with i.i.d., lattice and arithmetic-style sources
(pass@k, ``passk.csv``: seed 003's correlated sampling applied to diffusion decoding).

Throughput = answer tokens / wall seconds of the decode calls (model load excluded). Answer
tokens are the tokens before the first EOS: the prompt and the EOS padding are excluded.

The workloads are :mod:`parasample.bench.dllm_tasks` (re-exported here); the exact speculative
part is :mod:`parasample.bench.dllm_spec`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from parasample.ancestral import lengths_with_eos
from parasample.bench.csvlog import ResumableCSV, write_csv
from parasample.bench.dllm_tasks import (
    DLLMTask,
    TaskSpec,
    arith_task,
    build_task,
    gsm8k_task,
)
from parasample.bench.timing import machine_fields
from parasample.diffusion import (
    DecodeConfig,
    FixedSteps,
    Threshold,
    decode,
    make_cache,
    top_prob,
)
from parasample.errors import InputError
from parasample.noise import derive_generator, make_source
from parasample.targets import NFECounter

__all__ = ["DLLMBenchConfig", "RunSpec", "DLLMTask", "TaskSpec", "build_task", "sweep",
           "run_benchmark", "passk_table", "RESULTS_HEADER", "RUNS_HEADER", "PASSK_SAMPLERS",
           "arith_task", "gsm8k_task"]

RESULTS_HEADER = ["run_name", "block_length", "steps", "accuracy", "throughput"]
RUNS_HEADER = RESULTS_HEADER + [
    "stage", "method", "cache", "temperature", "model", "task", "n_problems", "batch_size",
    "seed", "gen_length", "threshold", "nfe", "nfe_per_problem", "tokens_per_step",
    "answer_tokens", "answer_fill", "wall_s", "forward_s", "forward_share", "device", "dtype",
    "torch_threads"]
_KEY = ["run_name", "model", "task", "n_problems", "batch_size", "seed", "gen_length",
        "threshold", "device", "dtype"]

STAGE1_BLOCKS = (4, 8, 16, 32, 64, 128, 256)
STAGE2_STEPS = (8, 16, 32, 64, 128, 256)
#: sources of the pass@k part: exact per row, correlated within the k samples of a problem
PASSK_SAMPLERS = ("iid", "lattice", "arithmetic")


@dataclass(frozen=True)
class DLLMBenchConfig:
    """Sweep settings. ``gen_length`` and ``threshold`` are fixed by the guide (256, 0.9).

    Attributes:
        caches: block caches to run both stages with (``none``, ``prefix``, ``dual``).
        temperatures: threshold decoding at B = 32 is repeated at these (T = 0 is stage 1).
        confidences: ... with confidence scored on each of these distributions (``tempered``:
            softmax(logits / T), rows ``temp-T0.5``; ``model``: softmax(logits), ``temp-T0.5-
            model``); tokens are drawn at T either way.
        passk_problems: held-out problems for the pass@k part (0 skips it); ``k_max`` samples
            per problem and sampler, at ``passk_temperature``.
    """

    # 32 problems x 30 configurations + pass@k on 24 fit 25 minutes on 2 cores (a no-cache pass
    # over 16 x 352 positions costs 0.4-0.5 s there; the no-cache stage 2 alone takes 9 min)
    n_problems: int = 32
    batch_size: int = 16
    gen_length: int = 256
    threshold: float = 0.9
    stage2_block: int = 32
    caches: tuple[str, ...] = ("none", "dual")
    temperatures: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 1.0)
    confidences: tuple[str, ...] = ("tempered", "model")
    passk_problems: int = 24
    k_max: int = 16
    passk_temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.n_problems < 1 or self.batch_size < 1:
            raise InputError(f"n_problems={self.n_problems} and batch_size={self.batch_size} "
                             "must be >= 1.")
        Threshold(self.threshold)  # validates the range with its own message
        if not self.caches:
            raise InputError("caches is empty; run at least one of: none, prefix, dual.")
        for c in self.caches:
            make_cache(c)  # unknown names are refused with the choices
        if any(t <= 0 for t in self.temperatures) or self.passk_temperature <= 0:
            raise InputError(f"temperatures={self.temperatures} and passk_temperature="
                             f"{self.passk_temperature} must be > 0 (T = 0 is stage 1).")
        if self.passk_problems < 0:
            raise InputError(f"passk_problems={self.passk_problems} must be >= 0 (0 skips).")
        if self.k_max < 2 or self.k_max & (self.k_max - 1):
            raise InputError(f"k_max={self.k_max}: lattice and arithmetic groups need a power of "
                             f"two >= 2; use {1 << max(1, (self.k_max - 1).bit_length())}.")

    @property
    def ks(self) -> list[int]:
        return [1 << j for j in range(self.k_max.bit_length())]


class RunSpec(NamedTuple):
    """One configuration of the sweep."""

    run_name: str
    stage: str
    method: str
    config: DecodeConfig


def _name(base: str, cache: str) -> str:
    return base if cache == "none" else f"{base}+{cache}"


def sweep(cfg: DLLMBenchConfig) -> list[RunSpec]:
    """Per cache: the guide's 13 configurations (stage 1 then stage 2), then threshold decoding
    at B = 32 at each confidence and temperature."""
    G, runs = cfg.gen_length, []
    nb = G // cfg.stage2_block
    for cache in cfg.caches:
        c = make_cache(cache)
        runs += [RunSpec(_name(f"stage1-B{B}", cache), "1", f"threshold{cfg.threshold}",
                         DecodeConfig(G, B, G // B, rule=Threshold(cfg.threshold), cache=c))
                 for B in STAGE1_BLOCKS if G % B == 0]
        runs += [RunSpec(_name(f"stage2-S{S}", cache), "2", "fixed-steps-low-confidence",
                         DecodeConfig(G, cfg.stage2_block, S, rule=FixedSteps(), cache=c))
                 for S in STAGE2_STEPS if S % nb == 0]
        runs += [RunSpec(_name(f"temp-T{t:g}" + ("" if conf == "tempered" else f"-{conf}"),
                               cache), "temperature", f"threshold{cfg.threshold}-top-prob-{conf}",
                         DecodeConfig(G, cfg.stage2_block, nb, rule=Threshold(cfg.threshold),
                                      score=top_prob, temperature=t, cache=c, confidence=conf))
                 for conf in cfg.confidences for t in cfg.temperatures]
    return runs


def answer_tokens(tokens: torch.Tensor, eos_id: int | None) -> int:
    """Tokens before each row's first EOS, summed (EOS and padding excluded)."""
    n = lengths_with_eos(tokens, eos_id)
    if eos_id is not None:
        n = n - (tokens == eos_id).any(1).long()  # the EOS itself is not an answer token
    return int(n.sum())


def _source(spec: RunSpec, cfg: DLLMBenchConfig, batch: int, rows: int):
    """The i.i.d. source of one batch of a sampled run (None at temperature 0): seeded from
    the run and batch, so a resumed run draws the same numbers."""
    if not spec.config.needs_noise:
        return None
    return make_source("iid", rows, generator=derive_generator(cfg.seed, spec.run_name, batch))


def run_one(task: DLLMTask, spec: RunSpec, cfg: DLLMBenchConfig, on_batch=None) -> dict:
    """Decode every problem with one configuration; return its CSV row."""
    model = NFECounter(task.model)
    correct = tokens = 0
    wall = tokens_per_step_sum = 0.0
    n_batches = 0
    for b, i in enumerate(range(0, len(task.problems), cfg.batch_size)):
        batch = task.problems[i:i + cfg.batch_size]
        prompt, mask = task.encode(batch)
        src = _source(spec, cfg, b, len(batch))
        t0 = time.perf_counter()
        out = decode(model, prompt, spec.config, src, attention_mask=mask)
        wall += time.perf_counter() - t0
        texts = task.texts(out.tokens)
        correct += sum(task.correct(t, p) for t, p in zip(texts, batch, strict=True))
        tokens += answer_tokens(out.tokens, task.eos_id)
        tokens_per_step_sum += out.tokens_per_step
        n_batches += 1
        if on_batch:
            on_batch(len(batch))
    n = len(task.problems)
    dc = spec.config
    return {
        "run_name": spec.run_name, "block_length": dc.block_length, "steps": dc.steps,
        "accuracy": round(correct / n, 4), "throughput": round(tokens / wall, 2),
        "stage": spec.stage, "method": spec.method, "cache": dc.cache.name,
        "temperature": dc.temperature, "model": task.model_name, "task": task.name,
        "n_problems": n, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "gen_length": cfg.gen_length, "threshold": cfg.threshold, "nfe": model.nfe,
        "nfe_per_problem": round(model.nfe * cfg.batch_size / n, 2),
        "tokens_per_step": round(tokens_per_step_sum / n_batches, 3),
        "answer_tokens": tokens, "answer_fill": round(tokens / (n * cfg.gen_length), 4),
        "wall_s": round(wall, 3), "forward_s": round(model.forward_s, 3),
        "forward_share": round(model.forward_s / wall, 4) if wall > 0 else 0.0,
        **machine_fields(task.device, task.dtype),
    }


def _remote_run_one(spec_task: TaskSpec, spec: RunSpec, cfg: DLLMBenchConfig) -> dict:
    """One configuration in a worker process (the task is built, and cached, there)."""
    task = build_task(spec_task)
    return run_one(task._replace(problems=task.problems[:cfg.n_problems]), spec, cfg)


def run_benchmark(task: DLLMTask, cfg: DLLMBenchConfig, out: Path, *, progress=None,
                  log=None, executor=None, task_spec: TaskSpec | None = None,
                  stages: tuple[str, ...] | None = None) -> list[dict]:
    """Run (or resume) the sweep, writing ``runs.csv`` row by row, then ``results.csv``.

    Returns the rows of this sweep, in sweep order. ``progress(advance)`` is called per decoded
    batch (problems), ``log(msg)`` per finished run. With an ``executor`` (Ray), the missing
    configurations run as its units, built from ``task_spec``; rows are written in sweep order.
    ``stages`` (e.g. ``("temperature",)``) runs only those stages' rows and leaves
    ``results.csv`` (the whole guide table) alone.
    """
    out.mkdir(parents=True, exist_ok=True)
    runs = ResumableCSV(out / "runs.csv", RUNS_HEADER, _KEY)

    where = machine_fields(task.device, task.dtype)

    def key(spec):
        return {"run_name": spec.run_name, "model": task.model_name, "task": task.name,
                "n_problems": len(task.problems), "device": where["device"],
                "dtype": where["dtype"], **{k: v for k, v in asdict(cfg).items() if k in _KEY}}

    plan = [s for s in sweep(cfg) if stages is None or s.stage in stages]
    todo = [s for s in plan if runs.done(key(s)) is None]
    if progress and len(todo) < len(plan):  # recorded runs are done from the start
        progress((len(plan) - len(todo)) * len(task.problems))
    if executor is None or executor.name == "local":
        results = (run_one(task, s, cfg, on_batch=progress) for s in todo)
        per_unit = 0
    else:
        results = executor.map(_remote_run_one, [(task_spec, s, cfg) for s in todo])
        per_unit = len(task.problems)
    rows = []
    for spec in plan:
        row = runs.done(key(spec))
        if row is None:
            row = next(results)
            runs.append(row)
            if log:
                log(f"{spec.run_name}: accuracy {row['accuracy']:.3f}, "
                    f"{row['throughput']:.1f} tok/s, {row['nfe_per_problem']} NFE/problem")
            if progress and per_unit:
                progress(per_unit)
        rows.append(row)
    if stages is None:
        write_csv(out / "results.csv", RESULTS_HEADER, rows)
    return rows


# -- pass@k of k samples per problem with correlated sources -----------------------------------
PASSK_EXTRA = ["cache", "temperature", "block_length", "threshold", "nfe", "seed"]


def passk_config(cfg: DLLMBenchConfig) -> DecodeConfig:
    """Threshold decoding at B = 32 at the pass@k temperature: positions are chosen by the top
    probability, then sampled, so arithmetic sampling's code points drive committed tokens only.
    The fastest cache of the run is used (the same for every sampler)."""
    cache = next((c for c in ("dual", "prefix", "none") if c in cfg.caches), "none")
    return DecodeConfig(cfg.gen_length, cfg.stage2_block, cfg.gen_length // cfg.stage2_block,
                        rule=Threshold(cfg.threshold), score=top_prob,
                        temperature=cfg.passk_temperature, cache=make_cache(cache))


def draw_passk(task: DLLMTask, sampler: str, cfg: DLLMBenchConfig, progress=None) -> dict:
    """k_max samples of each of the first ``passk_problems`` problems with ``sampler``'s source
    (one correlated group per problem): ``correct``/``tokens [P, 1, K]``, ``answers``
    ([P][1][K]), ``wall_s``, ``nfe``."""
    problems = task.problems[:cfg.passk_problems]
    K, dc = cfg.k_max, passk_config(cfg)
    per_call = max(1, 64 // K)  # problems per decode call (64 rows)
    model, t0 = NFECounter(task.model), time.perf_counter()
    correct, tokens, answers = [], [], []
    for c, i in enumerate(range(0, len(problems), per_call)):
        chunk = problems[i:i + per_call]
        ids, mask = task.encode(chunk)
        rows = torch.arange(len(chunk)).repeat_interleave(K)
        src = make_source(sampler, len(chunk) * K, K, generator=derive_generator(
            cfg.seed, "passk", task.name, sampler, c))
        out = decode(model, ids[rows], dc, src, attention_mask=None if mask is None
                     else mask[rows])
        texts = task.texts(out.tokens)
        probs = [p for p in chunk for _ in range(K)]
        correct.append(torch.tensor([task.correct(t, p) for t, p in
                                     zip(texts, probs, strict=True)]).view(-1, 1, K))
        tokens.append(lengths_with_eos(out.tokens, task.eos_id).cpu().view(-1, 1, K))
        answers += [[[task.answer(t) for t in texts[j * K:(j + 1) * K]]]
                    for j in range(len(chunk))]
        if progress:
            progress(len(chunk) * K)
    return {"correct": torch.cat(correct), "tokens": torch.cat(tokens), "answers": answers,
            "wall_s": time.perf_counter() - t0, "nfe": model.nfe}


def _remote_draw_passk(spec_task: TaskSpec, sampler: str, cfg: DLLMBenchConfig) -> dict:
    return draw_passk(build_task(spec_task), sampler, cfg)


def passk_table(task: DLLMTask, cfg: DLLMBenchConfig, out: Path, *, progress=None,
                log=None, executor=None, task_spec: TaskSpec | None = None
                ) -> tuple[list[dict], dict]:
    """k_max samples per problem for each of :data:`PASSK_SAMPLERS` (resuming per sampler from
    ``raw/``): writes ``passk.csv`` (bench passk's columns) and returns its rows and the samples
    saved against i.i.d. per sampler (mean over k >= 2, bootstrap SE)."""
    from parasample.bench.passk import PASSK_HEADER, passk_rows, summary_rows

    P, K, dc = min(cfg.passk_problems, len(task.problems)), cfg.k_max, passk_config(cfg)
    csv = ResumableCSV(out / "passk.csv", PASSK_HEADER + PASSK_EXTRA,
                       ["sampler", "k", "n_problems", "cache", "temperature", "seed", "device",
                        "dtype"])
    raw = out / "raw"
    raw.mkdir(exist_ok=True)

    def load(sampler):
        key = {"sampler": sampler, "k_max": K, "n_problems": P, "seed": cfg.seed,
               "config": repr(dc), "model": task.model_name, "task": task.name,
               "device": str(task.device), "dtype": str(task.dtype)}
        path = raw / f"passk-{sampler}.pt"
        saved = torch.load(path, weights_only=False) if path.exists() else None
        return (saved if saved is not None and saved["key"] == key else None), key, path

    todo = [s for s in PASSK_SAMPLERS if load(s)[0] is None]
    if progress and len(todo) < len(PASSK_SAMPLERS):  # drawn by an earlier run: done at start
        progress((len(PASSK_SAMPLERS) - len(todo)) * P * K)
    if executor is None or executor.name == "local":
        draws = (draw_passk(task, s, cfg, progress) for s in todo)
    else:
        draws = executor.map(_remote_draw_passk, [(task_spec, s, cfg) for s in todo])
    results, rows = {}, []
    for sampler in PASSK_SAMPLERS:
        saved, key, path = load(sampler)
        if saved is None:
            saved = {"key": key, **next(draws)}
            torch.save(saved, path)  # the driver owns the files (workers may be elsewhere)
            if progress and executor is not None and executor.name != "local":
                progress(P * K)
        results[sampler] = saved
        for r in passk_rows(task, sampler, saved, cfg.ks):
            r = {**r, "cache": dc.cache.name, "temperature": dc.temperature,
                 "block_length": dc.block_length, "threshold": cfg.threshold,
                 "nfe": saved["nfe"], "seed": cfg.seed}
            if not csv.done(r):
                csv.append(r)
            rows.append(r)
        if log:
            log(f"pass@k {sampler}: pass@1 {rows[-len(cfg.ks)]['pass_at_k']:.3f}, "
                f"pass@{K} {rows[-1]['pass_at_k']:.3f}")
    _, heads = summary_rows(task, results, cfg.ks, n_boot=500, seed=cfg.seed)
    return rows, heads


# -- tasks --------------------------------------------------------------------------------------
