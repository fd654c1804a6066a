"""``parasample bench align``: samplers of reward-tilted LM targets at equal compute.

This module holds part (b); part (a) is :mod:`parasample.bench.align_toy`, part (c)
:mod:`parasample.bench.align_cache`; the CLI (``cli/bench_align.py``) runs all three.

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

Part (b), **a chat LM with a verifiable reward** (SmolLM2-135M-Instruct on single-digit
additions by default; ``--model qwen-coder-0.5b|1.5b`` on two-digit products, the short-answer
task of :func:`parasample.bench.passk_tasks.short_task`; r = 1 for the right number + 0.5 for
the number only, beta = 0.5): the expected reward of importance
resampling, QUEST, token SMC and resample-move SMC against model calls and wallclock, QUEST
and the moves of resample-move SMC on the KV cache kept across moves (``keep_cache``), with
SMC's log-evidence and KL-to-base estimates; ``lm_summary.csv`` compares each sampler's
wallclock to the time QUEST takes to reach the same reward.

Part (c), **cached QUEST** on the same chat LM. QUEST's move keeps a prefix
y_<i of the current sequence and regenerates the suffix; the token-by-token implementation feeds
the kept prefix back one model call per token, the prefilled one prefills it with the prompt in
one call (``cached``), the kept one attends to it in the cache kept across moves (``keep_cache``;
:func:`parasample.mcmc.quest.step`). All three run here from the same starting sequences and
the same uniforms, so they must visit the same states: the CSV records the fraction of moves
whose every chain is token-identical, the model calls and the wall time per move, and the
speedup. Each (chains, seed) unit runs the three variants and writes their rows together, so an
interrupted run leaves no half unit and a rerun computes only the missing ones.
"""

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

__all__ = ["LMAlignConfig", "LM_HEADER", "AdditionReward", "lm_rows", "lm_unit", "lm_summary"]


# -- part (b): SmolLM2 with a verifiable reward ----------------------------------------------

LM_HEADER = ["sampler", "size", "budget", "calls", "token_evals", "wall_s", "expected_reward",
             "accuracy", "log_evidence", "kl_to_base", "problems", "beta", "seed", "model",
             "device", "dtype", "torch_threads"]


@dataclass(frozen=True)
class LMAlignConfig:
    """Part (b): ``model`` (a name :func:`parasample.targets.named.load_lm` takes) on its
    short-answer questions (SmolLM2: single-digit additions; the Qwen models: two-digit
    products), reward r = 1 for the right number + 0.5 for a reply that is the number only,
    pi ~ p_LM exp(r / beta). ``problems`` questions, ``length`` new tokens (default: the
    task's, 10 for additions and 12 for products); QUEST runs ``chains`` chains per question
    for ``moves`` moves (cached); token SMC and resample-move SMC ``particles`` per question;
    importance resampling ``ir_sizes`` draws per question."""

    problems: int = 8
    length: int | None = None
    chains: int = 4
    moves: tuple[int, ...] = (1, 2, 4, 8, 12, 16)
    particles: int = 8
    ir_sizes: tuple[int, ...] = (4, 16)
    beta: float = 0.5
    seeds: int = 2
    seed: int = 0
    model: str = "smollm2"

    def __post_init__(self):
        from parasample.bench.passk_tasks import short_tokens

        if self.length is None:  # frozen: the task's own budget, set once
            object.__setattr__(self, "length", short_tokens(self.model))
        require_at_least(self, 1, "problems", "length", "chains", "particles", "seeds")
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
    """One sampler's rows on the model's short-answer questions (QUEST: one per recorded
    move)."""
    from parasample.bench.passk_tasks import short_task
    from parasample.smc import resample_move as rm
    from parasample.smc import smc
    from parasample.targets.named import lm_label

    task = short_task(cfg.model)
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
                     "model": lm_label(cfg.model), **machine_fields(lm.device, dtype)})

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
        st = quest.init(pad(out.tokens), reward, lm, rep(ids), rep(mask), sampling,
                        keep_cache=lm.keeps_columns)
        src = IIDSource(P * size, generator=g)
        # the kept cache's prefill of prompt + y is one more call, counted (equal work)
        calls, wall = out.nfe + int(lm.keeps_columns), time.perf_counter() - t0
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
                st, moved = rm.rejuvenate(u_move, st, lm, rep(ids), rep(mask), reward,
                                          cfg.beta, sampling, keep_cache=lm.keeps_columns,
                                          advance=t < L - 1)
                calls += moved.nfe
        w = torch.softmax(st.logw, -1)  # [P, N]
        r = st.reward.view(P, size)
        emit(1, calls, P * size, time.perf_counter() - t0, (w * r).sum(1),
             (w * (r >= 1)).sum(1), smc.final_log_evidence(st))
    return rows


def lm_rows(cfg: LMAlignConfig, out, progress=None, device="cpu", dtype=torch.float32
            ) -> list[dict]:
    """Run (or resume) part (b): ``lm.csv``, each unit written whole. A unit is keyed by its
    model too, so one folder can hold several models' rows without a rerun mixing them."""
    from parasample.targets.named import lm_label, load_lm

    csv = ResumableCSV(out / "lm.csv", LM_HEADER, ["model", "sampler", "size", "budget", "seed"])
    lm, rows, name = None, [], lm_label(cfg.model)
    for sampler, size in cfg.units():
        for seed in range(cfg.seeds):
            have = [r for r in csv.rows if (r["model"], r["sampler"], r["size"], r["seed"]) ==
                    (name, sampler, str(size), str(seed))]
            if not have:
                lm = lm or load_lm(cfg.model, dtype, device)
                have = lm_unit(cfg, lm, sampler, size, seed, dtype)
                for row in have:
                    csv.append(row)
            rows += have
            if progress:
                progress(f"{name} {sampler} {size} seed {seed}")
    return rows


def lm_summary(rows: list[dict]) -> list[dict]:
    """Per model and sampler (mean over seeds): final expected reward, calls and seconds; for
    the others than QUEST, the ratio of their seconds to the seconds the same model's QUEST
    needs to reach their expected reward (QUEST's first recorded move at or above it; blank if
    it never does), and to QUEST's seconds for its own final reward with whether they reach
    that reward (the issue's bar for resample-move SMC: <= 1/3)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        out += _model_summary(model, [r for r in rows if r["model"] == model])
    return out


def _model_summary(model: str, rows: list[dict]) -> list[dict]:
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
        row = {"model": model, "sampler": key[0], "size": key[1], "seeds": len(final),
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
