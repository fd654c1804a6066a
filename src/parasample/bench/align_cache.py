"""``parasample bench align`` part (c): QUEST on a chat LM (SmolLM2-135M-Instruct by default)
with the kept prefix
prefilled with the prompt in each move (``quest-cached``) and attended to in a cache kept across
moves (``quest-kept``) against the token-by-token move, from the same starting sequences and
uniforms (see :mod:`parasample.bench.align`). Wallclock includes ``quest.init`` (the kept
cache's one prefill of prompt + y per chain)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV
from parasample.bench.timing import machine_fields
from parasample.errors import InputError, require_at_least
from parasample.mcmc import quest
from parasample.noise import IIDSource, derive_generator

__all__ = ["CacheBenchConfig", "CACHE_HEADER", "MODES", "quest_cache_rows"]

CACHE_HEADER = ["sampler", "chains", "length", "moves", "calls_per_move", "wall_per_move_s",
                "speedup_vs_uncached", "identical_to_uncached", "accept_rate", "mean_reward",
                "beta", "seed", "model", "device", "dtype", "torch_threads"]
PROMPT = "Tell me a fun fact about the sea, with a number in it."


@dataclass(frozen=True)
class CacheBenchConfig:
    """QUEST moves on ``model`` (a name :func:`parasample.targets.named.load_lm` takes) with
    and without the prefix cache.

    chains: batch sizes to run (one row pair each); length: tokens per sequence (the
    sampler's max_new_tokens); moves: QUEST moves per chain; beta: the tilt of the digit reward
    r(y) = number of tokens containing a digit.
    """

    chains: tuple[int, ...] = (1, 8)
    length: int = 32
    moves: int = 12
    beta: float = 0.5
    seed: int = 0
    model: str = "smollm2"

    def __post_init__(self):
        if not self.chains or any(c < 1 for c in self.chains):
            raise InputError(f"chains={self.chains}: give batch sizes >= 1.")
        require_at_least(self, 1, "length", "moves")
        if not self.beta > 0:
            raise InputError(f"beta={self.beta} must be > 0 (pi ~ p exp(r / beta)).")

    @classmethod
    def quick(cls, **kw) -> CacheBenchConfig:
        return cls(**{"chains": (2,), "length": 8, "moves": 3, **kw})


#: part (c)'s rows: the sampler's name -> how QUEST keeps its prefix
MODES = {"quest": "token-by-token", "quest-cached": "prefilled", "quest-kept": "kept"}


def _chain(lm, y0, ids, mask, reward, cfg, sampling, C, mode):
    """``moves`` QUEST moves from ``y0``: (states after each move, calls, wall s, accepted)."""
    src = IIDSource(C, generator=derive_generator(cfg.seed, "align", "cache", C, "moves"))
    t0 = time.perf_counter()
    st = quest.init(y0, reward, lm, ids, mask, sampling, keep_cache=mode == "kept")
    states, calls, wall, acc = [], 1 if mode == "kept" else 0, time.perf_counter() - t0, 0.0
    for _ in range(cfg.moves):
        u = src.uniform(cfg.length + 2)
        t0 = time.perf_counter()
        st, info = quest.step(u, st, lm, ids, mask, reward, cfg.beta, sampling,
                              cached=mode == "prefilled")
        wall += time.perf_counter() - t0
        calls += info.nfe
        acc += float(info.accepted.double().mean())
        states.append(st.y.clone())
    return states, calls, wall, acc / cfg.moves, float(st.reward.mean())


def quest_cache_rows(cfg: CacheBenchConfig, out, progress=None, device="cpu",
                     dtype=torch.float32) -> list[dict]:
    """Run (or resume) the cache comparison; writes ``quest_cache.csv`` and returns its rows."""
    from parasample.bench.mcmc_lm import DigitReward
    from parasample.targets.named import lm_label, load_lm

    csv = ResumableCSV(out / "quest_cache.csv", CACHE_HEADER, ["model", "sampler", "chains",
                                                              "length", "seed"])
    lm, rows = None, []
    for C in cfg.chains:
        key = {"chains": C, "length": cfg.length, "seed": cfg.seed, "model": lm_label(cfg.model)}
        done = [csv.done({**key, "sampler": s}) for s in MODES]
        if any(d is None for d in done):
            if lm is None:
                lm = load_lm(cfg.model, dtype, device)
                reward = DigitReward(lm.tokenizer, lm.vocab_size)
                sampling = SamplingConfig(max_new_tokens=cfg.length)
            ids, mask = lm.encode_prompts([PROMPT] * C)
            start = IIDSource(C, generator=derive_generator(cfg.seed, "align", "cache", C))
            y0 = generate(lm, ids, mask, start, sampling).tokens  # exact draws from p_LM
            y0 = torch.nn.functional.pad(y0, (0, cfg.length - y0.shape[1]), value=lm.eos_id)
            runs = {m: _chain(lm, y0, ids, mask, reward, cfg, sampling, C, m)
                    for m in MODES.values()}
            ref = runs["token-by-token"]
            base = {**key, "moves": cfg.moves, "beta": cfg.beta, **machine_fields(lm.device, dtype)}
            unit = []
            for name, mode in MODES.items():
                states, calls, wall, acc, r = runs[mode]
                same = sum(torch.equal(a, b) for a, b in zip(ref[0], states, strict=True))
                unit.append({**base, "sampler": name,
                             "calls_per_move": round(calls / cfg.moves, 2),
                             "wall_per_move_s": round(wall / cfg.moves, 4),
                             "speedup_vs_uncached": round(ref[2] / wall, 3),
                             "identical_to_uncached": "" if mode == "token-by-token"
                             else round(same / cfg.moves, 4),
                             "accept_rate": round(acc, 4), "mean_reward": round(r, 3)})
            for row in unit:  # the rows together: a unit is on disk whole or not at all
                csv.append(row)
            done = [csv.done({**key, "sampler": s}) for s in MODES]
        rows += done
        if progress:
            progress(f"quest cache, {C} chain(s)")
    return rows
