"""``bench mcmc`` part (c): SmolLM2-135M-Instruct as an energy model, E(y) = -log p_LM(y | x).

Target: pi(y) = p_LM(y | x) over sequences of ``length`` tokens (EOS an ordinary token), so
ancestral sampling without stopping gives exact i.i.d. draws whose energies are the reference.
Chains of p-NCG, multiple-try p-NCG and QUEST start from uniformly random tokens; their mean
energy against model calls (NFE) shows how fast each approaches the i.i.d. level
(``mixing.png``). A tilted run, pi(y) ~ p_LM(y | x) exp(r(y) / beta) with r = number of tokens
containing a digit, compares QUEST and SMC at their NFE.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV, read_csv
from parasample.bench.timing import machine_fields
from parasample.mcmc import mtm, pncg, quest
from parasample.noise import IIDSource, derive_generator
from parasample.smc import smc

__all__ = ["LMBenchConfig", "smollm2_tables", "mixing_plot"]

TRACE_HEADER = ["sampler", "step", "nfe", "wall_s", "mean_energy", "chains", "seed"]
SUMMARY_HEADER = ["experiment", "sampler", "chains", "steps", "nfe_per_chain", "wall_s",
                  "accept_rate", "final_mean_energy", "iid_mean_energy", "iid_sd_energy",
                  "mean_reward", "beta", "length", "seed", "device", "dtype", "torch_threads"]
PROMPT = "Tell me a fun fact about the sea, with a number in it."


@dataclass(frozen=True)
class LMBenchConfig:
    length: int = 8
    chains: int = 8
    pncg_steps: int = 60
    mtm_steps: int = 20
    mtm_tries: int = 2
    quest_steps: int = 20
    # p-NCG step size on SmolLM2 from random tokens: 0.15 never moves, 0.25 accepts 79% of
    # proposals that change ~1 token, 0.35 accepts 17% (probe of 6 steps x 4 chains)
    alpha: float = 0.3
    n_iid: int = 64
    beta: float = 0.5
    smc_particles: int = 16
    seed: int = 0


class _NoStop:
    """The AR model with EOS treated as an ordinary token (fixed-length sequences).

    QUEST runs token by token here (``cached=False``: L calls a move, the accounting of this
    part's CSV and README figures); ``bench align`` part (c) measures the cached move, which
    visits the same states."""

    eos_id = None

    def __init__(self, lm):
        self.lm, self.vocab_size = lm, lm.vocab_size
        self.pads_exactly = getattr(lm, "pads_exactly", False)

    def start(self, ids, mask):
        return self.lm.start(ids, mask)

    def advance(self, state, tokens):
        return self.lm.advance(state, tokens)

    def reorder(self, state, index):
        return self.lm.reorder(state, index)


class DigitReward:
    """r(y) = number of tokens whose text contains a digit; additive, so SMC twists exactly
    (also ``bench align`` part (c)'s reward)."""

    def __init__(self, tokenizer, vocab_size):
        toks = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        self.mask = torch.tensor([any(c.isdigit() for c in (t or "")) for t in toks])

    def __call__(self, y):
        return self.mask.to(y.device)[y].sum(-1).double()

    partial = __call__


def _gen(cfg: LMBenchConfig, *name) -> torch.Generator:
    """Each experiment's own generator: the same numbers whether or not the others ran before
    it, so a resumed run equals an uninterrupted one."""
    return derive_generator(cfg.seed, *name)


def smollm2_tables(cfg: LMBenchConfig, out, progress=None, device="cpu",
                   dtype=torch.float32) -> list[dict]:
    """Run (or resume) part (c); writes ``smollm2.csv`` and ``smollm2_traces.csv``.

    Each experiment is written whole when it finishes (its summary row, then its trace rows), so
    an interrupted run leaves no partial chain behind, and a rerun computes only the missing
    experiments, with the same numbers.
    """
    from parasample.targets.hf import smollm2
    from parasample.targets.hf_energy import HFEnergy

    summary = ResumableCSV(out / "smollm2.csv", SUMMARY_HEADER, ["experiment", "sampler",
                                                                 "chains", "seed"])
    traces = ResumableCSV(out / "smollm2_traces.csv", TRACE_HEADER, ["sampler", "step", "chains",
                                                                     "seed"])
    lm = smollm2(dtype, device)
    ids, mask = lm.encode_prompts([PROMPT])
    target = HFEnergy(lm, ids[0], cfg.length)
    model = _NoStop(lm)
    sampling = SamplingConfig(max_new_tokens=cfg.length)
    C, L = cfg.chains, cfg.length
    cids, cmask = ids.expand(C, -1), mask.expand(C, -1)
    base = {"chains": C, "length": L, "seed": cfg.seed, "beta": "", "mean_reward": "",
            **machine_fields(lm.device, dtype)}
    rows = []

    def done(exp, sampler, chains=C):
        return summary.done({"experiment": exp, "sampler": sampler, "chains": chains,
                             "seed": cfg.seed})

    # i.i.d. reference energies (exact draws from pi)
    iid = done("energy", "iid", cfg.n_iid)
    if iid is None:
        src = IIDSource(cfg.n_iid, generator=_gen(cfg, "iid"))
        t0 = time.perf_counter()
        gen = generate(model, ids.expand(cfg.n_iid, -1), mask.expand(cfg.n_iid, -1), src,
                       sampling)
        e = -gen.logprobs.sum(1)  # at temperature 1, log q = log p_LM
        iid = {**base, "experiment": "energy", "sampler": "iid", "chains": cfg.n_iid,
               "steps": 1, "nfe_per_chain": gen.nfe, "wall_s": round(time.perf_counter() - t0, 2),
               "accept_rate": "", "final_mean_energy": round(float(e.mean()), 3),
               "iid_mean_energy": round(float(e.mean()), 3),
               "iid_sd_energy": round(float(e.std()), 3)}
        summary.append(iid)
    rows.append(iid)
    ref = {"iid_mean_energy": iid["iid_mean_energy"], "iid_sd_energy": iid["iid_sd_energy"]}
    if progress:
        progress("smollm2 iid")

    x0 = (IIDSource(C, generator=_gen(cfg, "x0")).uniform(L) * target.vocab_size).long().clamp(
        max=target.vocab_size - 1)

    def chain_run(name, steps, make_state, step_fn, energy_of, nfe_per_step, nfe0):
        if done("energy", name):
            rows.append(done("energy", name))
            return
        src = IIDSource(C, generator=_gen(cfg, "energy", name))
        # wall counts the sampler's steps only, not the energy diagnostic below (for QUEST that
        # is an extra forward pass per step)
        state, acc, wall, trace = make_state(), 0.0, 0.0, []
        for t in range(1, steps + 1):
            t0 = time.perf_counter()
            state, info = step_fn(src, state)
            wall += time.perf_counter() - t0
            acc += float(info.accepted.double().mean())
            trace.append({"sampler": name, "step": t, "nfe": nfe0 + nfe_per_step * t,
                          "wall_s": round(wall, 2),
                          "mean_energy": round(float(energy_of(state).mean()), 3),
                          "chains": C, "seed": cfg.seed})
        row = {**base, **ref, "experiment": "energy", "sampler": name, "steps": steps,
               "nfe_per_chain": nfe0 + nfe_per_step * steps, "wall_s": round(wall, 2),
               "accept_rate": round(acc / steps, 4),
               "final_mean_energy": round(float(energy_of(state).mean()), 3)}
        for tr in trace:  # written with the summary: a chain is on disk whole or not at all
            if not traces.done(tr):
                traces.append(tr)
        summary.append(row)
        rows.append(row)
        if progress:
            progress(f"smollm2 {name}")

    chain_run("pncg", cfg.pncg_steps, lambda: pncg.init(x0, target, cfg.alpha),
              lambda src, s: pncg.step(src.uniform(L + 1), s, target, cfg.alpha),
              lambda s: -s.logp, 1, 1)
    k = cfg.mtm_tries
    chain_run("mt-pncg", cfg.mtm_steps, lambda: mtm.init(x0, target, cfg.alpha),
              lambda src, s: mtm.step(src.uniform(mtm.noise_dims(L, k)), s, target, cfg.alpha,
                                      tries=k),
              lambda s: -s.logp, 2 * k - 1, 1)
    zero = lambda y: torch.zeros(y.shape[0], dtype=torch.float64)  # noqa: E731 - pi = p_LM
    chain_run("quest", cfg.quest_steps,
              lambda: quest.init(x0, zero, model, cids, cmask, sampling),
              lambda src, s: quest.step(src.uniform(L + 2), s, model, cids, cmask, zero, 1.0,
                                        sampling, cached=False),
              lambda s: -target.log_prob(s.y), L, 0)

    # tilted target: QUEST vs SMC, mean reward at their NFE
    reward = DigitReward(lm.tokenizer, target.vocab_size)
    if not done("tilted", "quest"):
        src = IIDSource(C, generator=_gen(cfg, "tilted", "quest"))
        t0 = time.perf_counter()
        st = quest.init(x0, reward, model, cids, cmask, sampling)
        for _ in range(cfg.quest_steps):
            st, _ = quest.step(src.uniform(L + 2), st, model, cids, cmask, reward, cfg.beta,
                               sampling, cached=False)
        wall = time.perf_counter() - t0
        summary.append({**base, "experiment": "tilted", "sampler": "quest",
                        "steps": cfg.quest_steps, "nfe_per_chain": L * cfg.quest_steps,
                        "wall_s": round(wall, 2), "accept_rate": "",
                        "final_mean_energy": round(float(-target.log_prob(st.y).mean()), 3),
                        **ref, "mean_reward": round(float(st.reward.mean()), 3),
                        "beta": cfg.beta})
    rows.append(done("tilted", "quest"))
    if not done("tilted", "smc"):
        N = cfg.smc_particles
        scfg = smc.SMCConfig(n_particles=N, beta=cfg.beta)
        tok = IIDSource(C * N, generator=_gen(cfg, "tilted", "smc", "tokens"))
        res = IIDSource(C, generator=_gen(cfg, "tilted", "smc", "resampling"))
        t0 = time.perf_counter()
        st = smc.init(model, ids.expand(C * N, -1), mask.expand(C * N, -1), scfg, reward)
        for t in range(L):
            st, _ = smc.step(tok.uniform(), res.uniform(smc.noise_dims(scfg)), st, model,
                             reward, scfg, sampling, advance=t < L - 1)
        wall = time.perf_counter() - t0
        w = torch.softmax(st.logw, -1)  # [C, N]
        r = reward(st.ar.tokens).view(C, N)
        e = -target.log_prob(st.ar.tokens).view(C, N)
        summary.append({**base, "experiment": "tilted", "sampler": "smc", "steps": L,
                        "nfe_per_chain": L, "wall_s": round(wall, 2),
                        "accept_rate": "", **ref,
                        "final_mean_energy": round(float((w * e).sum(1).mean()), 3),
                        "mean_reward": round(float((w * r).sum(1).mean()), 3),
                        "beta": cfg.beta, "chains": C})
        # (nfe_per_chain for SMC: L model calls per particle; N particles per system)
    rows.append(done("tilted", "smc"))
    if progress:
        progress("smollm2 tilted")
    return rows


def mixing_plot(out) -> object:
    """``mixing.png``: mean chain energy against NFE per chain, with the i.i.d. band."""
    from parasample.bench.plots import plt, save_figure  # headless matplotlib, set up there

    tr = read_csv(out / "smollm2_traces.csv")
    summ = read_csv(out / "smollm2.csv")
    iid = next((r for r in summ if r["sampler"] == "iid"), None)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, color in (("pncg", "tab:blue"), ("mt-pncg", "tab:green"), ("quest", "tab:red")):
        pts = [(int(r["nfe"]), float(r["mean_energy"])) for r in tr if r["sampler"] == name]
        if pts:
            ax.plot(*zip(*pts, strict=True), "-", color=color, label=name)
    if iid:
        m, sd = float(iid["iid_mean_energy"]), float(iid["iid_sd_energy"])
        ax.axhspan(m - sd, m + sd, color="gray", alpha=0.25, label="i.i.d. mean +- sd")
        ax.axhline(m, color="gray")
    ax.set_xscale("log")
    ax.set_xlabel("model calls per chain (NFE; p-NCG: forward + backward)")
    ax.set_ylabel("mean energy -log p_LM(y | x)")
    ax.set_title("SmolLM2-135M energy model: chains from random tokens vs exact draws",
                 fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, out / "mixing.png")
