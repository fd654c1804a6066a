"""GSM8K: loading from a local JSONL file, answer extraction and an exact checker."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from parasample.errors import InputError, MissingInputError

__all__ = ["GSM8K_ENV", "Problem", "default_gsm8k_path", "load_gsm8k", "extract_answer",
           "normalize_number", "is_correct", "format_prompt", "protocol_prompt",
           "PROTOCOL_TOKENS"]

#: Environment variable naming the GSM8K JSONL file to use by default.
GSM8K_ENV = "PARASAMPLE_GSM8K"
_REL = Path("shared") / "data" / "gsm8k"


@dataclass(frozen=True)
class Problem:
    """One question with its reference solution text and exact final answer (a number string)."""

    question: str
    solution: str
    answer: str


def default_gsm8k_path(split: str = "test") -> Path:
    """The default JSONL: ``$PARASAMPLE_GSM8K``, else ``../shared/data/gsm8k/{split}.jsonl``
    next to the working directory or next to the repository holding this package."""
    env = os.environ.get(GSM8K_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    for base in (Path.cwd().parent, Path.cwd(), repo.parent, repo):
        cand = base / _REL / f"{split}.jsonl"
        if cand.is_file():
            return cand
    raise MissingInputError(
        f"no GSM8K {split}.jsonl found; pass --data PATH or set {GSM8K_ENV}=PATH "
        f"(looked for ../{_REL}/{split}.jsonl)."
    )


_NUM = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str | None:
    """'$1,200.00' -> '1200'; '3.50' -> '3.5'; not a number -> None."""
    s = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = float(s)
    except ValueError:
        return None
    if value.is_integer():
        return str(int(value))
    return repr(value)


_MARKERS = (re.compile(r"####\s*"), re.compile(r"answer is:?\s*\**\s*", re.IGNORECASE),
            re.compile(r"\\boxed\{\s*"))
_CODE = re.compile(r"```.*?(```|$)", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The final answer of a solution text, by the first rule that finds a number:

    1. the number right after the last ``####`` (GSM8K's own form, and the protocol's);
    2. after the last "answer is" (instruct models' habit: "The final answer is $18.");
    3. inside the last ``\\boxed{...}`` (math-tuned models);
    4. the last number outside code blocks (coder models often show a Python program, whose
       last number is rarely the answer), else the last number at all.
    """
    for marker in _MARKERS:
        hits = list(marker.finditer(text))
        if hits:
            m = _NUM.match(text, hits[-1].end())
            if m:
                return normalize_number(m.group())
    for source in (_CODE.sub(" ", text), text):
        nums = _NUM.findall(source)
        if nums:
            return normalize_number(nums[-1])
    return None


def is_correct(prediction_text: str, answer: str) -> bool:
    """Exact match of the extracted final number against the reference answer."""
    pred = extract_answer(prediction_text)
    return pred is not None and pred == normalize_number(answer)


def format_prompt(question: str) -> str:
    """The user message sent to a small instruct model (SmolLM2) for a GSM8K question."""
    return (f"{question}\nSolve step by step, then give the final answer as a number on the "
            "last line in the form '#### <number>'.")


#: new tokens the protocol allows a chain of thought (GSM8K solutions of 1.5B instruct models
#: run 100-250 tokens; shorter budgets cut answers off)
PROTOCOL_TOKENS = 320


def protocol_prompt(question: str) -> str:
    """The GSM8K protocol for instruct models (sent through the chat template): reason in
    words, no code (coder models otherwise answer with a program they cannot run), the final
    number on the last line as ``#### <number>``; :func:`extract_answer` also reads the forms
    these models fall back to."""
    return (f"{question}\n\nSolve this step by step in plain words; do not write code. "
            "Then write the final answer as a single number on the last line, in the form "
            "'#### <number>'.")


def load_gsm8k(path: str | os.PathLike | None = None, *, limit: int | None = None,
               split: str = "test") -> list[Problem]:
    """Problems from a GSM8K JSONL file (``question`` and ``answer`` fields, ``#### N`` answers).

    Raises a ValueError naming the file and line for a line that is not valid JSON or lacks a
    field.
    """
    p = Path(path) if path is not None else default_gsm8k_path(split)
    if not p.is_file():
        raise MissingInputError(f"GSM8K file {str(p)!r} does not exist; pass --data PATH or set "
                                f"{GSM8K_ENV}.")
    problems: list[Problem] = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question, solution = row["question"], row["answer"]
            except json.JSONDecodeError as e:
                raise InputError(
                    f"{p}:{lineno}: not valid JSON ({e.msg}); each line must be one object like "
                    '{"question": ..., "answer": "... #### 42"}.') from None
            except (KeyError, TypeError):
                raise InputError(f"{p}:{lineno}: expected an object with 'question' and 'answer' "
                                 "fields.") from None
            answer = extract_answer(solution)
            if answer is None:
                raise InputError(f"{p}:{lineno}: the answer has no final number ('#### N').")
            problems.append(Problem(question, solution, answer))
            if limit is not None and len(problems) >= limit:
                break
    if not problems:
        raise InputError(f"{p} has no problems (the file is empty); pass a GSM8K JSONL file "
                         "with one {\"question\": ..., \"answer\": \"... #### N\"} per line.")
    return problems
