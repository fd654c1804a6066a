"""``parasample bench mcmc``: Markov chain and SMC samplers measured against exact targets.

(a) the research log's Ising table (seed 000) with the computed i.i.d. floor, plus the exact
t-step marginal TVD from many parallel chains; (b) QUEST, SMC and p-NCG on the reward-tilted toy
LM, TVD to the exact target against NFE; (c) SmolLM2 as an energy model (see
:mod:`parasample.bench.mcmc_lm`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV
from parasample.bench.timing import machine_fields
from parasample.errors import InputError
from parasample.mcmc import mtm, pncg, quest
from parasample.metrics import empirical_distribution, iid_tvd_floor, tvd
from parasample.noise import IIDSource
from parasample.smc import smc
from parasample.targets import (
    IsingChain,
    TiltedTarget,
    ToyARLM,
    count_reward,
    exact_distribution,
    state_index,
)

__all__ = ["MCMCBenchConfig", "SAMPLERS", "ising_sweep", "ising_table", "held_out_table",
           "held_out_settings", "HELD_OUT_HEADER", "marginal_table",
           "toy_table", "ISING_HEADER", "MARGINAL_HEADER", "TOY_HEADER"]

#: sampler name -> MTM weights (None: plain p-NCG)
SAMPLERS = {"pncg": None, "mt-pncg": "lambda1", "iw-mt-pncg": "importance"}

ISING_HEADER = ["sampler", "n", "alpha", "tries", "mean_final_tvd", "std_final_tvd",
                "mean_accept_rate", "mean_wallclock", "beta", "p", "steps", "trials",
                "floor_tvd", "amortized_wallclock", "nfe_per_chain", "seed", "device", "dtype",
                "torch_threads"]
MARGINAL_HEADER = ["sampler", "n", "beta", "alpha", "tries", "t", "tvd", "chains", "floor_tvd",
                   "nfe_per_chain", "seed", "device", "dtype"]
TOY_HEADER = ["sampler", "budget", "nfe_per_sample", "samples", "tvd", "floor_tvd",
              "effective_samples", "floor_at_effective", "wall_s", "seed", "device", "dtype"]


@dataclass(frozen=True)
class MCMCBenchConfig:
    """Defaults reproduce the seed's protocol: 1000 steps, 30 trials, beta = 0.42."""

    ns: tuple[int, ...] = (4, 8, 16)
    betas: tuple[float, ...] = (0.42, 1.0)
    alphas: tuple[float, ...] = (2.66, 13.05, 16.0, 64.0)
    tries: tuple[int, ...] = (4, 32)
    steps: int = 1000
    trials: int = 30
    p: int = 2
    marginal_chains: int = 10_000
    marginal_times: tuple[int, ...] = (1, 10, 100, 1000)
    # The t-step marginals run 10^4 chains for 1000 steps: multiple-try with 32 tries costs 63
    # gradient evaluations per step (6.3e8 in all, ~25 min per setting on 2 cores), so they use
    # each sampler's best alpha among tries <= marginal_max_tries, at the seed's beta only.
    marginal_max_tries: int = 4
    marginal_betas: tuple[float, ...] = (0.42,)
    seed: int = 0

    def __post_init__(self):
        for a in self.alphas:
            pncg.check_alpha_p(a, self.p)
        if any(k < 1 for k in self.tries):
            raise InputError(f"tries={self.tries}: every number of tries must be >= 1.")
        if any(b <= 0 for b in self.betas):
            raise InputError(f"betas={self.betas}: every beta must be > 0.")
        if any(n > 20 for n in self.ns):
            raise InputError(f"ns={self.ns}: the exact TVD enumerates 2^n states; n <= 20.")
        if self.steps < 1 or self.trials < 1:
            raise InputError("steps and trials must be >= 1.")


def _kernel(sampler: str, target, alpha: float, p: int, tries: int):
    """(step function of (u, state), uniforms per chain and step, gradient evals per step)."""
    weights = SAMPLERS[sampler]
    L = target.length
    if weights is None:
        return (lambda u, s: pncg.step(u, s, target, alpha, p)), pncg.noise_dims(L), 1
    return ((lambda u, s: mtm.step(u, s, target, alpha, p, tries, weights)),
            mtm.noise_dims(L, tries), 2 * tries - 1)


def run_chains(sampler, target, alpha, p, tries, chains, steps, seed, record=None):
    """Run ``chains`` chains from uniform random states; ``record(t, state)`` after each step.

    Returns (acceptance rate per chain ``[chains]``, wall seconds, gradient evals per chain).
    """
    src = IIDSource(chains, generator=torch.Generator().manual_seed(seed))
    x0 = (src.uniform(target.length) * target.vocab_size).long()
    step, dims, nfe = _kernel(sampler, target, alpha, p, tries)
    t0 = time.perf_counter()
    state = pncg.init(x0, target, alpha, p)
    acc = torch.zeros(chains, dtype=torch.float64)
    for t in range(steps):
        state, info = step(src.uniform(dims), state)
        acc += info.accepted.double()
        if record:
            record(t + 1, state)
    return acc / steps, time.perf_counter() - t0, 1 + nfe * steps


def ising_sweep(cfg: MCMCBenchConfig):
    """(sampler, n, beta, alpha, tries) of the table: p-NCG over alphas, MTM over alphas x tries."""
    for beta in cfg.betas:
        for n in cfg.ns:
            for sampler in SAMPLERS:
                for alpha in cfg.alphas:
                    for k in ((1,) if sampler == "pncg" else cfg.tries):
                        yield sampler, n, beta, alpha, k


def ising_row(sampler, n, beta, alpha, tries, cfg: MCMCBenchConfig, *,
              steps: int | None = None, seed: int | None = None) -> dict:
    """One setting: ``trials`` chains as one batch; TVD of each chain's visited-state histogram
    after ``steps`` steps (default ``cfg.steps``), chains seeded by ``seed`` (``cfg.seed``)."""
    steps = cfg.steps if steps is None else steps
    seed = cfg.seed if seed is None else seed
    target = IsingChain(n, beta)
    pi = exact_distribution(target)
    visits = torch.empty(cfg.trials, steps, dtype=torch.long)

    def record(t, state):
        visits[:, t - 1] = state_index(state.x, 2)

    acc, wall, nfe = run_chains(sampler, target, alpha, cfg.p, tries, cfg.trials, steps,
                                seed, record)
    tv = tvd(empirical_distribution(visits, 2**n), pi.expand(cfg.trials, -1))  # [trials]
    return {"sampler": sampler, "n": n, "alpha": alpha, "tries": tries,
            "mean_final_tvd": round(float(tv.mean()), 6),
            "std_final_tvd": round(float(tv.std()), 6),
            "mean_accept_rate": round(float(acc.mean()), 4),
            "mean_wallclock": round(wall, 4), "beta": beta, "p": cfg.p, "steps": steps,
            "trials": cfg.trials, "floor_tvd": round(iid_tvd_floor(pi, steps), 6),
            "amortized_wallclock": round(wall / cfg.trials, 5), "nfe_per_chain": nfe,
            "seed": seed, **machine_fields()}


def _ordered(executor, fn, todo: list[tuple]):
    """Results of ``fn(*args)`` for each args of ``todo``, in order (here or on Ray)."""
    from parasample.bench.executor import LocalExecutor

    return (executor or LocalExecutor()).map(fn, todo)


def _resumed_rows(csv: ResumableCSV, settings: list[tuple], key, fn, cfg, executor, progress,
                  label) -> list[dict]:
    """One row per setting, in order: the row ``csv`` already holds for ``key(*setting)``, else
    ``fn(*setting, cfg)`` (here or on Ray) appended as it arrives; ``label(setting)`` names the
    setting in the progress line."""
    todo = [(*s, cfg) for s in settings if csv.done(key(*s)) is None]
    results = _ordered(executor, fn, todo)
    rows = []
    for s in settings:
        row = csv.done(key(*s))
        if row is None:
            row = next(results)
            csv.append(row)
        rows.append(row)
        if progress:
            progress(label(s))
    return rows


def ising_table(cfg: MCMCBenchConfig, out, progress=None, executor=None) -> list[dict]:
    csv = ResumableCSV(out / "ising.csv", ISING_HEADER,
                       ["sampler", "n", "beta", "alpha", "tries", "p", "steps", "trials", "seed"])

    def key(sampler, n, beta, alpha, k):
        return {"sampler": sampler, "n": n, "beta": beta, "alpha": alpha, "tries": k,
                "p": cfg.p, "steps": cfg.steps, "trials": cfg.trials, "seed": cfg.seed}

    return _resumed_rows(csv, list(ising_sweep(cfg)), key, ising_row, cfg, executor, progress,
                         lambda s: f"ising {s[0]} n={s[1]} beta={s[2]} alpha={s[3]} tries={s[4]}")


def best_settings(rows: list[dict], max_tries: int | None = None,
                  betas: tuple[float, ...] | None = None, by_tries: bool = False) -> dict:
    """(sampler, n, beta) -> the row with the lowest mean final TVD (the tuned alpha / tries),
    optionally among rows with tries <= ``max_tries`` and beta in ``betas``; ``by_tries``:
    (sampler, n, beta, tries) -> the tuned alpha of each number of tries."""
    best = {}
    for r in rows:
        if max_tries is not None and int(r["tries"]) > max_tries:
            continue
        if betas is not None and float(r["beta"]) not in betas:
            continue
        key = (r["sampler"], int(r["n"]), float(r["beta"])) + ((int(r["tries"]),) if by_tries
                                                              else ())
        if key not in best or float(r["mean_final_tvd"]) < float(best[key]["mean_final_tvd"]):
            best[key] = r
    return best


#: the sweep's chains are seeded by cfg.seed; the tuned settings are scored on other chains
SCORING_SEED_OFFSET = 1000
HELD_OUT_HEADER = ["comparison", "sampler", "n", "beta", "alpha", "tries", "steps",
                   "nfe_per_chain", "mean_final_tvd", "std_final_tvd", "floor_tvd",
                   "mean_accept_rate", "mean_wallclock", "trials", "selection_seed", "seed",
                   "p", "device", "dtype", "torch_threads"]


def held_out_settings(cfg: MCMCBenchConfig, rows: list[dict]) -> list[tuple]:
    """(comparison, sampler, n, beta, alpha, tries, steps) of the held-out table: each number
    of tries with the alpha tuned on the sweep's chains, at the sweep's steps (equal steps)
    and at the steps that spend the same gradient evaluations per chain as ``cfg.steps`` of
    p-NCG (equal gradients: 2 tries - 1 per multiple-try step)."""
    out = []
    for (sampler, n, beta, k), r in sorted(best_settings(rows, by_tries=True).items()):
        per_step = 1 if SAMPLERS[sampler] is None else 2 * k - 1
        for comparison, steps in (("equal-steps", cfg.steps),
                                  ("equal-gradients", max(1, cfg.steps // per_step))):
            out.append((comparison, sampler, n, beta, float(r["alpha"]), k, steps))
    return out


def _held_out_row(comparison, sampler, n, beta, alpha, k, steps, cfg) -> dict:
    row = ising_row(sampler, n, beta, alpha, k, cfg, steps=steps,
                    seed=cfg.seed + SCORING_SEED_OFFSET)
    return {**row, "comparison": comparison, "selection_seed": cfg.seed}


def held_out_table(cfg: MCMCBenchConfig, rows: list[dict], out, progress=None,
                   executor=None) -> list[dict]:
    """``held_out.csv``: every tuned setting scored on chains other than those it was tuned on
    (the sweep's best alpha is the minimum over the sweep, biased low on its own chains), at
    equal steps and at equal gradient evaluations per chain."""
    csv = ResumableCSV(out / "held_out.csv", HELD_OUT_HEADER,
                       ["comparison", "sampler", "n", "beta", "alpha", "tries", "steps",
                        "trials", "selection_seed", "p"])

    def key(comparison, sampler, n, beta, alpha, k, steps):
        return {"comparison": comparison, "sampler": sampler, "n": n, "beta": beta,
                "alpha": alpha, "tries": k, "steps": steps, "trials": cfg.trials,
                "selection_seed": cfg.seed, "p": cfg.p}

    return _resumed_rows(csv, list(held_out_settings(cfg, rows)), key, _held_out_row, cfg,
                         executor, progress,
                         lambda s: f"held-out {s[0]} {s[1]} n={s[2]} beta={s[3]} tries={s[5]}")


def marginal_rows(sampler: str, n: int, beta: float, alpha: float, k: int,
                  cfg: MCMCBenchConfig) -> list[dict]:
    """One tuned setting's t-step marginal TVDs, from ``marginal_chains`` parallel chains."""
    times = set(cfg.marginal_times)
    target = IsingChain(n, beta)
    pi = exact_distribution(target)
    floor = iid_tvd_floor(pi, cfg.marginal_chains)
    found = []

    def record(t, state):
        if t in times:
            emp = empirical_distribution(state_index(state.x, 2)[None], 2**target.n)[0]
            found.append((t, float(tvd(emp, pi))))

    run_chains(sampler, target, alpha, cfg.p, k, cfg.marginal_chains, max(times), cfg.seed + 1,
               record)
    nfe_step = 1 if SAMPLERS[sampler] is None else 2 * k - 1
    return [{"sampler": sampler, "n": n, "beta": beta, "alpha": alpha, "tries": k, "t": t,
             "tvd": round(tv, 6), "chains": cfg.marginal_chains, "floor_tvd": round(floor, 6),
             "nfe_per_chain": 1 + nfe_step * t, "seed": cfg.seed, **machine_fields()}
            for t, tv in found]


def marginal_table(cfg: MCMCBenchConfig, tuned: dict, out, progress=None,
                   executor=None) -> list[dict]:
    """Exact-marginal TVD of the t-step distribution, from ``marginal_chains`` parallel chains,
    for every tuned (sampler, n, beta)."""
    csv = ResumableCSV(out / "marginal.csv", MARGINAL_HEADER,
                       ["sampler", "n", "beta", "alpha", "tries", "t", "chains", "seed"])
    times = sorted(set(cfg.marginal_times))
    settings = [(sampler, n, beta, float(best["alpha"]), int(best["tries"]))
                for (sampler, n, beta), best in sorted(tuned.items())]

    def done(sampler, n, beta, alpha, k):
        return [csv.done({"sampler": sampler, "n": n, "beta": beta, "alpha": alpha, "tries": k,
                          "t": t, "chains": cfg.marginal_chains, "seed": cfg.seed})
                for t in times]

    todo = [(*s, cfg) for s in settings if not all(done(*s))]
    results = _ordered(executor, marginal_rows, todo)
    rows = []
    for s in settings:
        have = done(*s)
        if all(have):
            rows += have
            continue
        for row in next(results):
            if not csv.done(row):
                csv.append(row)
            rows.append(row)
        if progress:
            progress(f"marginal {s[0]} n={s[1]} beta={s[2]}")
    return rows


def toy_table(out, seed: int = 0, samples: int = 4096, progress=None) -> list[dict]:
    """QUEST, SMC and p-NCG on the reward-tilted toy LM (V = 4, L = 4, beta = 0.5).

    TVD of each sampler's sample histogram (SMC: weighted) to the exact tilted target, at
    increasing compute; every entry has the floor of ``samples`` exact draws beside it.
    """
    csv = ResumableCSV(out / "toy.csv", TOY_HEADER, ["sampler", "budget", "samples", "seed"])
    base = ToyARLM(4, 4, generator=torch.Generator().manual_seed(seed), sharpness=1.5)
    reward, beta = count_reward(1), 0.5
    target = TiltedTarget(base, reward, beta)
    pi = exact_distribution(target)
    floor = round(iid_tvd_floor(pi, samples), 6)
    L, S = 4, 4**4
    rows = []

    def emit(sampler, budget, nfe, t_tvd, wall, eff=samples):
        row = {"sampler": sampler, "budget": budget, "nfe_per_sample": nfe, "samples": samples,
               "tvd": round(t_tvd, 6), "floor_tvd": floor, "effective_samples": round(eff),
               "floor_at_effective": round(iid_tvd_floor(pi, max(1, round(eff))), 6),
               "wall_s": round(wall, 3), "seed": seed, **machine_fields()}
        if not csv.done(row):
            csv.append(row)
        rows.append(row)

    ids = torch.zeros(samples, 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    sampling = SamplingConfig(max_new_tokens=L)
    steps_at = (1, 3, 10, 30, 100)
    t0 = time.perf_counter()
    # the base LM itself (how far the tilt moves the target)
    p_base = exact_distribution(base)
    emit("lm-iid (untilted)", 0, L, float(tvd(p_base, pi)), 0.0)
    # p-NCG and QUEST: many chains, TVD of the across-chain histogram after t steps
    for name in ("pncg", "quest"):
        src = IIDSource(samples, generator=torch.Generator().manual_seed(seed + 1))
        if name == "pncg":
            x0 = (src.uniform(L) * 4).long()
            st = pncg.init(x0, target, alpha=1.0)
        else:
            y0 = generate(base, ids, mask, src, sampling).tokens
            st = quest.init(y0, reward, base, ids, mask, sampling)
        t0 = time.perf_counter()
        for t in range(1, max(steps_at) + 1):
            if name == "pncg":
                st, _ = pncg.step(src.uniform(L + 1), st, target, alpha=1.0)
                x, nfe = st.x, 1 + t
            else:
                st, _ = quest.step(src.uniform(L + 2), st, base, ids, mask, reward, beta, sampling)
                x, nfe = st.y, L * (t + 1)
            if t in steps_at:
                emp = empirical_distribution(state_index(x, 4)[None], S)[0]
                emit(name, t, nfe, float(tvd(emp, pi)), time.perf_counter() - t0)
        if progress:
            progress(f"toy {name}")
    # SMC: the same number of particles in systems of N, weighted histogram
    for N in (4, 16, 64, 256):
        cfg = smc.SMCConfig(n_particles=N, beta=beta)
        R = samples // N
        tok = IIDSource(R * N, generator=torch.Generator().manual_seed(seed + 2))
        res = IIDSource(R, generator=torch.Generator().manual_seed(seed + 3))
        t0 = time.perf_counter()
        st = smc.init(base, ids[:R * N], mask[:R * N], cfg, reward)
        for t in range(L):
            st, _ = smc.step(tok.uniform(), res.uniform(smc.noise_dims(cfg)), st, base, reward,
                             cfg, sampling, advance=t < L - 1)
        # independent systems combined by their evidence estimates Z_r (unbiased), not 1 / R
        # each (that would keep every system's O(1/N) self-normalisation bias)
        sys_w = torch.softmax(smc.final_log_evidence(st), 0)  # [R]
        w = (torch.softmax(st.logw, -1) * sys_w[:, None]).reshape(-1)
        idx = state_index(st.ar.tokens, 4)
        emp = torch.zeros(S, dtype=torch.float64).scatter_add_(0, idx, w)
        kish = float(1.0 / (w * w).sum())  # Kish effective size of the weighted sample
        emit("smc", N, L, float(tvd(emp, pi)), time.perf_counter() - t0, eff=kish)
    if progress:
        progress("toy smc")
    return rows
