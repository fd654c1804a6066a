"""``parasample bench dllm``: the masked-diffusion decoding benchmark of seed 004.

Stage 1 (block sweep): B in {4, ..., 256}, steps = num_blocks, confidence-threshold decoding.
Stage 2 (step sweep): B = 32, S in {8, ..., 256}, fixed-steps decoding with LLaDA's schedule and
low-confidence remasking; stage2-S256 is the sequential reference (one token per step).

Throughput = answer tokens / wall seconds of the decode calls (model load excluded). Answer
tokens are the tokens before the first EOS: the prompt and the EOS padding are excluded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from parasample.ancestral import lengths_with_eos
from parasample.bench.csvlog import ResumableCSV, write_csv
from parasample.bench.timing import machine_fields
from parasample.diffusion import DecodeConfig, FixedSteps, Threshold, decode
from parasample.targets import NFECounter

__all__ = ["DLLMBenchConfig", "RunSpec", "DLLMTask", "sweep", "run_benchmark", "RESULTS_HEADER",
           "RUNS_HEADER"]

RESULTS_HEADER = ["run_name", "block_length", "steps", "accuracy", "throughput"]
RUNS_HEADER = RESULTS_HEADER + [
    "stage", "method", "model", "task", "n_problems", "batch_size", "seed", "gen_length",
    "threshold", "nfe", "nfe_per_problem", "tokens_per_step", "answer_tokens", "wall_s",
    "forward_s", "forward_share", "device", "torch_threads"]
_KEY = ["run_name", "model", "task", "n_problems", "batch_size", "seed", "gen_length",
        "threshold"]

STAGE1_BLOCKS = (4, 8, 16, 32, 64, 128, 256)
STAGE2_STEPS = (8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class DLLMBenchConfig:
    """Sweep settings. ``gen_length`` and ``threshold`` are fixed by the guide (256, 0.9)."""

    n_problems: int = 64
    batch_size: int = 16
    gen_length: int = 256
    threshold: float = 0.9
    stage2_block: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.n_problems < 1 or self.batch_size < 1:
            raise ValueError(f"n_problems={self.n_problems} and batch_size={self.batch_size} "
                             "must be >= 1.")
        Threshold(self.threshold)  # validates the range with its own message


class RunSpec(NamedTuple):
    """One configuration of the sweep."""

    run_name: str
    stage: int
    method: str
    config: DecodeConfig


def sweep(cfg: DLLMBenchConfig) -> list[RunSpec]:
    """The guide's 13 configurations (stage 1 then stage 2)."""
    G = cfg.gen_length
    runs = [RunSpec(f"stage1-B{B}", 1, f"threshold{cfg.threshold}",
                    DecodeConfig(G, B, G // B, rule=Threshold(cfg.threshold)))
            for B in STAGE1_BLOCKS if G % B == 0]
    nb = G // cfg.stage2_block
    runs += [RunSpec(f"stage2-S{S}", 2, "fixed-steps-low-confidence",
                     DecodeConfig(G, cfg.stage2_block, S, rule=FixedSteps()))
             for S in STAGE2_STEPS if S % nb == 0]
    return runs


class DLLMTask(NamedTuple):
    """What the harness needs of a model + task pair.

    model: a MaskedModel; problems: list of problems; encode: problems -> prompt ``[b, P]``;
    texts: answer tokens ``[b, G]`` -> texts; correct: (text, problem) -> bool; eos_id.
    """

    name: str
    model_name: str
    model: object
    problems: list
    encode: Callable
    texts: Callable
    correct: Callable
    eos_id: int | None


def answer_tokens(tokens: torch.Tensor, eos_id: int | None) -> int:
    """Tokens before each row's first EOS, summed (EOS and padding excluded)."""
    n = lengths_with_eos(tokens, eos_id)
    if eos_id is not None:
        n = n - (tokens == eos_id).any(1).long()  # the EOS itself is not an answer token
    return int(n.sum())


def run_one(task: DLLMTask, spec: RunSpec, cfg: DLLMBenchConfig, on_batch=None) -> dict:
    """Decode every problem with one configuration; return its CSV row."""
    model = NFECounter(task.model)
    correct = tokens = 0
    wall = tokens_per_step_sum = 0.0
    n_batches = 0
    for i in range(0, len(task.problems), cfg.batch_size):
        batch = task.problems[i:i + cfg.batch_size]
        prompt = task.encode(batch)
        t0 = time.perf_counter()
        out = decode(model, prompt, spec.config)
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
        "stage": spec.stage, "method": spec.method, "model": task.model_name,
        "task": task.name, "n_problems": n, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "gen_length": cfg.gen_length, "threshold": cfg.threshold, "nfe": model.nfe,
        "nfe_per_problem": round(model.nfe * cfg.batch_size / n, 2),
        "tokens_per_step": round(tokens_per_step_sum / n_batches, 3),
        "answer_tokens": tokens, "wall_s": round(wall, 3),
        "forward_s": round(model.forward_s, 3),
        "forward_share": round(model.forward_s / wall, 4) if wall > 0 else 0.0,
        **machine_fields(),
    }


def run_benchmark(task: DLLMTask, cfg: DLLMBenchConfig, out: Path, *, progress=None,
                  log=None) -> list[dict]:
    """Run (or resume) the sweep, writing ``runs.csv`` row by row, then ``results.csv``.

    Returns the rows of this sweep, in sweep order. ``progress(advance)`` is called per decoded
    batch (problems), ``log(msg)`` per finished run.
    """
    out.mkdir(parents=True, exist_ok=True)
    runs = ResumableCSV(out / "runs.csv", RUNS_HEADER, _KEY)
    rows = []
    for spec in sweep(cfg):
        key = {"run_name": spec.run_name, "model": task.model_name, "task": task.name,
               "n_problems": len(task.problems), **{k: v for k, v in asdict(cfg).items()
                                                    if k in _KEY}}
        row = runs.done(key)
        if row is None:
            row = run_one(task, spec, cfg, on_batch=progress)
            runs.append(row)
            if log:
                log(f"{spec.run_name}: accuracy {row['accuracy']:.3f}, "
                    f"{row['throughput']:.1f} tok/s, {row['nfe_per_problem']} NFE/problem")
        elif progress:
            progress(len(task.problems))
        rows.append(row)
    write_csv(out / "results.csv", RESULTS_HEADER, rows)
    return rows


def arith_task(model: str, n_problems: int, seed: int, n_ops: int = 4) -> DLLMTask:
    """The shipped (or a given) masked-diffusion checkpoint on held-out arithmetic chains."""
    from parasample.models import load_dllm
    from parasample.models.data import encode_prompts
    from parasample.tasks.arith import ArithChainTask, CharTokenizer

    lm = load_dllm(model)
    tok = CharTokenizer()
    # held-out problems of the task the checkpoint was trained on (its value range)
    max_value = lm.train_config.get("max_value", 99)
    task = ArithChainTask(n_ops=n_ops, max_operand=lm.train_config.get("max_operand", 9),
                          max_value=max_value)
    return DLLMTask(
        name=f"arith{n_ops}-v{max_value}", model_name=Path(model).stem, model=lm,
        problems=task.problems(n_problems, split="test", seed=seed),
        encode=lambda ps: encode_prompts([p.prompt for p in ps], tok),
        texts=lambda toks: [tok.decode(r) for r in toks],
        correct=lambda text, p: task.is_correct(text, p.answer),
        eos_id=tok.eos_id)


def gsm8k_task(model: str, n_problems: int, data: str | None, mask_id: int | None) -> DLLMTask:
    """A real masked diffusion LM (local HF directory) on GSM8K test problems (batch 1)."""
    from parasample.targets.hf import load_masked_lm
    from parasample.tasks.gsm8k import format_prompt, is_correct, load_gsm8k

    lm = load_masked_lm(model, mask_id)
    problems = load_gsm8k(data, limit=n_problems)

    def encode(ps):
        if len(ps) != 1:
            raise ValueError("GSM8K prompts have different lengths and the decode loop has no "
                             "attention mask: use --batch-size 1 with --task gsm8k.")
        return lm.encode_prompt(format_prompt(ps[0].question))

    return DLLMTask(name="gsm8k", model_name=Path(model).name, model=lm, problems=problems,
                    encode=encode, texts=lm.decode,
                    correct=lambda text, p: is_correct(text, p.answer), eos_id=lm.eos_id)
