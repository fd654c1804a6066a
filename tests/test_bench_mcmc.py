"""The mcmc benchmark harness on a reduced configuration (mechanics and resumption)."""

import csv

import pytest
from typer.testing import CliRunner

from parasample.bench import mcmc as bm
from parasample.cli import app


def test_ising_table_columns_resume_and_floor(tmp_path):
    cfg = bm.MCMCBenchConfig(ns=(4,), betas=(0.42,), alphas=(16.0,), tries=(2,), steps=50,
                             trials=5, marginal_chains=500, marginal_times=(1, 10))
    rows = bm.ising_table(cfg, tmp_path)
    assert [r["sampler"] for r in rows] == ["pncg", "mt-pncg", "iw-mt-pncg"]
    header = next(csv.reader(open(tmp_path / "ising.csv")))
    assert header[:8] == ["sampler", "n", "alpha", "tries", "mean_final_tvd", "std_final_tvd",
                          "mean_accept_rate", "mean_wallclock"]
    assert rows[1]["nfe_per_chain"] == 1 + 3 * 50  # 2k - 1 gradient evaluations per step
    again = bm.ising_table(cfg, tmp_path)  # resumed: read back, nothing recomputed
    assert len(list(csv.DictReader(open(tmp_path / "ising.csv")))) == 3
    assert [r["mean_final_tvd"] for r in again] == [str(r["mean_final_tvd"]) for r in rows]
    marg = bm.marginal_table(cfg, bm.best_settings(again), tmp_path)
    assert {int(r["t"]) for r in marg} == {1, 10}
    assert all(float(r["floor_tvd"]) > 0 for r in marg)


def test_tuned_settings_are_scored_on_other_chains_at_equal_steps_and_gradients(tmp_path):
    """The sweep's best alpha is the minimum over the sweep on its own chains; held_out.csv
    scores it on chains seeded apart, and also at equal gradient evaluations per chain (a
    multiple-try step costs 2 tries - 1)."""
    cfg = bm.MCMCBenchConfig(ns=(4,), betas=(0.42,), alphas=(2.66, 16.0), tries=(4,),
                             steps=70, trials=5)
    rows = bm.ising_table(cfg, tmp_path)
    held = bm.held_out_table(cfg, rows, tmp_path)
    by = {(r["comparison"], r["sampler"]): r for r in held}
    assert set(by) == {(c, s) for c in ("equal-steps", "equal-gradients")
                       for s in ("pncg", "mt-pncg", "iw-mt-pncg")}
    assert all(int(r["seed"]) == cfg.seed + bm.SCORING_SEED_OFFSET for r in held)
    tuned = bm.best_settings(rows)[("mt-pncg", 4, 0.42)]
    assert float(by[("equal-steps", "mt-pncg")]["alpha"]) == float(tuned["alpha"])
    assert by[("equal-steps", "mt-pncg")]["mean_final_tvd"] != tuned["mean_final_tvd"]
    assert int(by[("equal-gradients", "mt-pncg")]["steps"]) == 10  # 70 // 7
    assert int(by[("equal-gradients", "mt-pncg")]["nfe_per_chain"]) == 71
    assert int(by[("equal-gradients", "pncg")]["nfe_per_chain"]) == 71


def test_bench_mcmc_cli_quick_without_lm(tmp_path):
    r = CliRunner().invoke(app, ["bench", "mcmc", "--quick", "--skip-lm", "--out",
                                 str(tmp_path)])
    assert r.exit_code == 0, r.output
    for name in ("ising.csv", "marginal.csv", "toy.csv"):
        assert (tmp_path / name).stat().st_size > 0
    toy = list(csv.DictReader(open(tmp_path / "toy.csv")))
    best = {s: min(float(r["tvd"]) for r in toy if r["sampler"] == s)
            for s in ("pncg", "quest", "smc")}
    assert all(v < 0.3 for v in best.values()), best


@pytest.mark.parametrize("kwargs,message", [
    ({"alphas": (0.0,)}, "alpha=0.0 must be > 0"),
    ({"tries": (0,)}, "every number of tries must be >= 1"),
    ({"betas": (-1.0,)}, "every beta must be > 0"),
    ({"ns": (24,)}, "n <= 20"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bm.MCMCBenchConfig(**kwargs)


@pytest.mark.slow
def test_smollm2_energy_target_matches_the_ar_engine():
    """HFEnergy's log p (through embeddings) equals the engine's per-token log-probs."""
    import torch

    from parasample.ancestral import SamplingConfig, generate
    from parasample.bench.mcmc_lm import PROMPT, _NoStop
    from parasample.noise import IIDSource
    from parasample.targets.hf import smollm2
    from parasample.targets.hf_energy import HFEnergy

    lm = smollm2()
    ids, mask = lm.encode_prompts([PROMPT])
    target = HFEnergy(lm, ids[0], 6)
    gen = generate(_NoStop(lm), ids.expand(3, -1), mask.expand(3, -1),
                   IIDSource(3, generator=torch.Generator().manual_seed(0)),
                   SamplingConfig(max_new_tokens=6))
    assert torch.allclose(target.log_prob(gen.tokens).double(), gen.logprobs.sum(1), atol=1e-3)
