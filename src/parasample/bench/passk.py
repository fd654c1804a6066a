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
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import read_csv, write_csv
from parasample.bench.timing import machine_fields
from parasample.errors import InputError
from parasample.metrics.passk import (
    batch_values,
    iid_curve,
    mean_and_se,
    per_problem_passk,
    samples_saved_bootstrap,
    sampling_se,
)
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
SUMMARY_HEADER = ["sampler", "model", "task", "k", "pass_at_k", "iid_pass_at_k",
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
        for name in ("ar_batches", "gsm8k_tokens", "throughput_batch", "throughput_tokens",
                     "throughput_reps", "n_boot"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)} must be >= 1.")
        for name in ("ar_problems", "add_problems", "gsm8k_problems"):
            if getattr(self, name) < 0:
                raise InputError(f"{name}={getattr(self, name)} must be >= 0 (0 skips the task).")
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


class PasskTask(NamedTuple):
    """One model on one task: how to prompt it, read its answers and check them.

    ``encode(problems) -> (ids [P, L], attention_mask [P, L])``; ``texts(tokens [B, T])``;
    ``answer(text)`` is the extracted final answer (None if there is none; used for distinct
    answers); ``correct(text, problem)``; ``batches`` is R; ``rows_per_call`` bounds the rows
    of one generate call; ``temperature`` is the task's, the same for every sampler.
    """

    name: str
    model_name: str
    model: Any
    problems: list
    encode: Callable
    texts: Callable
    answer: Callable
    correct: Callable
    max_new_tokens: int
    batches: int
    rows_per_call: int
    temperature: float
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    #: None: parasample's engine; else an object with the engine's ``generate`` contract
    #: (:class:`parasample.integrations.vllm.VLLMEngine`)
    engine: Any = None


def ar_chain_task(n: int, batches: int, seed: int, model: str = "ar-arith",
                  temperature: float = 1.0, device=torch.device("cpu"),
                  dtype: torch.dtype = torch.float32) -> PasskTask:
    """The shipped small AR LM on held-out arithmetic chains of the task it was trained on."""
    from parasample.models import load_ar
    from parasample.models.data import encode_prompts
    from parasample.tasks.arith import ArithChainTask, CharTokenizer, extract_arith_answer

    lm, tok = load_ar(model, True, device, dtype), CharTokenizer()
    tc = lm.train_config
    task = ArithChainTask(n_ops=tc.get("n_ops", 4), max_operand=tc.get("max_operand", 9),
                          max_value=tc.get("max_value", 20))

    def encode(ps):
        ids = encode_prompts([p.prompt for p in ps], tok)
        return ids, torch.ones_like(ids)

    return PasskTask(f"chain{task.n_ops}-v{task.max_value}", Path(model).stem, lm,
                     task.problems(n, split="test", seed=seed), encode,
                     lambda toks: [tok.decode(r) for r in toks], extract_arith_answer,
                     lambda text, p: task.is_correct(text, p.answer),
                     tc.get("gen_length", 48), batches, 2048, temperature, lm.device, dtype)


def qwen_preset(model: str) -> dict:
    """``bench passk --model qwen-coder-*``'s defaults: no small-AR part, k up to 16, the
    samplers of the real-model study, sampling temperature 0.7, the instruct protocol's token
    budget on GSM8K; problem counts sized to an hour per workload on 2 CPU cores."""
    from parasample.tasks.gsm8k import PROTOCOL_TOKENS

    small = model == "qwen-coder-0.5b"
    return {"ar_problems": 0, "k_max": 16, "lm_temperature": 0.7,
            "samplers": ("iid", "arithmetic", "lattice", "stratified", "sobol"),
            "gsm8k_tokens": PROTOCOL_TOKENS, "add_problems": 128 if small else 64,
            "gsm8k_problems": 8 if small else 3}


def short_task(model: str = "smollm2"):
    """The short-answer task of a chat model, sized so that its pass@1 sits inside (0, 1) with
    room for k samples to help: SmolLM2 gets single-digit additions (pass@1 about 0.3 at T =
    0.7), the Qwen-Coder models two-digit products."""
    from parasample.tasks.arith import SimpleAddTask

    return SimpleAddTask() if model == "smollm2" else SimpleAddTask(99, "*", 11)


def smollm2_add_task(n: int, seed: int, temperature: float, model: str = "smollm2",
                     device=torch.device("cpu"), dtype: torch.dtype = torch.float32
                     ) -> PasskTask:
    """A chat model (SmolLM2-135M-Instruct by default) on its short-answer task
    (:func:`short_task`; 10 new tokens, 12 for products)."""
    from parasample.targets.named import lm_label, load_lm

    lm, task = load_lm(model, dtype, device), short_task(model)
    return PasskTask(task.name, lm_label(model), lm, task.problems(n, seed=seed),
                     lambda ps: lm.encode_prompts([p.prompt for p in ps]), lm.decode,
                     task.answer, lambda text, p: task.is_correct(text, p.answer),
                     10 if task.op == "+" else 12, 1, 64, temperature, lm.device, dtype)


def smollm2_gsm8k_task(n: int, max_new_tokens: int, temperature: float,
                       data: str | None = None, model: str = "smollm2",
                       device=torch.device("cpu"), dtype: torch.dtype = torch.float32
                       ) -> PasskTask:
    """A chat model on GSM8K test problems through its chat template: SmolLM2 with the short
    step-by-step prompt, every other model with the instruct protocol
    (:func:`~parasample.tasks.gsm8k.protocol_prompt`)."""
    from parasample.targets.named import lm_label, load_lm
    from parasample.tasks.gsm8k import (
        extract_answer,
        format_prompt,
        is_correct,
        load_gsm8k,
        protocol_prompt,
    )

    lm = load_lm(model, dtype, device)
    prompt = format_prompt if model == "smollm2" else protocol_prompt
    return PasskTask("gsm8k", lm_label(model), lm, load_gsm8k(data, limit=n) if n else [],
                     lambda ps: lm.encode_prompts([prompt(p.question) for p in ps]),
                     lm.decode, extract_answer, lambda text, p: is_correct(text, p.answer),
                     max_new_tokens, 1, 64, temperature, lm.device, dtype)


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
    if executor is None or executor.name == "local":
        draws = (draw_chunk(task, sampler, cfg, c) for c in todo)
    else:
        draws = executor.map(_remote_draw_chunk, [(task_spec, sampler, cfg, c) for c in todo])
    for c in todo:
        chunk = next(draws)
        saved["wall_s"] += chunk.pop("wall_s")
        saved["chunks"][c] = chunk
        tmp = path.with_suffix(".tmp")
        torch.save(saved, tmp)
        tmp.replace(path)  # atomic: an interruption loses at most the chunks in progress
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


class TaskSpec(NamedTuple):
    """What builds a :class:`PasskTask` (picklable: a Ray worker builds its own): ``kind`` is
    ``ar`` (args: n, batches, seed, model, temperature), ``add`` (n, seed, temperature, model)
    or ``gsm8k`` (n, max_new_tokens, temperature, data, model)."""

    kind: str
    args: tuple
    device: str = "cpu"
    dtype: str = "float32"


@functools.lru_cache(maxsize=8)
def build_task(spec: TaskSpec) -> PasskTask:
    """The task of ``spec`` (cached per process: a worker loads its model once)."""
    from parasample.devices import resolve_device, resolve_dtype

    dev = resolve_device(spec.device)
    dt = resolve_dtype(spec.dtype, dev)
    make = {"ar": ar_chain_task, "add": smollm2_add_task, "gsm8k": smollm2_gsm8k_task}
    return make[spec.kind](*spec.args, device=dev, dtype=dt)


def _device_fields(device, dtype) -> dict:
    f = machine_fields(device, dtype)
    return {"device": f["device"], "dtype": f["dtype"]}


def corr_passk(res: dict, ks: list[int], iid: bool) -> torch.Tensor:
    """Per-problem pass@k ``[P, len(ks)]`` of a sampler's draws: from the first k samples of
    each k_max-group, or from its own k-groups where it has them (``by_k``)."""
    if "by_k" not in res:
        return per_problem_passk(res["correct"], ks, iid=iid)
    return torch.stack([per_problem_passk(res["by_k"][k]["correct"], [k], iid=iid)[:, 0]
                        for k in ks], dim=1)


def passk_rows(task: PasskTask, sampler: str, res: dict, ks: list[int]) -> list[dict]:
    """``passk.csv`` rows of one sampler on one task (``wall_s``: the whole draw's seconds).

    ``pass_at_k``, ``stderr``: the first k samples of each batch (i.i.d.: the unbiased estimator
    over all samples), SE over problems. ``sampling_se``: the first-k estimator's SE from the
    sampling alone, given the problems (from the R batches; blank when R = 1). ``stride_*``: the
    same from the stride estimator, every aligned k-block of a batch (where the sampler's
    batches split into k-blocks; else the first k again). ``zero_variance``: the fraction of
    k-blocks all correct or all wrong (a GRPO group of k with no signal), SE over problems."""
    K = res["correct"].shape[-1]
    per = corr_passk(res, ks, iid=sampler == "iid")  # [P, len(ks)]
    rows = []
    for j, k in enumerate(ks):
        own = res.get("by_k", {}).get(k, res)  # the sampler's own k-groups, where it has them
        distinct = [len({a for a in batch[:k] if a is not None})
                    for prob in own["answers"] for batch in prob]
        mean, se = mean_and_se(per[:, j])
        blocks = "by_k" not in res and source_class(sampler).splits_into(K, k)
        prefix_v = batch_values(own["correct"], k, blocks=False)  # [P, R]
        stride_v = batch_values(own["correct"], k, blocks=blocks)  # [P, R]
        s_mean, s_se = mean_and_se(stride_v.mean(1))
        zv, zv_se = mean_and_se(batch_values(own["correct"], k, blocks, "constant").mean(1))
        mc, s_mc = sampling_se(prefix_v), sampling_se(stride_v)
        rows.append({"sampler": sampler, "model": task.model_name, "task": task.name, "k": k,
                     "pass_at_k": round(mean, 5), "stderr": round(se, 5),
                     "sampling_se": "" if mc is None else round(mc, 6),
                     "stride_pass_at_k": round(s_mean, 5), "stride_stderr": round(s_se, 5),
                     "stride_sampling_se": "" if s_mc is None else round(s_mc, 6),
                     "zero_variance": round(zv, 5), "zero_variance_se": round(zv_se, 5),
                     "distinct_answers": round(statistics.fmean(distinct), 4),
                     "n_problems": per.shape[0], "tokens": int(own["tokens"][:, :, :k].sum()),
                     "wall_s": round(res["wall_s"], 2),
                     **_device_fields(getattr(task, "device", None),
                                      getattr(task, "dtype", torch.float32))})
    return rows


def summary_rows(task: PasskTask, results: dict[str, dict], ks: list[int], n_boot: int,
                 seed: int) -> tuple[list[dict], dict[str, tuple]]:
    """Samples saved at matched pass@k for every correlated sampler against i.i.d., the i.i.d.
    curve read at every integer count (:func:`~parasample.metrics.passk.samples_saved`).

    Returns the ``summary.csv`` rows (a k left out names why in ``dropped``) and, per sampler,
    (mean saved over k >= 2, its SE, the ks left out of that mean).
    """
    K = results["iid"]["correct"].shape[-1]
    iid = iid_curve(results["iid"]["correct"], K)  # [P, K]
    rows, heads = [], {}
    for sampler, res in results.items():
        if sampler == "iid":
            continue
        corr = corr_passk(res, ks, iid=False)
        g = derive_generator(seed, "boot", task.name, sampler)
        saved, se, head, head_se, dropped = samples_saved_bootstrap(ks, iid, corr,
                                                                    n_boot=n_boot, generator=g)
        heads[sampler] = (head, head_se, sorted(k for k in dropped if k >= 2))
        for j, k in enumerate(ks):
            rows.append({"sampler": sampler, "model": task.model_name, "task": task.name, "k": k,
                         "pass_at_k": round(float(corr[:, j].mean()), 5),
                         "iid_pass_at_k": round(float(iid[:, k - 1].mean()), 5),
                         "samples_saved": "" if saved[j] is None else round(saved[j], 4),
                         "samples_saved_se": "" if se[j] is None else round(se[j], 4),
                         "dropped": dropped.get(k, "")})
    return rows, heads


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
