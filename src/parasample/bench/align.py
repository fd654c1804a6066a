"""``parasample bench align``: samplers of reward-tilted LM targets at equal compute.

Part (a), **the exact toy tilted LM** (bench mcmc part (b)'s: V = 4, L = 4, beta = 0.5, r =
count of token 1): the TVD
of each sampler's output histogram to the enumerated target against model calls (sequential
calls per output, the latency) and against wallclock, with the i.i.d. floor at each output's
effective sample size: importance resampling from n i.i.d. or arithmetic-correlated LM draws
(best-of-n's exact cousin), QUEST, multiple-try QUEST with i.i.d. / lattice / antithetic tries
(K in {4, 16}), token SMC, resample-move SMC (one QUEST move of every particle after each
resampling) and p-NCG; ``toy_summary.csv`` holds the calls and seconds each needs
to reach a TVD (the research log's question: what parallel calls are worth on this machine),
and how long correlated tries take to reach i.i.d. tries' final TVD, with SEs over seeds.

Part (b), **SmolLM2-135M-Instruct with a verifiable reward** on single-digit additions (r = 1
for the right number + 0.5 for the number only, beta = 0.5): the expected reward of importance
resampling, QUEST (cached), token SMC and resample-move SMC against model calls and wallclock,
with SMC's log-evidence and KL-to-base estimates; ``lm_summary.csv`` compares each sampler's
wallclock to the time QUEST takes to reach the same reward.

Part (c), **cached QUEST** on SmolLM2-135M-Instruct. QUEST's move keeps a prefix
y_<i of the current sequence and regenerates the suffix; the token-by-token implementation feeds
the kept prefix back one model call per token, the cached one prefills it with the prompt in one
call (:func:`parasample.mcmc.quest.step`, ``cached``). Both run here from the same starting
sequences and the same uniforms, so they must visit the same states: the CSV records the
fraction of moves whose every chain is token-identical, the model calls and the wall time per
move, and the speedup. Each (chains, seed) unit runs both variants and writes their two rows
together, so an interrupted run leaves no half unit and a rerun computes only the missing ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV
from parasample.bench.timing import machine_fields
from parasample.errors import InputError
from parasample.mcmc import quest
from parasample.noise import IIDSource, derive_generator, icdf_categorical

__all__ = ["LMAlignConfig", "LM_HEADER", "AdditionReward", "lm_rows", "lm_unit", "lm_summary",
           "CacheBenchConfig", "CACHE_HEADER", "quest_cache_rows", "ToyAlignConfig", "TOY_HEADER",
           "TOY_SUMMARY_HEADER", "toy_rows", "toy_unit", "toy_summary_rows",
           "correlated_tries_ratio"]

CACHE_HEADER = ["sampler", "chains", "length", "moves", "calls_per_move", "wall_per_move_s",
                "speedup_vs_uncached", "identical_to_uncached", "accept_rate", "mean_reward",
                "beta", "seed", "model", "device", "dtype", "torch_threads"]
PROMPT = "Tell me a fun fact about the sea, with a number in it."


@dataclass(frozen=True)
class CacheBenchConfig:
    """QUEST moves on SmolLM2 with and without the prefix cache.

    chains: batch sizes to run (one row pair each); length: tokens per sequence (the
    sampler's max_new_tokens); moves: QUEST moves per chain; beta: the tilt of the digit reward
    r(y) = number of tokens containing a digit.
    """

    chains: tuple[int, ...] = (1, 8)
    length: int = 32
    moves: int = 12
    beta: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if not self.chains or any(c < 1 for c in self.chains):
            raise InputError(f"chains={self.chains}: give batch sizes >= 1.")
        for name in ("length", "moves"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)} must be >= 1.")
        if not self.beta > 0:
            raise InputError(f"beta={self.beta} must be > 0 (pi ~ p exp(r / beta)).")

    @classmethod
    def quick(cls, **kw) -> CacheBenchConfig:
        return cls(**{"chains": (2,), "length": 8, "moves": 3, **kw})


def _chain(lm, y0, ids, mask, reward, cfg, sampling, C, cached):
    """``moves`` QUEST moves from ``y0``: (states after each move, calls, wall s, accepted)."""
    src = IIDSource(C, generator=derive_generator(cfg.seed, "align", "cache", C, "moves"))
    st = quest.init(y0, reward, lm, ids, mask, sampling)
    states, calls, wall, acc = [], 0, 0.0, 0.0
    for _ in range(cfg.moves):
        u = src.uniform(cfg.length + 2)
        t0 = time.perf_counter()
        st, info = quest.step(u, st, lm, ids, mask, reward, cfg.beta, sampling, cached=cached)
        wall += time.perf_counter() - t0
        calls += info.nfe
        acc += float(info.accepted.double().mean())
        states.append(st.y.clone())
    return states, calls, wall, acc / cfg.moves, float(st.reward.mean())


def quest_cache_rows(cfg: CacheBenchConfig, out, progress=None, device="cpu",
                     dtype=torch.float32) -> list[dict]:
    """Run (or resume) the cache comparison; writes ``quest_cache.csv`` and returns its rows."""
    from parasample.bench.mcmc_lm import DigitReward
    from parasample.targets.hf import smollm2

    csv = ResumableCSV(out / "quest_cache.csv", CACHE_HEADER, ["sampler", "chains", "length",
                                                              "seed"])
    lm, rows = None, []
    for C in cfg.chains:
        key = {"chains": C, "length": cfg.length, "seed": cfg.seed}
        plain, fast = (csv.done({**key, "sampler": s}) for s in ("quest", "quest-cached"))
        if plain is None or fast is None:
            if lm is None:
                lm = smollm2(dtype, device)
                reward = DigitReward(lm.tokenizer, lm.vocab_size)
                sampling = SamplingConfig(max_new_tokens=cfg.length)
            ids, mask = lm.encode_prompts([PROMPT] * C)
            start = IIDSource(C, generator=derive_generator(cfg.seed, "align", "cache", C))
            y0 = generate(lm, ids, mask, start, sampling).tokens  # exact draws from p_LM
            y0 = torch.nn.functional.pad(y0, (0, cfg.length - y0.shape[1]), value=lm.eos_id)
            runs = {c: _chain(lm, y0, ids, mask, reward, cfg, sampling, C, c)
                    for c in (False, True)}
            same = sum(torch.equal(a, b) for a, b in zip(runs[False][0], runs[True][0],
                                                          strict=True)) / cfg.moves
            base = {**key, "moves": cfg.moves, "beta": cfg.beta, "model": "smollm2",
                    **machine_fields(lm.device, dtype)}
            pair = []
            for cached, name in ((False, "quest"), (True, "quest-cached")):
                _, calls, wall, acc, r = runs[cached]
                pair.append({**base, "sampler": name,
                             "calls_per_move": round(calls / cfg.moves, 2),
                             "wall_per_move_s": round(wall / cfg.moves, 4),
                             "speedup_vs_uncached": round(runs[False][2] / wall, 3),
                             "identical_to_uncached": "" if not cached else round(same, 4),
                             "accept_rate": round(acc, 4), "mean_reward": round(r, 3)})
            for row in pair:  # both rows together: a unit is on disk whole or not at all
                csv.append(row)
            plain, fast = (csv.done({**key, "sampler": s}) for s in ("quest", "quest-cached"))
        rows += [plain, fast]
        if progress:
            progress(f"quest cache, {C} chain(s)")
    return rows


# -- part (a): the exact toy tilted LM --------------------------------------------------------

TOY_HEADER = ["sampler", "tries_source", "size", "budget", "call_unit", "calls", "lm_forwards",
              "gradient_evals", "token_evals", "wall_s", "tvd", "floor_tvd", "effective_samples",
              "floor_at_effective", "seed", "device", "dtype", "torch_threads"]
TOY_SUMMARY_HEADER = ["sampler", "tries_source", "size", "call_unit", "target_tvd", "seeds",
                      "reached", "calls_to_target", "calls_to_target_se", "seconds_to_target",
                      "seconds_to_target_se", "seconds_per_call", "final_tvd", "final_tvd_se"]


@dataclass(frozen=True)
class ToyAlignConfig:
    """Part (a). ``samples`` outputs per sampler (chains, independent resampling sets, or SMC
    particles in systems of ``smc_particles``); ``moves`` the MCMC budgets recorded; ``tries``
    mt-QUEST's K; ``ir_sizes`` the LM draws per output of importance resampling;
    ``target_tvd`` the level the summary's calls and seconds are measured to (None: 1.5 x the
    i.i.d. floor of ``samples`` draws)."""

    samples: int = 4096
    moves: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 20, 30, 50, 80)
    tries: tuple[int, ...] = (4, 16)
    try_sources: tuple[str, ...] = ("iid", "lattice", "antithetic")
    ir_sizes: tuple[int, ...] = (4, 16, 64)
    smc_particles: tuple[int, ...] = (4, 16, 64)
    seeds: int = 3
    seed: int = 0
    beta: float = 0.5
    target_tvd: float | None = None

    def __post_init__(self):
        from parasample.mcmc import mtquest

        if self.samples < 1 or self.seeds < 1 or not self.moves or min(self.moves) < 1:
            raise InputError("samples, seeds and every moves budget must be >= 1.")
        if not self.beta > 0:
            raise InputError(f"beta={self.beta} must be > 0 (pi ~ p exp(r / beta)).")
        for k in self.tries:
            for src in self.try_sources:
                mtquest.check(k, src, "lambda1", self.beta)
        if self.target_tvd is not None and not 0 < self.target_tvd < 1:
            raise InputError(f"target TVD {self.target_tvd} must lie in (0, 1).")

    @classmethod
    def quick(cls, **kw) -> ToyAlignConfig:
        return cls(**{"samples": 256, "moves": (1, 2), "tries": (4,), "ir_sizes": (4,),
                      "smc_particles": (4,), "seeds": 2, **kw})

    def units(self) -> list[tuple[str, str, int]]:
        """(sampler, tries source, size) of every curve."""
        return ([("importance-resampling", s, n) for n in self.ir_sizes
                 for s in ("iid", "arithmetic")] + [("quest", "", 1)]
                + [("mt-quest", s, k) for k in self.tries for s in self.try_sources]
                + [("smc", "", n) for n in self.smc_particles]
                + [("resample-move-smc", "", n) for n in self.smc_particles]
                + [("pncg", "", 1)])


def _toy_target(seed: int = 0):
    """bench mcmc part (b)'s toy LM (fixed-length sequences: every sampler here applies)."""
    from parasample.targets import ToyARLM, count_reward

    base = ToyARLM(4, 4, generator=torch.Generator().manual_seed(seed), sharpness=1.5)
    return base, count_reward(1)


def toy_unit(cfg: ToyAlignConfig, sampler: str, source: str, size: int, seed: int
             ) -> list[dict]:
    """One curve: rows at each budget (MCMC: after each recorded move; one-shot samplers: one
    row). ``calls`` counts sequential calls per output in the sampler's ``call_unit``, which is
    not the same for all: ``lm-forward`` (one next-token forward of the LM over every row: the
    LM samplers) or ``gradient-eval`` (p-NCG: log pi and its gradient on whole sequences of
    the exact tilted target, no LM forward at all); ``lm_forwards`` and ``gradient_evals``
    split them, and ``token_evals`` counts token positions evaluated per output (an LM forward
    reads one new position per row, a gradient evaluation all L). Compare calls only within a
    unit; wallclock compares everything."""
    from parasample.mcmc import mtquest, pncg
    from parasample.metrics import empirical_distribution, iid_tvd_floor, tvd
    from parasample.noise import make_source
    from parasample.smc import resample_move as rm
    from parasample.smc import smc
    from parasample.targets import TiltedTarget, exact_distribution, state_index

    base, reward = _toy_target(cfg.seed)
    target = TiltedTarget(base, reward, cfg.beta)
    pi = exact_distribution(target)
    S, L, V, n = pi.shape[0], base.length, base.vocab_size, cfg.samples
    floor = iid_tvd_floor(pi, n)
    sampling = SamplingConfig(max_new_tokens=L)
    g = derive_generator(cfg.seed + seed, "align", "toy", sampler, source, size)
    ids = torch.zeros(n, 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    rows = []

    unit = "gradient-eval" if sampler == "pncg" else "lm-forward"

    def emit(budget, calls, evals, wall, emp, eff=n):
        rows.append({"sampler": sampler, "tries_source": source, "size": size,
                     "budget": budget, "call_unit": unit, "calls": calls,
                     "lm_forwards": calls if unit == "lm-forward" else 0,
                     "gradient_evals": calls if unit == "gradient-eval" else 0,
                     "token_evals": evals,
                     "wall_s": round(wall, 4), "tvd": round(float(tvd(emp, pi)), 6),
                     "floor_tvd": round(floor, 6), "effective_samples": round(eff),
                     "floor_at_effective": round(iid_tvd_floor(pi, max(1, round(eff))), 6),
                     "seed": seed, **machine_fields()})

    hist = lambda y: empirical_distribution(state_index(y, V)[None], S)[0]  # noqa: E731
    t0 = time.perf_counter()
    if sampler == "importance-resampling":  # n draws of the LM, one kept with p ~ exp(r / beta)
        src = make_source(source, n * size, size, generator=g)
        out = generate(base, ids.repeat_interleave(size, 0), mask.repeat_interleave(size, 0),
                       src, sampling)
        y = torch.nn.functional.pad(out.tokens, (0, L - out.tokens.shape[1]), value=0)
        w = torch.softmax(reward(y).double().view(n, size) / cfg.beta, -1)  # [n, size]
        pick = icdf_categorical(w, IIDSource(n, generator=g).uniform())
        emit(1, out.nfe, out.nfe * size, time.perf_counter() - t0,
             hist(y.view(n, size, L)[torch.arange(n), pick]))
    elif sampler in ("smc", "resample-move-smc"):  # + a QUEST move of each particle after a
        # resampling (Gilks & Berzuini's schedule)
        # the same number of particles as the other samplers' outputs, in systems of ``size``
        # (bench mcmc part (b)'s accounting); the weighted histogram combines the systems
        scfg = smc.SMCConfig(n_particles=size, beta=cfg.beta)
        R = max(1, n // size)
        tok = IIDSource(R * size, generator=g)
        res = IIDSource(R, generator=g)
        pids, pmask = ids[:R * size], mask[:R * size]
        st = smc.init(base, pids, pmask, scfg, reward)
        calls = 1
        for t in range(L):
            st, info = smc.step(tok.uniform(), res.uniform(smc.noise_dims(scfg)), st, base,
                                reward, scfg, sampling, advance=t < L - 1)
            calls += info.nfe
            u_move = tok.uniform(rm.noise_dims(t + 1))  # drawn every step: the same streams
            if sampler == "resample-move-smc" and bool(info.resampled.any()):
                st, moved = rm.rejuvenate(u_move, st, base, pids,
                                          pmask, reward, cfg.beta, sampling, advance=t < L - 1)
                calls += moved.nfe
        sys_w = torch.softmax(smc.final_log_evidence(st), 0)  # independent systems by Z_r
        w = (torch.softmax(st.logw, -1) * sys_w[:, None]).reshape(-1)
        emp = torch.zeros(S, dtype=torch.float64).scatter_add_(
            0, state_index(st.ar.tokens, V), w)
        emit(1, calls, calls * size, time.perf_counter() - t0, emp,
             eff=float(1.0 / (w * w).sum()))
    elif sampler == "pncg":
        src = IIDSource(n, generator=g)
        st = pncg.init((src.uniform(L) * V).long().clamp(max=V - 1), target, alpha=1.0)
        wall = time.perf_counter() - t0
        for m in range(1, max(cfg.moves) + 1):
            t1 = time.perf_counter()
            st, _ = pncg.step(src.uniform(L + 1), st, target, alpha=1.0)
            wall += time.perf_counter() - t1
            if m in cfg.moves:
                emit(m, 1 + m, (1 + m) * L, wall, hist(st.x))
    else:  # QUEST (mt-QUEST with one try is QUEST's move) from LM samples
        k = size
        src = IIDSource(n, generator=g)
        y0 = generate(base, ids, mask, src, sampling)
        y = torch.nn.functional.pad(y0.tokens, (0, L - y0.tokens.shape[1]), value=0)
        st = mtquest.init(y, reward, base, ids, mask, sampling)
        calls, evals, wall = y0.nfe, y0.nfe, time.perf_counter() - t0
        for m in range(1, max(cfg.moves) + 1):
            t1 = time.perf_counter()
            if sampler == "quest":
                st, info = quest.step(src.uniform(L + 2), st, base, ids, mask, reward, cfg.beta,
                                      sampling)
                evals += info.nfe
            else:
                st, info = mtquest.step(src.uniform(mtquest.noise_dims(L, k)), st, base, ids,
                                        mask, reward, cfg.beta, sampling, tries=k,
                                        source=source)
                evals += 2 * k * info.nfe
            wall += time.perf_counter() - t1
            calls += info.nfe
            if m in cfg.moves:
                emit(m, calls, evals, wall, hist(st.y))
    return rows


def toy_summary_rows(rows: list[dict], target_tvd: float) -> list[dict]:
    """Per curve, over seeds: calls and seconds to the first budget whose TVD <= target_tvd
    (mean +- SE over the seeds that reach it), seconds per call, final TVD."""
    import statistics

    from parasample.bench.csvlog import mean_se_cells

    out = []
    for key in dict.fromkeys((r["sampler"], r["tries_source"], int(r["size"])) for r in rows):
        curves: dict[int, list[dict]] = {}
        for r in rows:
            if (r["sampler"], r["tries_source"], int(r["size"])) == key:
                curves.setdefault(int(r["seed"]), []).append(r)
        calls, secs, per_call, final = [], [], [], []
        rows_of = next(iter(curves.values()))
        for curve in curves.values():
            curve = sorted(curve, key=lambda r: int(r["budget"]))
            hit = next((r for r in curve if float(r["tvd"]) <= target_tvd), None)
            if hit is not None:
                calls.append(float(hit["calls"]))
                secs.append(float(hit["wall_s"]))
            last = curve[-1]
            per_call.append(float(last["wall_s"]) / max(1.0, float(last["calls"])))
            final.append(float(last["tvd"]))
        row = {"sampler": key[0], "tries_source": key[1], "size": key[2],
               "call_unit": rows_of[0]["call_unit"], "target_tvd": round(target_tvd, 6),
               "seeds": len(curves), "reached": len(calls),
               "seconds_per_call": round(statistics.fmean(per_call), 6)}
        for name, xs in (("calls_to_target", calls), ("seconds_to_target", secs),
                         ("final_tvd", final)):
            row[name], row[f"{name}_se"] = mean_se_cells(xs)
        out.append(row)
    return out


def correlated_tries_ratio(rows: list[dict]) -> list[dict]:
    """mt-QUEST: per K and correlated tries source, the wallclock to reach the TVD that i.i.d.
    tries reach at their last budget (same seed), as a ratio to i.i.d.'s; mean +- SE over
    seeds (seeds where the correlated chain never gets there count at its last budget, a
    lower bound on the ratio, and are counted in ``censored``)."""
    from parasample.bench.csvlog import mean_se_cells

    out = []
    mt = [r for r in rows if r["sampler"] == "mt-quest"]
    for k in sorted({int(r["size"]) for r in mt}):

        def curve(s, seed, k=k):
            return sorted((r for r in mt if int(r["size"]) == k and r["tries_source"] == s
                           and int(r["seed"]) == seed), key=lambda r: int(r["budget"]))

        seeds = sorted({int(r["seed"]) for r in mt if int(r["size"]) == k})
        for s in sorted({r["tries_source"] for r in mt} - {"iid"}):
            ratios, censored = [], 0
            for seed in seeds:
                iid, cor = curve("iid", seed), curve(s, seed)
                if not iid or not cor:
                    continue
                goal = float(iid[-1]["tvd"])
                hit = next((r for r in cor if float(r["tvd"]) <= goal), None)
                censored += hit is None
                ratios.append(float((hit or cor[-1])["wall_s"]) / float(iid[-1]["wall_s"]))
            mean, se = mean_se_cells(ratios)
            out.append({"tries": k, "tries_source": s, "seeds": len(ratios),
                        "censored": censored, "wall_ratio_to_iid": mean, "wall_ratio_se": se})
    return out


def toy_rows(cfg: ToyAlignConfig, out, progress=None) -> list[dict]:
    """Run (or resume) part (a): ``toy.csv`` (one curve per unit and seed, written whole) and
    ``toy_summary.csv``; returns all curve rows."""
    from parasample.bench.csvlog import write_csv
    from parasample.metrics import iid_tvd_floor
    from parasample.targets import TiltedTarget, exact_distribution

    csv = ResumableCSV(out / "toy.csv", TOY_HEADER, ["sampler", "tries_source", "size",
                                                    "budget", "seed"])
    rows = []
    todo = [u for u in cfg.units() if not any(
        (r["sampler"], r["tries_source"], r["size"]) == tuple(map(str, u)) for r in csv.rows)]
    if todo:  # one small untimed run of each sampler first: no curve pays one-time costs
        from dataclasses import replace

        warm = replace(cfg, samples=min(cfg.samples, 64), moves=(1,))
        for sampler, source, size in todo:
            toy_unit(warm, sampler, source, size, 0)
    for sampler, source, size in cfg.units():
        for seed in range(cfg.seeds):
            key = {"sampler": sampler, "tries_source": source, "size": size, "seed": seed}
            have = [r for r in csv.rows if all(str(r[c]) == str(v) for c, v in key.items())]
            if not have:
                have = toy_unit(cfg, sampler, source, size, seed)
                for row in have:  # a curve is on disk whole or not at all
                    csv.append(row)
            rows += have
            if progress:
                progress(f"toy {sampler} {source} {size} seed {seed}")
    base, reward = _toy_target(cfg.seed)
    pi = exact_distribution(TiltedTarget(base, reward, cfg.beta))
    target = cfg.target_tvd or 1.5 * iid_tvd_floor(pi, cfg.samples)
    write_csv(out / "toy_summary.csv", TOY_SUMMARY_HEADER, toy_summary_rows(rows, target))
    write_csv(out / "toy_tries.csv", ["tries", "tries_source", "seeds", "censored",
                                      "wall_ratio_to_iid", "wall_ratio_se"],
              correlated_tries_ratio(rows))
    return rows


# -- part (b): SmolLM2 with a verifiable reward ----------------------------------------------

LM_HEADER = ["sampler", "size", "budget", "calls", "token_evals", "wall_s", "expected_reward",
             "accuracy", "log_evidence", "kl_to_base", "problems", "beta", "seed", "device",
             "dtype", "torch_threads"]


@dataclass(frozen=True)
class LMAlignConfig:
    """Part (b): SmolLM2-135M-Instruct on single-digit addition questions, reward r = 1 for the
    right number + 0.5 for a reply that is the number only, pi ~ p_LM exp(r / beta).
    ``problems`` questions, ``length`` new tokens; QUEST runs ``chains`` chains per question
    for ``moves`` moves (cached); token SMC and resample-move SMC ``particles`` per question;
    importance resampling ``ir_sizes`` draws per question."""

    problems: int = 8
    length: int = 10
    chains: int = 4
    moves: tuple[int, ...] = (1, 2, 4, 8, 12, 16)
    particles: int = 8
    ir_sizes: tuple[int, ...] = (4, 16)
    beta: float = 0.5
    seeds: int = 2
    seed: int = 0

    def __post_init__(self):
        for name in ("problems", "length", "chains", "particles", "seeds"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)} must be >= 1.")
        if not self.beta > 0:
            raise InputError(f"beta={self.beta} must be > 0 (pi ~ p exp(r / beta)).")
        if not self.moves or min(self.moves) < 1:
            raise InputError("every moves budget must be >= 1.")

    @classmethod
    def quick(cls, **kw) -> LMAlignConfig:
        return cls(**{"problems": 2, "length": 6, "chains": 2, "moves": (1, 2), "particles": 4,
                      "ir_sizes": (4,), "seeds": 1, **kw})

    def units(self) -> list[tuple[str, int]]:
        return ([("importance-resampling", n) for n in self.ir_sizes]
                + [("quest", self.chains), ("smc", self.particles),
                   ("resample-move-smc", self.particles)])


class AdditionReward:
    """r = 1 if the reply's last integer is the answer, + 0.5 if the reply is that number only.

    Rows map to questions by ``row * len(answers) // rows`` (the samplers lay rows out
    question-major, any number per question, so one reward serves them all); ``partial`` is the
    same reward of the text so far (a twist whose final value is r)."""

    def __init__(self, lm, answers: list[str]):
        self.lm, self.answers = lm, answers

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        import re

        from parasample.tasks.arith import last_integer

        texts = self.lm.decode(y)
        n, P = len(texts), len(self.answers)
        out = []
        for i, text in enumerate(texts):
            want = self.answers[i * P // n]
            right = last_integer(text) == want
            out.append(float(right) + 0.5 * float(right and re.fullmatch(r"\s*-?\d+\s*\.?\s*",
                                                                         text) is not None))
        return torch.tensor(out, dtype=torch.float64)

    partial = __call__


def lm_unit(cfg: LMAlignConfig, lm, sampler: str, size: int, seed: int,
            dtype: torch.dtype = torch.float32) -> list[dict]:
    """One sampler's rows on the addition questions (QUEST: one per recorded move)."""
    from parasample.smc import resample_move as rm
    from parasample.smc import smc
    from parasample.tasks.arith import SimpleAddTask

    task = SimpleAddTask()
    problems = task.problems(cfg.problems, seed=cfg.seed)
    reward = AdditionReward(lm, [p.answer for p in problems])
    ids, mask = lm.encode_prompts([p.prompt for p in problems])  # [P, T]
    P, L = len(problems), cfg.length
    sampling = SamplingConfig(max_new_tokens=L)
    g = derive_generator(cfg.seed + seed, "align", "lm", sampler, size)
    rep = lambda x: x.repeat_interleave(size, 0)  # noqa: E731 - question-major rows
    rows = []

    def emit(budget, calls, rows_per_call, wall, rew, acc, log_z=None):
        kl = "" if log_z is None else round(float((rew / cfg.beta - log_z).mean()), 4)
        rows.append({"sampler": sampler, "size": size, "budget": budget, "calls": calls,
                     "token_evals": calls * rows_per_call, "wall_s": round(wall, 3),
                     "expected_reward": round(float(rew.mean()), 4),
                     "accuracy": round(float(acc.mean()), 4),
                     "log_evidence": "" if log_z is None else round(float(log_z.mean()), 4),
                     "kl_to_base": kl, "problems": P, "beta": cfg.beta, "seed": seed,
                     **machine_fields(lm.device, dtype)})

    def pad(tokens):
        return torch.nn.functional.pad(tokens, (0, L - tokens.shape[1]), value=lm.eos_id)

    t0 = time.perf_counter()
    if sampler == "importance-resampling":  # the self-normalised estimate from n LM draws
        out = generate(lm, ids, mask, IIDSource(P * size, generator=g), sampling,
                       samples_per_prompt=size)  # one prefill per question
        r = reward(pad(out.tokens)).view(P, size)
        w = torch.softmax(r / cfg.beta, -1)
        emit(1, out.nfe, P * size, time.perf_counter() - t0, (w * r).sum(1),
             (w * (r >= 1)).sum(1))
    elif sampler == "quest":
        out = generate(lm, ids, mask, IIDSource(P * size, generator=g), sampling,
                       samples_per_prompt=size)
        st = quest.init(pad(out.tokens), reward, lm, rep(ids), rep(mask), sampling)
        src = IIDSource(P * size, generator=g)
        calls, wall = out.nfe, time.perf_counter() - t0
        for m in range(1, max(cfg.moves) + 1):
            t1 = time.perf_counter()
            st, info = quest.step(src.uniform(L + 2), st, lm, rep(ids), rep(mask), reward,
                                  cfg.beta, sampling)
            wall += time.perf_counter() - t1
            calls += info.nfe
            if m in cfg.moves:
                r = st.reward.view(P, size)
                emit(m, calls, P * size, wall, r.mean(1), (r >= 1).double().mean(1))
    else:  # token SMC; resample-move: a QUEST move of every particle after each resampling
        scfg = smc.SMCConfig(n_particles=size, beta=cfg.beta)
        tok, res = IIDSource(P * size, generator=g), IIDSource(P, generator=g)
        st = smc.init(lm, rep(ids), rep(mask), scfg, reward)
        calls = 1
        for t in range(L):
            st, info = smc.step(tok.uniform(), res.uniform(smc.noise_dims(scfg)), st, lm, reward,
                                scfg, sampling, advance=t < L - 1)
            calls += info.nfe
            u_move = tok.uniform(rm.noise_dims(t + 1))  # drawn every step: the same streams
            if sampler == "resample-move-smc" and bool(info.resampled.any()):
                st, moved = rm.rejuvenate(u_move, st, lm, rep(ids),
                                          rep(mask), reward, cfg.beta, sampling,
                                          advance=t < L - 1)
                calls += moved.nfe
        w = torch.softmax(st.logw, -1)  # [P, N]
        r = st.reward.view(P, size)
        emit(1, calls, P * size, time.perf_counter() - t0, (w * r).sum(1),
             (w * (r >= 1)).sum(1), smc.final_log_evidence(st))
    return rows


def lm_rows(cfg: LMAlignConfig, out, progress=None, device="cpu", dtype=torch.float32
            ) -> list[dict]:
    """Run (or resume) part (b): ``lm.csv``, each unit written whole."""
    from parasample.targets.hf import smollm2

    csv = ResumableCSV(out / "lm.csv", LM_HEADER, ["sampler", "size", "budget", "seed"])
    lm, rows = None, []
    for sampler, size in cfg.units():
        for seed in range(cfg.seeds):
            have = [r for r in csv.rows if (r["sampler"], r["size"], r["seed"]) ==
                    (sampler, str(size), str(seed))]
            if not have:
                lm = lm or smollm2(dtype, device)
                have = lm_unit(cfg, lm, sampler, size, seed, dtype)
                for row in have:
                    csv.append(row)
            rows += have
            if progress:
                progress(f"smollm2 {sampler} {size} seed {seed}")
    return rows


def lm_summary(rows: list[dict]) -> list[dict]:
    """Per sampler (mean over seeds): final expected reward, calls and seconds; for the others
    than QUEST, the ratio of their seconds to the seconds QUEST needs to reach their expected
    reward (QUEST's first recorded move at or above it; blank if it never does), and to QUEST's
    seconds for its own final reward with whether they reach that reward (the issue's bar for
    resample-move SMC: <= 1/3)."""
    import statistics

    out = []
    quest_rows = [r for r in rows if r["sampler"] == "quest"]
    moves = sorted({int(r["budget"]) for r in quest_rows})
    curve = [(m, statistics.fmean(float(r["expected_reward"]) for r in quest_rows
                                  if int(r["budget"]) == m),
              statistics.fmean(float(r["wall_s"]) for r in quest_rows if int(r["budget"]) == m))
             for m in moves]
    for key in dict.fromkeys((r["sampler"], r["size"]) for r in rows):
        mine = [r for r in rows if (r["sampler"], r["size"]) == key]
        last = max(int(r["budget"]) for r in mine)
        final = [r for r in mine if int(r["budget"]) == last]
        rew = statistics.fmean(float(r["expected_reward"]) for r in final)
        wall = statistics.fmean(float(r["wall_s"]) for r in final)
        row = {"sampler": key[0], "size": key[1], "seeds": len(final),
               "expected_reward": round(rew, 4), "calls": round(statistics.fmean(
                   float(r["calls"]) for r in final), 1), "wall_s": round(wall, 3),
               "quest_seconds_to_this_reward": "", "wall_ratio_to_quest": "",
               "reaches_quest_final": "", "wall_ratio_to_quest_final": ""}
        hit = next(((m, w) for m, rq, w in curve if rq >= rew), None)
        if hit is not None and key[0] != "quest":
            row["quest_seconds_to_this_reward"] = round(hit[1], 3)
            row["wall_ratio_to_quest"] = round(wall / hit[1], 4)
        if curve and key[0] != "quest":  # the bar: QUEST's final reward, in <= 1/3
            row["reaches_quest_final"] = rew >= curve[-1][1]
            row["wall_ratio_to_quest_final"] = round(wall / curve[-1][2], 4)
        out.append(row)
    return out
