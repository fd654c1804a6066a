"""``parasample bench dllm``: its workloads (a masked-diffusion model on a task: prompts,
answers, checker); :class:`TaskSpec` builds one in a Ray worker."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

__all__ = ["DLLMTask", "TaskSpec", "build_task", "arith_task", "gsm8k_task"]


class DLLMTask(NamedTuple):
    """What the harness needs of a model + task pair.

    model: a MaskedModel; problems: list of problems; encode: problems -> (prompt ids ``[b, P]``,
    attention mask ``[b, P]`` or None); texts: answer tokens ``[b, G]`` -> texts; correct:
    (text, problem) -> bool; answer: text -> the final answer (None if none); eos_id.
    """

    name: str
    model_name: str
    model: object
    problems: list
    encode: Callable
    texts: Callable
    correct: Callable
    answer: Callable
    eos_id: int | None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32


class TaskSpec(NamedTuple):
    """What builds a :class:`DLLMTask` (picklable: a Ray worker builds its own)."""

    kind: str  # "arith" (a shipped or .pt checkpoint's own task) or "gsm8k"
    model: str
    n_problems: int
    seed: int
    device: str = "cpu"
    dtype: str = "float32"
    data: str | None = None
    mask_id: int | None = None


@functools.lru_cache(maxsize=4)
def build_task(spec: TaskSpec) -> DLLMTask:
    """The task of ``spec`` (cached per process: a worker loads its model once)."""
    from parasample.devices import resolve_device, resolve_dtype

    dev = resolve_device(spec.device)
    dt = resolve_dtype(spec.dtype, dev)
    if spec.kind == "gsm8k":
        return gsm8k_task(spec.model, spec.n_problems, spec.data, spec.mask_id, dev, dt)
    return arith_task(spec.model, spec.n_problems, spec.seed, dev, dt)


def arith_task(model: str, n_problems: int, seed: int, device=torch.device("cpu"),
               dtype: torch.dtype = torch.float32) -> DLLMTask:
    """A masked-diffusion checkpoint on held-out arithmetic chains of the task it was trained on
    (its chain length, value range, trace format and prompt region)."""
    from parasample.models import load_dllm
    from parasample.models.data import PROMPT_LEN, encode_prompts
    from parasample.tasks.arith import ArithChainTask, CharTokenizer, extract_arith_answer

    lm = load_dllm(model, device, dtype)
    tok, tc = CharTokenizer(), lm.train_config
    task = ArithChainTask(n_ops=tc.get("max_ops", 4), max_operand=tc.get("max_operand", 9),
                          max_value=tc.get("max_value", 99), restate=tc.get("restate", False))
    prompt_len = tc.get("prompt_len", PROMPT_LEN)
    name = f"{'chain' if task.restate else 'arith'}{task.n_ops}-v{task.max_value}"
    return DLLMTask(
        name=name, model_name=Path(model).stem, model=lm,
        problems=task.problems(n_problems, split="test", seed=seed),
        encode=lambda ps: (encode_prompts([p.prompt for p in ps], tok, prompt_len), None),
        texts=lambda toks: [tok.decode(r) for r in toks],
        correct=lambda text, p: task.is_correct(text, p.answer),
        answer=extract_arith_answer, eos_id=tok.eos_id, device=lm.device, dtype=dtype)


def gsm8k_task(model: str, n_problems: int, data: str | None, mask_id: int | None,
               device=torch.device("cpu"), dtype: torch.dtype = torch.float32) -> DLLMTask:
    """A real masked diffusion LM (local HF directory) on GSM8K test problems; prompts of
    different lengths are left-padded with an attention mask."""
    from parasample.targets.hf_masked import load_masked_lm
    from parasample.tasks.gsm8k import extract_answer, format_prompt, is_correct, load_gsm8k

    problems = load_gsm8k(data, limit=n_problems)  # checked before the model loads
    lm = load_masked_lm(model, mask_id, dtype, device)
    return DLLMTask(name="gsm8k", model_name=Path(model).name, model=lm, problems=problems,
                    encode=lambda ps: lm.encode_prompts([format_prompt(p.question) for p in ps]),
                    texts=lm.decode, correct=lambda text, p: is_correct(text, p.answer),
                    answer=extract_answer, eos_id=lm.eos_id, device=lm.device, dtype=dtype)
