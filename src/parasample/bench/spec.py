"""``parasample bench spec``: exact speculative decoding against plain sequential sampling.

A *group* is one model, task and batch shape (batch 1: one sample per prompt; k: k samples
per prompt). It runs sequential sampling, every drafter x verifier of the group from the same
source and seed, and transformers' own ``generate`` with and without prompt lookup (the anchor,
SmolLM2 GSM8K batch 1). Every run is warmed up once on the first prompt, then timed ``reps``
times over all prompts, the order of the runs reversed and rotated from one repetition to the
next; a speedup is the ratio of tokens/s to sequential (or, for transformers' prompt lookup, to
its own generate) *within* a repetition, and the row keeps the median and the range of those
ratios. Each group's rows are appended to ``spec.csv`` when it finishes; a rerun skips finished
groups.

With ``model`` set to another causal LM (``qwen-coder-1.5b``) and ``draft`` to a draft model
of its tokenizer (``qwen-coder-0.5b``), the groups are that model on GSM8K under the instruct
protocol at batch 1 (the anchor: transformers' plain generate, prompt lookup and assisted
generation with the draft) and at k samples per prompt; every drafter (n-gram, sibling at k, the
draft model) with both verifiers, the draft model also with the adaptive draft length. ``costs.csv``
holds the cost model of each drafter: seconds per call of the target and the draft fed 1 and
D + 1 tokens at each batch, so that a drafter's speedup can be read as accepted tokens per call
over (verify cost + D x draft cost), both relative to one target token.

:mod:`parasample.bench.spec_tables` writes the two tables beside the timings: ``costs.csv``
(above) and ``identity.csv``, which answers when speculative output is token-identical in
float32: for every source (and arithmetic / stratified sampling carrying only a few bits of
their residual, see :func:`~parasample.noise.carry_code_point`) the fraction of SmolLM2 rows
(unseen GSM8K questions, k samples each) whose ``identical``-verifier output equals sequential
sampling's, at the bench's sampling settings and at temperature 1 without top-p.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from parasample.ancestral import SamplingConfig, generate
from parasample.bench.csvlog import ResumableCSV
from parasample.bench.timing import machine_fields, sync
from parasample.errors import InputError, require_at_least
from parasample.noise import derive_generator, make_source
from parasample.speculative import ModelDrafter, NGramDrafter, SiblingDrafter, SpecConfig
from parasample.speculative import generate as spec_generate

__all__ = ["SPEC_HEADER", "SpecBenchConfig", "Group", "groups", "real_model_preset",
           "run_group", "spec_rows"]

SPEC_HEADER = ["method", "drafter", "verify", "sampler", "model", "task", "batch", "draft_len",
               "tokens", "nfe", "tokens_per_nfe", "acceptance", "wall_s", "tokens_per_s",
               "speedup_vs_sequential", "speedup_min", "speedup_max", "reps",
               "identical_to_sequential", "device", "torch_threads"]
_KEY = ["method", "drafter", "verify", "sampler", "model", "task", "batch", "draft_len"]
#: SmolLM2's arithmetic prompts: the chain task in words (answers restate its numbers).
ARITH_INSTRUCTION = ("Work out the chain one step at a time, writing each step as "
                     "'name = value': {prompt}")


@dataclass(frozen=True)
class SpecBenchConfig:
    """Settings of one ``bench spec`` run (defaults: about 45 minutes on 2 cores).

    prompts: prompts per task at batch 1; k_prompts: prompts at k samples each; reps: timed
    repetitions of every run (after one warm-up); identity_prompts / identity_k /
    identity_tokens: the float32 identity table (0 prompts skips it).
    """

    prompts: int = 4
    k: int = 16  # samples per prompt of the k-sample rows
    model: str = "smollm2"  # the target: smollm2 (with the small AR pair) or a pinned model
    draft: str | None = None  # a pinned draft model for the target (adds model-drafter rows)
    k_prompts: int = 1
    max_new_tokens: int = 128
    draft_len: int = 4  # tokens drafted per verification (rows named "adaptive" adapt it)
    temperature: float = 0.7
    top_p: float = 0.95
    sampler: str = "iid"  # the source of the k-sample rows' uniforms
    toy_prompts: int = 8  # prompts of the small AR pair's one-sample rows (ar-arith)
    skip_lm: bool = False  # no SmolLM2 rows: the small AR pair only
    reps: int = 3
    identity_prompts: int = 5
    identity_k: int = 4
    identity_tokens: int = 48
    seed: int = 0

    def __post_init__(self):
        require_at_least(self, 1, "prompts", "k", "k_prompts", "max_new_tokens", "draft_len",
                         "toy_prompts", "reps", "identity_k", "identity_tokens")
        if self.draft is not None and self.smollm2:
            raise InputError("--draft needs --model (a target with the draft's tokenizer, e.g. "
                             "--model qwen-coder-1.5b --draft qwen-coder-0.5b).")
        if self.identity_prompts < 0:
            raise InputError(f"identity_prompts={self.identity_prompts} must be >= 0 (0 skips "
                             "the identity table).")

    @property
    def smollm2(self) -> bool:
        """The default study (toy pair and SmolLM2) rather than one target / draft pair."""
        return self.model == "smollm2"

    @classmethod
    def quick(cls, **kw) -> SpecBenchConfig:
        return replace(cls(prompts=1, k=4, max_new_tokens=24, toy_prompts=2, reps=1,
                           identity_prompts=1, identity_k=2, identity_tokens=12), **kw)


def real_model_preset() -> dict:
    """``bench spec --model`` (a model other than SmolLM2)'s defaults, sized to about 40
    minutes for the 1.5B target and 0.5B draft on 2 CPU cores: 2 GSM8K prompts at batch 1, one
    prompt at 8 samples, 128 new tokens, 2 timed repetitions, no identity table."""
    return {"prompts": 2, "k": 8, "k_prompts": 1, "max_new_tokens": 128, "reps": 2,
            "identity_prompts": 0}


@dataclass(frozen=True)
class Group:
    """One model x task x batch shape; ``methods`` are (drafter, verify) pairs."""

    model: str
    task: str
    k: int  # samples per prompt (1: batch 1)
    methods: tuple[tuple[str, str, bool], ...]  # (drafter, verify, adaptive draft length)
    anchor: bool = False  # also time transformers' generate with / without prompt lookup
    assisted: bool = False  # and with the draft model as its assistant_model

    @property
    def batch(self) -> str:
        return "1" if self.k == 1 else f"k={self.k}"


def groups(cfg: SpecBenchConfig) -> list[Group]:
    both = ("identical", "rejection")
    single = tuple((d, v, False) for d in ("ngram",) for v in both)
    many = single + tuple(("sibling", v, False) for v in both)
    if not cfg.smollm2:  # one target (/ draft) pair on GSM8K
        model = ()
        if cfg.draft:
            model = tuple(("model", v, a) for a in (False, True) for v in both)
        from parasample.targets.named import lm_label

        name = lm_label(cfg.model)
        return [Group(name, "gsm8k", 1, single + model, anchor=True, assisted=bool(cfg.draft)),
                Group(name, "gsm8k", cfg.k, many + model)]
    toy = tuple(("model", v, False) for v in both) + (("ngram", "identical", False),)
    out = [Group("ar-arith", "arith", 1, toy), Group("ar-arith", "arith", cfg.k,
                                                     toy + (("sibling", "identical", False),))]
    if not cfg.skip_lm:
        out += [Group("smollm2", "gsm8k", 1, single, anchor=True),
                Group("smollm2", "arith", 1, single),
                Group("smollm2", "gsm8k", cfg.k, many), Group("smollm2", "arith", cfg.k, many)]
    return out


def _texts(task: str, n: int, cfg: SpecBenchConfig, offset: int = 0) -> list[str]:
    """``n`` prompt texts of a task for a chat model, from ``offset`` on."""
    from parasample.tasks.arith import ArithChainTask

    if task == "gsm8k":
        from parasample.tasks.gsm8k import format_prompt, load_gsm8k, protocol_prompt

        prompt = format_prompt if cfg.smollm2 else protocol_prompt
        return [prompt(p.question) for p in load_gsm8k(limit=offset + n)[offset:]]
    return [ARITH_INSTRUCTION.format(prompt=p.prompt)
            for p in ArithChainTask().problems(offset + n, split="test", seed=cfg.seed)[offset:]]


def _prompts(group: Group, cfg: SpecBenchConfig, lm) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The group's prompts, one ``(ids [1, P], mask [1, P])`` each."""
    toy = group.model == "ar-arith"
    n = cfg.k_prompts if group.k > 1 else cfg.toy_prompts if toy else cfg.prompts
    if toy:
        from parasample.models.data import encode_prompts
        from parasample.tasks.arith import ArithChainTask, CharTokenizer

        ps = ArithChainTask().problems(n, split="test", seed=cfg.seed)
        ids = encode_prompts([p.prompt for p in ps], CharTokenizer())
        return [(ids[i:i + 1], torch.ones_like(ids[i:i + 1])) for i in range(n)]
    return [lm.encode_prompts([t]) for t in _texts(group.task, n, cfg)]


def _models(group: Group, cfg: SpecBenchConfig, device, dtype):
    """(target, draft model or None, sampling config) of a group."""
    from parasample.models.registry import load_ar
    from parasample.targets.named import load_lm

    if group.model == "ar-arith":
        lm = load_ar(device=device, dtype=dtype)
        draft = load_ar("ar-arith-draft", device=device, dtype=dtype)
        return lm, draft, SamplingConfig(temperature=1.0, max_new_tokens=lm.train_config.get(
            "gen_length", 48))
    draft = load_lm(cfg.draft, dtype, device) if cfg.draft else None
    return load_lm(cfg.model, dtype, device), draft, SamplingConfig(
        temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)


def _drafter(name: str, lm, draft_lm):
    if name == "model":
        return ModelDrafter(draft_lm, lm.vocab_size)
    return {"ngram": NGramDrafter, "sibling": SiblingDrafter}[name]()


def _tokens(out) -> int:
    """Tokens a run emitted: rows up to and including their EOS (ours) or a list of them."""
    if isinstance(out, int):
        return out
    return int(out.lengths.sum())


def run_group(group: Group, cfg: SpecBenchConfig, *, device="cpu", dtype=torch.float32,
              progress=None) -> list[dict]:
    """Sequential, every method of the group and (if asked) the transformers anchor, over the
    group's prompts: warmed up, then timed ``cfg.reps`` times in alternating orders; one row
    each."""
    lm, draft_lm, config = _models(group, cfg, device, dtype)
    prompts = _prompts(group, cfg, lm)
    base = {"sampler": cfg.sampler, "model": group.model, "task": group.task,
            "batch": group.batch, "reps": cfg.reps, **machine_fields(device, dtype)}

    def source(i):
        return make_source(cfg.sampler, group.k, group.k, generator=derive_generator(
            cfg.seed, group.model, group.task, group.k, i))

    # a run: (i, ids, mask, config) -> its output; keyed (method, drafter, verify, draft_len)
    runs: dict[tuple[str, str, str, str], Callable] = {
        ("sequential", "", "", ""): lambda i, ids, mask, config: generate(
            lm, ids, mask, source(i), config, samples_per_prompt=group.k)}
    for drafter, verify, adaptive in group.methods:
        spec = SpecConfig(draft_len=cfg.draft_len, verify=verify, adaptive=adaptive)
        runs[("speculative", drafter, verify, _draft_label(cfg, adaptive))] = (
            lambda i, ids, mask, config, spec=spec, drafter=drafter: spec_generate(
                lm, ids, mask, source(i), config, spec, _drafter(drafter, lm, draft_lm),
                samples_per_prompt=group.k))
    if group.anchor:
        runs.update(_anchor_runs(lm, draft_lm if group.assisted else None, cfg))
    warm = replace(config, max_new_tokens=min(config.max_new_tokens, 16))
    for fn in runs.values():  # warm-up: first calls allocate, load kernels, fill caches
        fn(0, *prompts[0], warm)
    walls: dict[tuple, list[float]] = {name: [] for name in runs}
    outs: dict[tuple, list] = {}
    names = list(runs)
    for rep in range(cfg.reps):
        order = names[rep // 2 % len(names):] + names[:rep // 2 % len(names)]
        for name in (order if rep % 2 == 0 else order[::-1]):
            sync(device)
            t0 = time.perf_counter()
            outs[name] = [runs[name](i, ids, mask, config)
                          for i, (ids, mask) in enumerate(prompts)]
            sync(device)
            walls[name].append(time.perf_counter() - t0)
        if progress is not None:
            progress(len(runs) / cfg.reps)
    return _rows(group, runs, outs, walls, base, cfg)


def _rows(group: Group, runs, outs, walls, base, cfg) -> list[dict]:
    """One CSV row per run: medians over the repetitions, speedups as per-repetition ratios."""
    seq = ("sequential", "", "", "")
    tokens = {name: sum(_tokens(o) for o in outs[name]) for name in runs}
    tps = {name: [tokens[name] / w for w in walls[name]] for name in runs}
    rows = []
    for name in runs:
        method, drafter, verify, draft_len = name
        ref = ("transformers", "", "", "") if method == "transformers" else seq
        ratios = [a / b for a, b in zip(tps[name], tps[ref], strict=True)]
        out = outs[name]
        spec = method == "speculative"
        nfe = sum(o.nfe for o in out) if method != "transformers" else ""
        proposed = sum(o.proposed for o in out) if spec else 0
        accepted = sum(o.accepted for o in out) if spec else 0
        same = ""
        if spec and verify == "identical":
            same = _identical_fraction(outs[seq], out, group.k)
        rows.append({**base, "method": method, "drafter": drafter, "verify": verify,
                     "draft_len": draft_len, "tokens": tokens[name],
                     "nfe": nfe, "tokens_per_nfe": round(tokens[name] / nfe, 3) if nfe else "",
                     "acceptance": round(accepted / proposed, 4) if proposed else "",
                     "wall_s": round(statistics.median(walls[name]), 3),
                     "tokens_per_s": round(statistics.median(tps[name]), 2),
                     "speedup_vs_sequential": "" if name in (seq, ref) else
                     round(statistics.median(ratios), 3),
                     "speedup_min": "" if name in (seq, ref) else round(min(ratios), 3),
                     "speedup_max": "" if name in (seq, ref) else round(max(ratios), 3),
                     "identical_to_sequential": same})
    return rows


def _identical_fraction(seq_outs, spec_outs, k: int) -> float:
    """Fraction of rows whose speculative tokens (up to EOS) equal sequential sampling's."""
    same = [bool(torch.equal(a.tokens[r, :int(a.lengths[r])], b.tokens[r, :int(b.lengths[r])]))
            for a, b in zip(seq_outs, spec_outs, strict=True) for r in range(k)]
    return round(sum(same) / len(same), 4)


def _draft_label(cfg: SpecBenchConfig, adaptive: bool) -> str:
    """The ``draft_len`` cell of a speculative row: D, or ``adaptive`` (from D)."""
    return "adaptive" if adaptive else str(cfg.draft_len)


def _anchor_runs(lm, draft_lm, cfg: SpecBenchConfig) -> dict:
    """transformers' ``generate(do_sample=True)`` plain, with ``prompt_lookup_num_tokens`` and
    (given a draft model) with ``assistant_model`` (its own RNG, seeded per prompt, so none is
    identical to ours): each returns the tokens it emitted (up to and including EOS)."""

    def run(extra):
        def fn(i, ids, mask, config):
            kw = dict(do_sample=True, temperature=config.temperature, top_p=config.top_p,
                      top_k=0, max_new_tokens=config.max_new_tokens, pad_token_id=lm.pad_id)
            torch.manual_seed(cfg.seed + i)  # transformers samples from the global RNG
            out = lm.model.generate(input_ids=ids.to(lm.device),
                                    attention_mask=mask.to(lm.device), **kw, **extra)
            new = out[0, ids.shape[1]:].tolist()
            return new.index(lm.eos_id) + 1 if lm.eos_id in new else len(new)
        return fn

    runs = {("transformers", "", "", ""): run({}),
            ("transformers", "prompt-lookup", "multinomial", str(cfg.draft_len)): run(
                {"prompt_lookup_num_tokens": cfg.draft_len})}
    if draft_lm is not None:  # transformers' own schedule of draft lengths
        runs[("transformers", "assisted", "multinomial", "transformers")] = run(
            {"assistant_model": draft_lm.model})
    return runs


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
                progress(_runs(group))
            continue
        for row in run_group(group, cfg, device=device, dtype=dtype, progress=progress):
            log.append(row)
    return log.rows


def _runs(group: Group) -> int:
    return len(group.methods) + 1 + 2 * group.anchor + group.assisted
