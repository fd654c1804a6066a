"""The synthetic arithmetic-chain task and the character-level tokenizer of the project's models.

A problem chains ``n_ops`` operations on single-letter variables::

    prompt:    a=7;b=a+5;c=b*3;d=c-4;d?
    solution:  b=7+5=12;c=12*3=36;d=36-4=32;#32

The solution is a worked trace (substitute, compute, carry on) ending in ``#<answer>``. Values
stay in [0, max_value] so every step is one of a bounded set of arithmetic facts; ``n_ops`` (the
chain length) and ``max_value`` (the size of the fact table) are the difficulty knobs. With
``restate=True`` each step first restates its rule (``c=b*3=12*3=36``): the same facts with more
copying, so that long chains fill a long answer window (``bench dllm``'s default task).
Problems are split into train and held-out test by a stable hash of the prompt, so no test
prompt is ever a training prompt, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass

import torch

from parasample.errors import InputError

__all__ = ["ArithProblem", "ArithChainTask", "CharTokenizer", "PAD", "BOS", "EOS", "MASK",
           "extract_arith_answer", "SimpleAddTask", "last_integer"]

PAD, BOS, EOS, MASK = "<pad>", "<bos>", "<eos>", "<mask>"
MAX_VALUE = 99  # the largest value the tokenizer's task format is designed for
_VARS = string.ascii_lowercase


@dataclass(frozen=True)
class ArithProblem:
    prompt: str
    solution: str
    answer: str


def extract_arith_answer(text: str) -> str | None:
    """The digits after the last ``#`` of a solution, or None."""
    if "#" not in text:
        return None
    tail = text.rsplit("#", 1)[1]
    digits = ""
    for ch in tail:
        if not ch.isdigit():
            break
        digits += ch
    return digits or None


@dataclass(frozen=True)
class ArithChainTask:
    """Seeded generator of arithmetic-chain problems.

    Attributes:
        n_ops: chained operations per problem (difficulty), 1..25.
        max_operand: operands are drawn from 1..max_operand.
        max_value: every intermediate value lies in 0..max_value.
        restate: each step of the trace restates its rule before substituting the value.
    """

    n_ops: int = 4
    max_operand: int = 9
    max_value: int = MAX_VALUE
    restate: bool = False

    def __post_init__(self):
        if not 1 <= self.n_ops <= len(_VARS) - 1:
            raise InputError(f"n_ops={self.n_ops} must be in 1..{len(_VARS) - 1}.")
        if not 2 <= self.max_value <= MAX_VALUE:
            raise InputError(f"max_value={self.max_value} must be in 2..{MAX_VALUE}.")
        if not 1 <= self.max_operand <= (self.max_value + 1) // 2:
            # beyond that, some value would admit no operation that stays in range
            raise InputError(f"max_operand={self.max_operand} must be in 1.."
                             f"{(self.max_value + 1) // 2} for max_value={self.max_value}.")

    def sample(self, generator: torch.Generator) -> ArithProblem:
        """One problem (train or test: use :meth:`problems` for a split)."""
        def randint(lo, hi):  # inclusive
            return int(torch.randint(lo, hi + 1, (1,), generator=generator))

        value = randint(0, self.max_value // 4 if self.max_value >= 40 else self.max_value)
        prompt, trace = [f"a={value}"], []
        for i in range(1, self.n_ops + 1):
            operand = randint(1, self.max_operand)
            ops = [op for op, res in (("+", value + operand), ("-", value - operand),
                                      ("*", value * operand)) if 0 <= res <= self.max_value]
            op = ops[randint(0, len(ops) - 1)]
            new = {"+": value + operand, "-": value - operand, "*": value * operand}[op]
            prev, var = _VARS[i - 1], _VARS[i]
            prompt.append(f"{var}={prev}{op}{operand}")
            rule = f"{prev}{op}{operand}=" if self.restate else ""
            trace.append(f"{var}={rule}{value}{op}{operand}={new}")
            value = new
        return ArithProblem(";".join(prompt) + f";{_VARS[self.n_ops]}?",
                            ";".join(trace) + f";#{value}", str(value))

    @staticmethod
    def is_test(prompt: str) -> bool:
        """Held-out split: one prompt in eight, by a stable cryptographic hash of the prompt.

        (Not CRC32: it is linear over GF(2), so its low bits select structured prompt subsets.)
        """
        return hashlib.blake2b(prompt.encode(), digest_size=8).digest()[0] % 8 == 0

    def _steps(self, value: int) -> list[tuple[str, int, int]]:
        """(op, operand, result) of every operation allowed after ``value``."""
        return [(op, a, res) for a in range(1, self.max_operand + 1)
                for op, res in (("+", value + a), ("-", value - a), ("*", value * a))
                if 0 <= res <= self.max_value]

    def count(self, split: str, limit: int = 2_000_000) -> int | None:
        """Distinct problems of ``split``: exact when the task has at most ``limit`` problems in
        all (they are enumerated and hashed), None when it has more (practically unbounded)."""
        start_hi = self.max_value // 4 if self.max_value >= 40 else self.max_value
        ways = {v: 1 for v in range(start_hi + 1)}  # chains so far ending at each value
        for _ in range(self.n_ops):
            nxt: dict[int, int] = {}
            for v, w in ways.items():
                for _op, _a, res in self._steps(v):
                    nxt[res] = nxt.get(res, 0) + w
            ways = nxt
        if sum(ways.values()) > limit:
            return None
        want_test, n = split == "test", 0

        def walk(value: int, i: int, prompt: str) -> None:
            nonlocal n
            if i > self.n_ops:
                n += self.is_test(prompt + f";{_VARS[self.n_ops]}?") == want_test
                return
            for op, a, res in self._steps(value):
                walk(res, i + 1, prompt + f";{_VARS[i]}={_VARS[i - 1]}{op}{a}")

        for v in range(start_hi + 1):
            walk(v, 1, f"a={v}")
        return n

    def problems(self, n: int, *, split: str, seed: int) -> list[ArithProblem]:
        """``n`` distinct problems of the ``train`` or ``test`` split, deterministic in ``seed``.

        Asking for more problems than the split holds is refused up front with the maximum.
        """
        if split not in ("train", "test"):
            raise InputError(f"split={split!r}; use 'train' or 'test'.")
        if n > 1000:  # only large requests can exceed a split; counting takes about a second
            have = self.count(split)
            if have is not None and n > have:
                raise InputError(f"only {have} distinct {split} problems exist with n_ops="
                                 f"{self.n_ops} and values <= {self.max_value}; ask for at most "
                                 f"{have} (e.g. -n {have}).")
        g = torch.Generator().manual_seed(seed)
        want_test, seen, out = split == "test", set(), []
        for _ in range(200 * n + 1000):
            p = self.sample(g)
            if self.is_test(p.prompt) == want_test and p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p)
                if len(out) == n:
                    return out
        raise InputError(f"drew only {len(out)} distinct {split} problems with n_ops={self.n_ops}"
                         f" in {200 * n + 1000} tries (some are rare); ask for fewer.")

    @staticmethod
    def is_correct(text: str, answer: str) -> bool:
        return extract_arith_answer(text) == answer


def last_integer(text: str) -> str | None:
    """The last integer in ``text`` ('-12' kept signed), or None."""
    found = re.findall(r"-?\d+", text)
    return str(int(found[-1])) if found else None


@dataclass(frozen=True)
class SimpleAddTask:
    """Two-number arithmetic asked of an instruct LM (``bench passk``: single-digit additions
    for SmolLM2, two-digit products for the Qwen models).

    The question is ``What is 3 + 5? Answer with the number only.`` (sent through the chat
    template); the answer is the last integer of the reply, so a short budget of new tokens
    suffices. Operands are drawn from ``min_operand``..``max_operand``; ``op`` is ``+`` or
    ``*``.
    """

    max_operand: int = 9
    op: str = "+"
    min_operand: int = 1

    def __post_init__(self):
        if not 1 <= self.min_operand <= self.max_operand:
            raise InputError(f"operands {self.min_operand}..{self.max_operand}: need 1 <= min "
                             "<= max.")
        if self.op not in ("+", "*"):
            raise InputError(f"op={self.op!r}: use + or *.")

    @property
    def name(self) -> str:
        digits = len(str(self.max_operand))
        name = f"{'add' if self.op == '+' else 'mul'}{digits}digit"
        # a narrower range than the digits allow is a different task: its rows must not merge
        return name if self.max_operand == 10 ** digits - 1 else \
            f"{name}-{self.min_operand}to{self.max_operand}"

    def problems(self, n: int, *, seed: int) -> list[ArithProblem]:
        """``n`` distinct problems, deterministic in ``seed``."""
        span = self.max_operand - self.min_operand + 1
        if n > span ** 2:
            raise InputError(f"only {span ** 2} distinct problems exist with operands "
                             f"{self.min_operand}..{self.max_operand}; ask for fewer.")
        g = torch.Generator().manual_seed(seed)
        seen, out = set(), []
        while len(out) < n:
            a, b = (int(v) for v in torch.randint(self.min_operand, self.max_operand + 1, (2,),
                                                  generator=g))
            if (a, b) not in seen:
                seen.add((a, b))
                value = str(a + b if self.op == "+" else a * b)
                out.append(ArithProblem(f"What is {a} {self.op} {b}? Answer with the number "
                                        "only.", value, value))
        return out

    @staticmethod
    def answer(text: str) -> str | None:
        return last_integer(text)

    @staticmethod
    def is_correct(text: str, answer: str) -> bool:
        return last_integer(text) == answer


class CharTokenizer:
    """Character-level tokenizer of the arithmetic-chain task (shared by the project's models).

    Ids 0..3 are the special tokens PAD, BOS, EOS, MASK (see :attr:`pad_id` etc.); then digits,
    lowercase letters and ``+-*=;?#``.
    """

    specials = (PAD, BOS, EOS, MASK)
    chars = string.digits + _VARS + "+-*=;?#"

    def __init__(self):
        self.itos = list(self.specials) + list(self.chars)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.mask_id = (self.stoi[s] for s in self.specials)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise InputError(f"character {e.args[0]!r} is not in the arithmetic-chain vocabulary "
                             f"({self.chars!r}).") from None

    def decode(self, ids) -> str:
        """Ids -> text, stopping at the first EOS and dropping other special tokens."""
        out = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == self.eos_id:
                break
            if i >= len(self.specials):
                out.append(self.itos[i])
        return "".join(out)
