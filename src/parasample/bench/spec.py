"""``parasample bench spec``: exact speculative decoding against plain sequential sampling.

A *group* is one model, task and batch shape (batch 1: one sample per prompt; k: k samples
per prompt). It runs sequential sampling once, then every drafter x verifier of the group from
the same source and seed, and transformers' own ``generate`` with and without prompt lookup
(the anchor, SmolLM2 GSM8K batch 1), all in one sitting so that the speedups are ratios of one
run. Each group's rows are appended to ``spec.csv`` when it finishes; a rerun skips finished
groups.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV
from parasample.bench.timing import machine_fields
from parasample.errors import InputError
from parasample.noise import derive_generator, make_source
from parasample.speculative import ModelDrafter, NGramDrafter, SiblingDrafter, SpecConfig
from parasample.speculative import generate as spec_generate

__all__ = ["SPEC_HEADER", "SpecBenchConfig", "Group", "groups", "run_group", "spec_rows"]

SPEC_HEADER = ["method", "drafter", "verify", "sampler", "model", "task", "batch", "draft_len",
               "tokens", "nfe", "tokens_per_nfe", "acceptance", "wall_s", "tokens_per_s",
               "speedup_vs_sequential", "identical_to_sequential", "device", "torch_threads"]
_KEY = ["method", "drafter", "verify", "sampler", "model", "task", "batch", "draft_len"]

#: SmolLM2's arithmetic prompts: the chain task in words (answers restate its numbers).
ARITH_INSTRUCTION = ("Work out the chain one step at a time, writing each step as "
                     "'name = value': {prompt}")


@dataclass(frozen=True)
class SpecBenchConfig:
    """Settings of one ``bench spec`` run (defaults: about 10 minutes on 2 cores).

    prompts: prompts per task at batch 1; k_prompts: prompts at k samples each.
    """

    prompts: int = 4
    k: int = 16
    k_prompts: int = 1
    max_new_tokens: int = 128
    draft_len: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    sampler: str = "iid"
    toy_prompts: int = 8
    skip_lm: bool = False
    seed: int = 0

    def __post_init__(self):
        for name in ("prompts", "k", "k_prompts", "max_new_tokens", "draft_len", "toy_prompts"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)} must be >= 1.")

    @classmethod
    def quick(cls, **kw) -> SpecBenchConfig:
        return replace(cls(prompts=1, k=4, max_new_tokens=24, toy_prompts=2), **kw)


@dataclass(frozen=True)
class Group:
    """One model x task x batch shape; ``methods`` are (drafter, verify) pairs."""

    model: str
    task: str
    k: int  # samples per prompt (1: batch 1)
    methods: tuple[tuple[str, str], ...]
    anchor: bool = False  # also time transformers' generate with / without prompt lookup

    @property
    def batch(self) -> str:
        return "1" if self.k == 1 else f"k={self.k}"


def groups(cfg: SpecBenchConfig) -> list[Group]:
    both = ("identical", "rejection")
    single = tuple(("ngram", v) for v in both)
    many = single + tuple(("sibling", v) for v in both)
    toy = tuple(("model", v) for v in both) + (("ngram", "identical"),)
    out = [Group("ar-arith", "arith", 1, toy), Group("ar-arith", "arith", cfg.k,
                                                     toy + (("sibling", "identical"),))]
    if not cfg.skip_lm:
        out += [Group("smollm2", "gsm8k", 1, single, anchor=True),
                Group("smollm2", "arith", 1, single),
                Group("smollm2", "gsm8k", cfg.k, many), Group("smollm2", "arith", cfg.k, many)]
    return out


def _prompts(group: Group, cfg: SpecBenchConfig, lm) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The group's prompts, one ``(ids [1, P], mask [1, P])`` each."""
    from parasample.tasks.arith import ArithChainTask

    toy = group.model == "ar-arith"
    n = cfg.k_prompts if group.k > 1 else cfg.toy_prompts if toy else cfg.prompts
    if toy:
        from parasample.models.data import encode_prompts
        from parasample.tasks.arith import CharTokenizer

        ps = ArithChainTask().problems(n, split="test", seed=cfg.seed)
        ids = encode_prompts([p.prompt for p in ps], CharTokenizer())
        return [(ids[i:i + 1], torch.ones_like(ids[i:i + 1])) for i in range(n)]
    if group.task == "gsm8k":
        from parasample.tasks.gsm8k import format_prompt, load_gsm8k

        texts = [format_prompt(p.question) for p in load_gsm8k(limit=n)]
    else:
        texts = [ARITH_INSTRUCTION.format(prompt=p.prompt)
                 for p in ArithChainTask().problems(n, split="test", seed=cfg.seed)]
    return [lm.encode_prompts([t]) for t in texts]


def _drafter(name: str, lm, draft_lm):
    if name == "model":
        return ModelDrafter(draft_lm, lm.vocab_size)
    return {"ngram": NGramDrafter, "sibling": SiblingDrafter}[name]()


def run_group(group: Group, cfg: SpecBenchConfig, *, device="cpu", dtype=torch.float32,
              progress=None) -> list[dict]:
    """Sequential, every method of the group and (if asked) the transformers anchor, over the
    group's prompts: one row each."""
    from parasample.models.registry import load_ar
    from parasample.targets.hf import smollm2

    if group.model == "ar-arith":
        lm, draft_lm = load_ar(device=device, dtype=dtype), load_ar("ar-arith-draft",
                                                                    device=device, dtype=dtype)
        config = SamplingConfig(temperature=1.0, max_new_tokens=lm.train_config.get(
            "gen_length", 48))
    else:
        lm, draft_lm = smollm2(dtype, device), None
        config = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=cfg.max_new_tokens)
    prompts = _prompts(group, cfg, lm)
    base = {"sampler": cfg.sampler, "model": group.model, "task": group.task,
            "batch": group.batch, **machine_fields(device, dtype)}

    def source(i):
        return make_source(cfg.sampler, group.k, group.k, generator=derive_generator(
            cfg.seed, group.model, group.task, group.k, i))

    def timed(fn):
        t0 = time.perf_counter()
        out = [fn(i, ids, mask) for i, (ids, mask) in enumerate(prompts)]
        return out, time.perf_counter() - t0

    seq, seq_s = timed(lambda i, ids, mask: generate(lm, ids, mask, source(i), config,
                                                     samples_per_prompt=group.k))
    seq_tokens = sum(int(o.lengths.sum()) for o in seq)
    seq_tps = seq_tokens / seq_s
    rows = [_row(base, "sequential", "", "", "", seq_tokens, sum(o.nfe for o in seq), "",
                 seq_s, seq_tps, "")]
    _tick(progress)
    for drafter, verify in group.methods:
        spec = SpecConfig(draft_len=cfg.draft_len, verify=verify)
        outs, wall = timed(lambda i, ids, mask, spec=spec, drafter=drafter: spec_generate(
            lm, ids, mask, source(i), config, spec, _drafter(drafter, lm, draft_lm),
            samples_per_prompt=group.k))
        proposed, accepted = sum(o.proposed for o in outs), sum(o.accepted for o in outs)
        same = ""
        if verify == "identical":
            rows_same = [bool(torch.equal(_cut(a.tokens[r], a.lengths[r]),
                                          _cut(b.tokens[r], b.lengths[r])))
                         for a, b in zip(seq, outs, strict=True) for r in range(group.k)]
            same = round(sum(rows_same) / len(rows_same), 4)
        rows.append(_row(base, "speculative", drafter, verify, cfg.draft_len,
                         sum(int(o.lengths.sum()) for o in outs), sum(o.nfe for o in outs),
                         round(accepted / proposed, 4) if proposed else "", wall, seq_tps,
                         same))
        _tick(progress)
    if group.anchor:
        rows += _anchor(lm, prompts, config, cfg, base)
        _tick(progress)
    return rows


def _tick(progress) -> None:
    if progress is not None:
        progress(1)


def _cut(tokens: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    return tokens[:int(length)]


def _row(base, method, drafter, verify, draft_len, tokens, nfe, acceptance, wall, seq_tps,
         same) -> dict:
    """One CSV row; ``seq_tps`` is the sequential run's tokens per second (the rejection
    verifier's samples, and so their token counts, differ from the sequential run's)."""
    tps = tokens / wall if wall > 0 else float("nan")
    return {**base, "method": method, "drafter": drafter, "verify": verify,
            "draft_len": draft_len, "tokens": tokens, "nfe": nfe,
            "tokens_per_nfe": round(tokens / nfe, 3), "acceptance": acceptance,
            "wall_s": round(wall, 3), "tokens_per_s": round(tps, 2),
            "speedup_vs_sequential": "" if method == "sequential" else round(tps / seq_tps, 3),
            "identical_to_sequential": same}


def _anchor(lm, prompts, config: SamplingConfig, cfg: SpecBenchConfig, base: dict) -> list[dict]:
    """transformers' ``generate(do_sample=True)`` with and without ``prompt_lookup_num_tokens``
    (its own RNG, so neither is identical to ours): the speedup it gets over itself."""
    kw = dict(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=0,
              max_new_tokens=config.max_new_tokens, pad_token_id=lm.pad_id)
    results = {}
    for name, extra in (("transformers", {}),
                        ("transformers-prompt-lookup",
                         {"prompt_lookup_num_tokens": cfg.draft_len})):
        torch.manual_seed(cfg.seed)  # transformers samples from the global RNG: pin it
        tokens, t0 = 0, time.perf_counter()
        for ids, mask in prompts:
            out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(
                lm.device), **kw, **extra)
            new = out[0, ids.shape[1]:].tolist()
            tokens += new.index(lm.eos_id) + 1 if lm.eos_id in new else len(new)
        results[name] = (tokens, time.perf_counter() - t0)
    (t_plain, s_plain), (t_pl, s_pl) = results["transformers"], \
        results["transformers-prompt-lookup"]
    # transformers' rows: speedups over its own plain generate; it reports no call counts
    rows = [_row(base, "transformers", "", "", "", t_plain, 1, "", s_plain, t_plain / s_plain,
                 ""),
            _row(base, "transformers", "prompt-lookup", "multinomial", cfg.draft_len, t_pl, 1, "",
                 s_pl, t_plain / s_plain, "")]
    for row in rows:
        row["nfe"], row["tokens_per_nfe"] = "", ""
    return rows


def spec_rows(cfg: SpecBenchConfig, out: Path, *, device="cpu", dtype=torch.float32,
              progress=None) -> list[dict]:
    """Run every unfinished group, appending to ``out/spec.csv``; returns all rows."""
    log = ResumableCSV(out / "spec.csv", SPEC_HEADER, _KEY)
    for group in groups(cfg):
        first = {"method": "sequential", "drafter": "", "verify": "", "sampler": cfg.sampler,
                 "model": group.model, "task": group.task, "batch": group.batch,
                 "draft_len": ""}
        if log.done(first):
            if progress is not None:
                progress(len(group.methods) + 1 + group.anchor)
            continue
        for row in run_group(group, cfg, device=device, dtype=dtype, progress=progress):
            log.append(row)
    return log.rows


def n_steps(cfg: SpecBenchConfig) -> int:
    """Progress units of a run (sequential + methods + anchor per group)."""
    return sum(len(g.methods) + 1 + g.anchor for g in groups(cfg))
