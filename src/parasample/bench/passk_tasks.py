"""``parasample bench passk``: its workloads, one model on one task each (how to prompt it,
read its answers and check them); :class:`TaskSpec` builds one in a Ray worker."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

__all__ = ["PasskTask", "ar_chain_task", "qwen_preset", "short_tokens", "short_task",
           "smollm2_add_task", "smollm2_gsm8k_task", "TaskSpec", "build_task"]


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
    budget on GSM8K; problem counts sized to an hour per workload on 2 CPU cores in bfloat16
    (the command's preset dtype; the 1.5B's 320 products took 43 minutes on quiet cores)."""
    from parasample.tasks.gsm8k import PROTOCOL_TOKENS

    small = model == "qwen-coder-0.5b"
    return {"ar_problems": 0, "k_max": 16, "lm_temperature": 0.7,
            "samplers": ("iid", "arithmetic", "lattice", "stratified", "sobol"),
            "gsm8k_tokens": PROTOCOL_TOKENS, "add_problems": 320,
            "gsm8k_problems": 8 if small else 3}


def short_task(model: str = "smollm2", operands: tuple[int, int] | None = None):
    """The short-answer task of a chat model, sized so that its pass@1 at T = 0.7 sits inside
    0.2-0.7, with room for k samples to help: SmolLM2 gets single-digit additions (pass@1 about
    0.3), the Qwen-Coder 1.5B two-digit products with operands 11..99 (0.46), the 0.5B products
    with operands 11..40 (0.34; on 11..99 its pass@1 is 0.11). ``operands`` (lo, hi) replaces
    the model's range, same operation."""
    from parasample.tasks.arith import SimpleAddTask

    op = "+" if model == "smollm2" else "*"
    if operands is not None:
        return SimpleAddTask(operands[1], op, operands[0])
    if model == "smollm2":
        return SimpleAddTask()
    return SimpleAddTask(40 if model == "qwen-coder-0.5b" else 99, op, 11)


def short_tokens(model: str = "smollm2") -> int:
    """New tokens a reply to :func:`short_task`'s questions gets: 10 for additions, 12 for
    products (the Qwen models' replies are never cut at 12)."""
    return 10 if model == "smollm2" else 12


def smollm2_add_task(n: int, seed: int, temperature: float, model: str = "smollm2",
                     operands: tuple[int, int] | None = None, device=torch.device("cpu"),
                     dtype: torch.dtype = torch.float32) -> PasskTask:
    """A chat model (SmolLM2-135M-Instruct by default) on its short-answer task
    (:func:`short_task`; 10 new tokens, 12 for products)."""
    from parasample.targets.named import lm_label, load_lm

    lm, task = load_lm(model, dtype, device), short_task(model, operands)
    return PasskTask(task.name, lm_label(model), lm, task.problems(n, seed=seed),
                     lambda ps: lm.encode_prompts([p.prompt for p in ps]), lm.decode,
                     task.answer, lambda text, p: task.is_correct(text, p.answer),
                     short_tokens(model), 1, 64, temperature, lm.device, dtype)


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


class TaskSpec(NamedTuple):
    """What builds a :class:`PasskTask` (picklable: a Ray worker builds its own): ``kind`` is
    ``ar`` (args: n, batches, seed, model, temperature), ``add`` (n, seed, temperature, model,
    operands)
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
