"""``parasample bench mcmc``: Markov chain and SMC samplers against exact targets (seed 000)."""

from __future__ import annotations

import typer

from parasample.cli.common import (
    BenchRun,
    bench_options,
    console,
)
from parasample.errors import MissingInputError

__all__ = ["bench_mcmc"]


@bench_options("mcmc",
               quick="n = 4, 100 steps, 10 trials, small LM part",
               seed="every chain",
               ray=True, device_where="for part (c), SmolLM2; parts (a) and (b) are exactly "
               "enumerable toys computed on the CPU (a GPU would only add kernel-launch latency "
               "to their tiny tensors)")
def bench_mcmc(
    ctx: typer.Context,
    run: BenchRun,
    skip_lm: bool = typer.Option(False, "--skip-lm", help="Skip part (c), the SmolLM2 energy "
                                 "model."),
):
    """Measures MCMC and SMC samplers against exact targets (TVD, mixing).

    MCMC and SMC samplers: (a) the research log's Ising table with the i.i.d. floor, its
    tuned settings scored on held-out chains at equal steps and at equal gradient evaluations,
    and the exact t-step marginal TVD, (b) QUEST / SMC / p-NCG against the exact tilted toy LM,
    (c) SmolLM2 energy traces (mixing.png). Writes ising.csv, held_out.csv, marginal.csv,
    toy.csv, smollm2.csv, smollm2_traces.csv; resumes when rerun.
    """

    from parasample.bench import mcmc as bm
    from parasample.bench import mcmc_lm as bl

    dev, dt, quick, seed = run.device, run.dtype, run.quick, run.seed
    executor = run.executor(ctx)  # a cluster that does not answer fails here
    if not skip_lm:  # checked before parts (a) and (b) run, not after
        from parasample.targets.hf import smollm2_path

        try:
            smollm2_path()
        except FileNotFoundError as e:
            raise MissingInputError(f"{e} Or pass --skip-lm to run parts (a) and (b) "
                                    "without it.") from None
    if quick:
        cfg = bm.MCMCBenchConfig(ns=(4,), betas=(0.42,), alphas=(16.0, 64.0), tries=(4,),
                                 steps=100, trials=10, marginal_chains=2000,
                                 marginal_times=(1, 10, 100), seed=seed)
        lcfg = bl.LMBenchConfig(chains=2, pncg_steps=3, mtm_steps=2, quest_steps=2, n_iid=8,
                                smc_particles=4, seed=seed)
    else:
        cfg, lcfg = bm.MCMCBenchConfig(seed=seed), bl.LMBenchConfig(seed=seed)
    out_dir = run.out()
    out_dir.mkdir(parents=True, exist_ok=True)
    log = lambda m: console.print(f"  done: {m}", highlight=False)  # noqa: E731
    console.print(f"bench mcmc -> {out_dir}: (a) Ising n={list(cfg.ns)}, beta={list(cfg.betas)},"
                  f" {cfg.steps} steps x {cfg.trials} trials, alphas {list(cfg.alphas)}, tries "
                  f"{list(cfg.tries)}, p={cfg.p}")
    with console.status("(a) Ising table ..."):
        rows = bm.ising_table(cfg, out_dir, progress=log, executor=executor)
    tuned = bm.best_settings(rows)
    with console.status("(a) tuned settings on held-out chains, equal steps and equal "
                        "gradient evaluations ..."):
        held = bm.held_out_table(cfg, rows, out_dir, progress=log, executor=executor)
    with console.status(f"(a) t-step marginals from {cfg.marginal_chains} chains ..."):
        marg = bm.marginal_table(cfg, bm.best_settings(rows, cfg.marginal_max_tries,
                                                       cfg.marginal_betas), out_dir,
                                 progress=log, executor=executor)
    with console.status("(b) tilted toy LM ..."):
        toy = bm.toy_table(out_dir, seed=seed, samples=1024 if quick else 4096, progress=log)
    lm_rows = []
    if not skip_lm:
        with console.status("(c) SmolLM2 energy model ..."):
            lm_rows = bl.smollm2_tables(lcfg, out_dir, progress=log, device=dev, dtype=dt)
        bl.mixing_plot(out_dir)
    _summary(tuned, held, marg, toy, lm_rows)
    console.print(f"wrote {out_dir}/ising.csv, held_out.csv, marginal.csv, toy.csv"
                  + ("" if skip_lm else ", smollm2.csv, smollm2_traces.csv, mixing.png"))


def _summary(tuned, held, marg, toy, lm_rows) -> None:
    from rich.table import Table

    t = Table("sampler", "n", "beta", "tuned alpha", "tries", "final TVD (mean +- sd)",
              "i.i.d. floor", "accept", "wall / trial (s)", title="(a) Ising, best setting of "
              "the sweep (scored on the chains it was chosen on: see held_out.csv)")
    for (sampler, n, beta), r in sorted(tuned.items(), key=lambda kv: (kv[0][2], kv[0][1],
                                                                        kv[0][0])):
        t.add_row(sampler, str(n), str(beta), str(r["alpha"]), str(r["tries"]),
                  f"{float(r['mean_final_tvd']):.4f} +- {float(r['std_final_tvd']):.4f}",
                  f"{float(r['floor_tvd']):.4f}", f"{float(r['mean_accept_rate']):.1%}",
                  f"{float(r['mean_wallclock']):.2f}")
    console.print(t)
    h = Table("comparison", "sampler", "n", "beta", "alpha", "tries", "steps",
              "gradients / chain", "final TVD (mean +- sd)", "floor", title="(a) tuned "
              "settings on held-out chains")
    for r in held:
        h.add_row(r["comparison"], r["sampler"], str(r["n"]), str(r["beta"]), str(r["alpha"]),
                  str(r["tries"]), str(r["steps"]), str(r["nfe_per_chain"]),
                  f"{float(r['mean_final_tvd']):.4f} +- {float(r['std_final_tvd']):.4f}",
                  f"{float(r['floor_tvd']):.4f}")
    console.print(h)
    m = Table("sampler", "n", "beta", "t", "TVD of t-step marginal", "floor (chains)",
              title="(a) exact t-step marginal")
    for r in marg:
        m.add_row(r["sampler"], str(r["n"]), str(r["beta"]), str(r["t"]),
                  f"{float(r['tvd']):.4f}", f"{float(r['floor_tvd']):.4f}")
    console.print(m)
    b = Table("sampler", "budget", "NFE / sample", "TVD to exact", "floor", title="(b) toy "
              "tilted LM")
    for r in toy:
        b.add_row(r["sampler"], str(r["budget"]), str(r["nfe_per_sample"]),
                  f"{float(r['tvd']):.4f}", f"{float(r['floor_tvd']):.4f}")
    console.print(b)
    if lm_rows:
        c = Table("experiment", "sampler", "NFE / chain", "wall (s)", "accept", "mean energy",
                  "i.i.d. energy", "mean reward", title="(c) SmolLM2-135M")
        for r in lm_rows:
            c.add_row(r["experiment"], r["sampler"], str(r["nfe_per_chain"]), str(r["wall_s"]),
                      str(r["accept_rate"]), str(r["final_mean_energy"]),
                      f"{r['iid_mean_energy']} +- {r['iid_sd_energy']}", str(r["mean_reward"]))
        console.print(c)
