"""``parasample bench align`` part (a): samplers of the exact toy tilted LM, TVD to the
enumerated target against model calls and wallclock (see :mod:`parasample.bench.align`)."""

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

__all__ = ["ToyAlignConfig", "TOY_HEADER", "TOY_SUMMARY_HEADER", "toy_rows", "toy_unit",
           "toy_summary_rows", "correlated_tries_ratio"]

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
