"""GRPO on the exactly enumerable task: exact rewards and gradients, exact groups, learning,
and the bench part's CSVs."""

from __future__ import annotations

import csv

import pytest
import torch
from typer.testing import CliRunner

from parasample.cli import app
from parasample.errors import InputError
from parasample.noise import SOURCES, derive_generator
from parasample.rl.enumerable import (
    EnumGRPOConfig,
    EnumTask,
    TabularPolicy,
    draw_groups,
    exact_gradient,
    gradient_study,
    grpo_gradients,
    score_vectors,
    train_enum,
)
from parasample.rl.grpo import clipped_objective, group_advantages
from parasample.targets import ToyARLM
from tests.helpers import chi2_pvalue

SMALL = EnumTask(vocab_size=3, length=3, target_sum=4)  # 27 sequences


def test_the_default_task_starts_low_but_not_at_zero_and_its_optimum_is_reachable():
    task = EnumTask()
    X = task.sequences()
    with torch.no_grad():
        p = TabularPolicy(task.start_table(1)).sequence_logprobs(X)[0].exp()
    assert abs(float(p.sum()) - 1) < 1e-12
    start = float((p * task.reward(X)).sum())
    assert 0.05 <= start <= 0.3 and abs(start - 0.0859) < 5e-4  # the value the docs state
    assert float(task.reward(X).max()) == 1.0  # some sequence sums to the target


def test_sequence_logprobs_equal_the_toy_lm_with_the_same_table():
    task = EnumTask()
    toy = ToyARLM(task.vocab_size, task.length, generator=torch.Generator().manual_seed(0))
    toy.table = task.start_table(1)[0].float()
    X = task.sequences()
    ours = TabularPolicy(task.start_table(1)).sequence_logprobs(X)[0]
    assert torch.allclose(ours.float(), toy.log_prob(X), atol=1e-5)


@pytest.mark.parametrize("sampler", SOURCES)
def test_every_row_of_a_group_is_an_exact_draw_of_the_policy(sampler):
    """Chi-square of each row position's sequences against pi (27 outcomes, 3000 groups of 4:
    rows of one group are correlated, so each position is tested on its own)."""
    table = SMALL.start_table(1)[0]
    policy = TabularPolicy(table[None])
    with torch.no_grad():
        tokens = draw_groups(policy, torch.zeros(3000, dtype=torch.long), sampler, 4,
                             derive_generator(0, "test-enum", sampler))
        p = policy.sequence_logprobs(SMALL.sequences())[0].exp()
    for j in range(4):
        counts = torch.bincount(SMALL.index(tokens[:, j]), minlength=27)
        assert chi2_pvalue(counts, p) > 1e-4, (sampler, j)


def test_the_closed_form_grpo_update_is_minus_the_gradient_of_the_library_objective():
    table = SMALL.start_table(1)[0]
    g = derive_generator(1, "test-enum-grad")
    with torch.no_grad():
        tokens = draw_groups(TabularPolicy(table[None]), torch.zeros(3, dtype=torch.long),
                             "iid", 8, g)
    closed = grpo_gradients(SMALL, table, tokens)  # [3, P]
    for r in range(3):
        policy = TabularPolicy(table[None])
        logp = policy.token_logprobs(torch.zeros(8, dtype=torch.long), tokens[r])
        adv = group_advantages(SMALL.reward(tokens[r])[None])[0]
        loss = clipped_objective(logp, logp.detach(), adv, torch.ones_like(logp), 0.2)
        auto = -torch.autograd.grad(loss, policy.table)[0].flatten()
        assert torch.allclose(closed[r], auto, atol=1e-12)


def test_the_exact_gradient_is_the_score_function_sum_and_matches_finite_differences():
    table = SMALL.start_table(1)[0]
    X = SMALL.sequences()
    p = TabularPolicy(table[None]).sequence_logprobs(X)[0].exp().detach()
    grad = exact_gradient(SMALL, table)
    assert torch.allclose(grad, (p * SMALL.reward(X)) @ score_vectors(SMALL, table),
                          atol=1e-12)

    def J(t):
        with torch.no_grad():
            return float((TabularPolicy(t[None]).sequence_logprobs(X)[0].exp()
                          * SMALL.reward(X)).sum())
    for i in torch.topk(grad.abs(), 3).indices:
        e = torch.zeros_like(grad)
        e[i] = 1e-6
        fd = (J(table + e.view_as(table)) - J(table - e.view_as(table))) / 2e-6
        assert abs(fd - float(grad[i])) < 1e-6


def test_gradient_study_splits_the_error_into_variance_and_bias():
    iid4 = gradient_study(SMALL, "iid", 4, 4096)
    assert iid4["mse"] == pytest.approx(iid4["variance"] + iid4["bias2"])
    assert 0 < iid4["cosine"] < 1 and 0 <= iid4["zero_variance"] < 1
    iid16 = gradient_study(SMALL, "iid", 16, 4096)
    assert iid16["relative_variance"] < iid4["relative_variance"]  # more samples per group
    assert iid16["zero_variance"] < iid4["zero_variance"]


def test_grpo_learns_the_task_from_exact_rewards_and_is_reproducible():
    cfg = EnumGRPOConfig(sampler="lattice", group_size=4, samples_per_step=16, steps=40,
                         seeds=6, lr=0.1)
    a, b = train_enum(cfg), train_enum(cfg)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["reward"].shape == (41, 6) and a["zero_variance"].shape == (40, 6)
    assert float(a["reward"][-1].mean()) > float(a["reward"][0].mean()) + 0.3


@pytest.mark.parametrize("kw,message", [
    (dict(sampler="sobol", group_size=6), "power-of-two"),
    (dict(group_size=8, samples_per_step=20), "multiple of G"),
    (dict(group_size=1), "G >= 2"),
    (dict(lr=2.0), "lr=2.0"),
])
def test_bad_configs_say_what_to_change(kw, message):
    with pytest.raises(InputError, match=message):
        EnumGRPOConfig(**kw)


def test_bench_rl_enum_part_writes_its_csvs_and_resumes(tmp_path):
    args = ["bench", "rl", "--quick", "--part", "enum", "--enum-sampler", "iid",
            "--enum-sampler", "stratified", "--out", str(tmp_path)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    names = ["enum_runs.csv", "enum_curves.csv", "enum_gradient.csv", "enum_summary.csv"]
    before = {n: (tmp_path / n).read_text() for n in names}
    assert (tmp_path / "enum.png").exists() and not (tmp_path / "rl.csv").exists()
    rows = list(csv.DictReader(open(tmp_path / "enum_summary.csv")))
    assert [r["sampler"] for r in rows] == ["iid", "stratified"]
    assert rows[0]["vs_iid_50"] in ("", "1.0")
    assert len(list(csv.DictReader(open(tmp_path / "enum_runs.csv")))) == 2 * 4
    again = CliRunner().invoke(app, args)  # finished cells are read back, not rerun
    assert again.exit_code == 0 and {n: (tmp_path / n).read_text() for n in names} == before


def test_enum_summary_takes_medians_over_seeds_and_ratios_to_iid():
    from parasample.bench.rl_enum import summary_rows

    def run(sampler, seed, s50, s90):
        return {"sampler": sampler, "group_size": "4", "seed": str(seed), "steps_to_50": s50,
                "steps_to_90": s90, "final_reward": "0.9", "zero_variance": "0.5"}

    runs = [run("iid", 0, "10", "40"), run("iid", 1, "20", "inf"), run("iid", 2, "30", "inf"),
            run("lattice", 0, "5", "20"), run("lattice", 1, "15", "30"),
            run("lattice", 2, "10", "inf")]
    grads = [{"sampler": "iid", "group_size": "4", "relative_mse": "20"}]
    iid, lat = summary_rows(runs, grads, EnumTask())
    assert (iid["median_steps_50"], iid["reached_50"], iid["vs_iid_50"]) == (20.0, 3, 1.0)
    assert iid["median_steps_90"] == float("inf") and iid["reached_90"] == 1
    assert iid["ci_low_50"] <= 20 <= iid["ci_high_50"] and iid["relative_mse"] == "20"
    assert (lat["median_steps_50"], lat["vs_iid_50"]) == (10.0, 0.5)
    assert lat["median_steps_90"] == 30.0 and lat["vs_iid_90"] == ""  # iid's median is inf
    assert lat["relative_mse"] == "" and lat["start_reward"] == round(0.0859138, 4)
