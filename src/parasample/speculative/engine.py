"""Exact speculative decoding of an AR LM: drafts verified in one forward, every number from a
:class:`~parasample.noise.UniformSource`.

State convention: each row has emitted ``count`` tokens; the last one (the *pending* token) is
not yet in the target's cache. A step feeds ``[pending, d_0 .. d_{D-1}]`` (the drafter's D
guesses) in one :meth:`extend` call, which gives the target's next-token logits after each of
them, and the verifier decides how many of the D drafts the row keeps, plus one token of its
own: a row gains between 1 and D + 1 tokens per model call, and the rejected positions are
rolled back per row (``model.rollback``).

Two verifiers:

* ``identical``: token n of a row is what sequential sampling draws there,
  ``ancestral.step`` on the target's logits with the row's uniform of dimension n (and, for
  arithmetic sampling, the residual carried from token n - 1). The draft d_j is kept while it
  equals that token; the first token that differs is emitted instead. So the output is *token
  for token* the output of :func:`parasample.ancestral.generate` with the same source, for every
  source (i.i.d., Sobol, lattice, antithetic, arithmetic, stratified), whatever the drafter:
  speculation changes the number of model calls, never the samples.
* ``rejection`` (Chen et al. 2023; Leviathan et al. 2023): d_j, drawn from the drafter's
  distribution q_j (a point mass for n-gram and sibling drafts), is kept with probability
  min(1, p_j(d_j) / q_j(d_j)); else the token is drawn from the normalised residual
  (p_j - q_j)+, and after D kept drafts a bonus token is drawn from p_D. Each emitted token is
  exactly distributed as p given the row's prefix provided the draft is independent of the
  uniforms that test it and draw the residual, given that prefix (the standard argument).
  Which uniforms (:class:`SpecNoise`): a row's first token and its drafts (the model drafter
  samples) come from the source, token n's draft from dimension n; every acceptance test and
  residual or bonus draw comes from a second, i.i.d. stream private to the row (dimensions 2n
  and 2n + 1 of an :class:`~parasample.noise.IIDSource` seeded from the source's generator).
  Proof of the independence: a draft for position n of row b is a function of the row's
  prefix, of source uniforms (the row's own dimension n for a model draft) and, for sibling
  drafts, of the other rows' tokens, which are functions of source uniforms and of those rows'
  private streams; row b's private uniforms of position n enter none of these (before the row
  emits position n nothing has read them; a window position that was evaluated but not emitted
  reveals nothing, as its token is discarded), and they are independent of the source and of
  every other row's stream. Drawing the tests from the source instead would tie them to the
  sibling rows' uniforms of the same dimension under a correlated source (antithetic, Sobol,
  lattice), and a sibling draft would then depend on its own test (the 0.2 outcome of a 0.8 /
  0.2 position came out at 0.29 under antithetic; tested). So each row is an exact draw for
  every source and drafter; the source correlates the rows' first tokens and their model drafts
  only (arithmetic sampling's code point drives the first token; the residual is not carried),
  so the rows of a group are close to independent: use ``identical`` to keep a source's joint
  law.

``p`` is the target's sampling distribution (temperature, top-p) and q the drafter's under the
same temperature and top-p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from parasample.ancestral import (
    SamplingConfig,
    check_batch,
    lengths_with_eos,
    prefill,
)
from parasample.devices import model_device
from parasample.errors import InputError
from parasample.noise import IIDSource, UniformSource, UniformTape
from parasample.speculative.verify import adapt_draft_len, draw_token, verify_window

__all__ = ["VERIFIERS", "SpecConfig", "SpecNoise", "SpecState", "SpecInfo", "SpecGeneration",
           "DraftContext", "draw_token", "init", "step", "generate"]

#: The verifiers, by name.
VERIFIERS = ("identical", "rejection")


@dataclass(frozen=True)
class SpecConfig:
    """How speculation runs.

    Attributes:
        draft_len: D, drafted tokens per row and step (>= 1); a step feeds D + 1 tokens.
            With ``adaptive`` it is the first step's D.
        verify: ``identical`` (token-identical to sequential sampling with the same source) or
            ``rejection`` (Chen / Leviathan speculative sampling; exact in law).
        adaptive: grow / shrink D between 1 and ``max_draft_len`` from step to step by the
            drafts kept (:func:`~parasample.speculative.verify.adapt_draft_len`, the rule of the
            masked-diffusion decoder too); the tokens (identical) and the law (rejection) are
            those of a fixed D.
    """

    draft_len: int = 4
    verify: str = "identical"
    adaptive: bool = False
    max_draft_len: int = 16

    def __post_init__(self):
        if not (isinstance(self.draft_len, int) and self.draft_len >= 1):
            raise InputError(f"draft_len={self.draft_len!r} must be an integer >= 1 (tokens "
                             "drafted per step; 4 to 8 is typical).")
        if self.adaptive and not (isinstance(self.max_draft_len, int)
                                  and self.max_draft_len >= self.draft_len):
            raise InputError(f"max_draft_len={self.max_draft_len!r} must be an integer >= "
                             f"draft_len={self.draft_len} (the adaptive rule's ceiling).")
        if self.verify not in VERIFIERS:
            raise InputError(f"unknown verifier {self.verify!r}; choose one of "
                             f"{', '.join(VERIFIERS)}.")

    @property
    def widest(self) -> int:
        """The largest D a step may draft."""
        return self.max_draft_len if self.adaptive else self.draft_len


class SpecNoise:
    """The uniforms of speculative decoding, by token index n and row (see the module docstring).

    ``identical``: the draft, the test (unused) and the draw of token n all read the source's
    dimension n, the uniform sequential sampling uses there (a model drafter that draws with the
    target's own uniform drafts the target's token wherever the two distributions agree).
    ``rejection``: the first token and the drafts read the source; the tests and the residual /
    bonus draws of tokens n >= 1 read dimensions 2n and 2n + 1 of a private i.i.d. stream.
    """

    def __init__(self, source: UniformSource, verify: str):
        self.source = UniformTape(source)
        self.carry_bits = source.carry_bits
        self.private = None
        if verify == "rejection":
            seed = int(torch.randint(0, 2**62, (1,), generator=source.generator))
            self.private = UniformTape(IIDSource(source.n,
                                                 generator=torch.Generator().manual_seed(seed)))

    def first(self, rows: torch.Tensor) -> torch.Tensor:
        """``[R]`` the uniform of each row's first token (dimension 0 of the source)."""
        return self.source.at(torch.zeros(rows.numel(), 1, dtype=torch.long), rows)[:, 0]

    def draft(self, n: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``n [R, m]`` token indices -> ``[R, m]`` the drafts' uniforms."""
        return self.source.at(n, rows)

    def test(self, n: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The acceptance tests' uniforms (rejection only)."""
        return self.private.at(2 * n, rows)

    def draw(self, n: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The uniforms of the tokens the verifier draws itself (n >= 1)."""
        return self.source.at(n, rows) if self.private is None else self.private.at(2 * n + 1,
                                                                                     rows)


class SpecState(NamedTuple):
    """What the next speculative step needs.

    tokens: ``[B, W]`` emitted tokens in the first ``count[b]`` columns (EOS or 0 after).
    logprobs: ``[B, W]`` log q of each emitted token (0 elsewhere).
    count: ``[B]`` tokens emitted per row; ``tokens[b, count[b] - 1]`` is the pending token.
    done: ``[B]`` bool, the row has emitted EOS.
    residual: ``[B]`` float64 arithmetic-sampling residual after the pending token, or None.
    rows: ``[B']`` the rows still running (no EOS, fewer than max_new_tokens): finished rows
        leave the batch, so they cost no compute and never run past the context.
    cache: the target's state for ``rows``: the prompt and every emitted token but the pending.
    draft: the drafter's own state for ``rows``.
    draft_len: D of the next step (``spec.draft_len`` unless the rule is adaptive).
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    count: torch.Tensor
    done: torch.Tensor
    residual: torch.Tensor | None
    rows: torch.Tensor
    cache: Any
    draft: Any
    draft_len: int


class SpecInfo(NamedTuple):
    """Diagnostics of one step: ``nfe`` target calls (1), ``draft_nfe`` drafter model calls,
    ``proposed`` and ``accepted`` drafts summed over the rows that were still running,
    ``emitted`` tokens added, ``n_active`` rows still running after the step."""

    nfe: int
    draft_nfe: int
    proposed: int
    accepted: int
    emitted: int
    n_active: int


class SpecGeneration(NamedTuple):
    """Output of :func:`generate`: the fields of :class:`parasample.ancestral.Generation`
    (tokens, logprobs, lengths, nfe: target calls including the prefill) and the totals of
    :class:`SpecInfo` (``draft_nfe``: the draft model's calls after its own prefill)."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    nfe: int
    draft_nfe: int
    proposed: int
    accepted: int
    steps: int

    @property
    def acceptance(self) -> float:
        """Fraction of drafted tokens kept (NaN when nothing was drafted)."""
        return self.accepted / self.proposed if self.proposed else float("nan")


class DraftContext(NamedTuple):
    """What a drafter sees when it proposes D tokens per row.

    tokens, count, done: as in :class:`SpecState` (the emitted tokens so far).
    logq: ``[B]`` log q of each row's emitted tokens (arithmetic sampling's carry needs it).
    residual: ``[B]`` carried residual, or None.
    u: ``[B, D]`` the uniform each draft position would be drawn with (see
        :meth:`SpecNoise.draft`); only sampling drafters (a draft model) use it.
    config: the sampling configuration (temperature and top-p apply to drafts too).
    want_q: the verifier needs the distributions the drafts were drawn from (rejection).
    carry_bits: the source's ``carry_bits`` (how the residual is carried).
    """

    tokens: torch.Tensor
    count: torch.Tensor
    done: torch.Tensor
    logq: torch.Tensor
    residual: torch.Tensor | None
    u: torch.Tensor
    config: SamplingConfig
    want_q: bool = False
    carry_bits: int | None = None


def init(model, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, noise: SpecNoise,
         config: SamplingConfig, spec: SpecConfig, drafter, samples_per_prompt: int = 1,
         *, carry: bool = False) -> SpecState:
    """Prefill (1 target call), draw each row's first token as sequential sampling does, and
    start the drafter."""
    dev = model_device(model)
    prompt_ids, attention_mask = prompt_ids.to(dev), attention_mask.to(dev)
    first = prefill(model, prompt_ids, attention_mask, samples_per_prompt,
                    carry=carry and spec.verify == "identical", carry_bits=noise.carry_bits)
    B = first.logits.shape[0]
    width = config.max_new_tokens + spec.widest + 1  # room for a whole window past the end
    u = noise.first(torch.arange(B)).to(dev)
    one = draw_token(u, first.logits, torch.zeros(B, dtype=torch.float64, device=dev),
                     first.residual, first.done, model, config, carry_bits=noise.carry_bits)
    pad = model.eos_id if model.eos_id is not None and not config.ignore_eos else 0
    tokens = torch.full((B, width), pad, dtype=torch.long, device=dev)
    tokens[:, 0] = one.tokens[:, 0]
    logprobs = torch.zeros(B, width, dtype=torch.float64, device=dev)
    logprobs[:, 0] = one.logprobs[:, 0]
    draft = drafter.init(prompt_ids, attention_mask, samples_per_prompt)
    count = torch.ones(B, dtype=torch.long, device=dev)
    return _drop_finished(SpecState(tokens, logprobs, count, one.done, one.residual,
                                    torch.arange(B, device=dev), first.cache, draft,
                                    spec.draft_len),
                          model, drafter, config)


def _drop_finished(state: SpecState, model, drafter, config: SamplingConfig) -> SpecState:
    """Remove the rows that are done or full from the batch (cache and drafter state)."""
    r = state.rows
    running = ~state.done[r] & (state.count[r] < config.max_new_tokens)  # [B']
    if bool(running.all()):
        return state
    keep = running.nonzero()[:, 0]
    if keep.numel() == 0:
        return state._replace(rows=r[keep], cache=None, draft=None)
    return state._replace(rows=r[keep], cache=model.reorder(state.cache, keep),
                          draft=drafter.select(state.draft, keep))


def step(noise: SpecNoise, state: SpecState, model, config: SamplingConfig, spec: SpecConfig,
         drafter) -> tuple[SpecState, SpecInfo]:
    """Draft, verify in one target call, roll the rejected positions back, and let the rows
    that finished leave the batch. The model's and drafter's caches are updated in place, as
    in :func:`parasample.ancestral.step`; the state's own tensors are not."""
    r = state.rows  # [B'] running rows
    dev = state.count.device
    count = state.count[r]
    # the last fed position stays within what sequential sampling feeds (the context)
    D = min(state.draft_len, config.max_new_tokens - 1 - int(count.max()))
    tokens = state.tokens[r]  # [B', W]
    pending = tokens.gather(1, (count - 1)[:, None])  # [B', 1]
    n = count[:, None] + torch.arange(D, device=dev)
    ctx = DraftContext(tokens, count, state.done[r], state.logprobs[r].sum(1),
                       None if state.residual is None else state.residual[r],
                       noise.draft(n, r).to(dev), config,
                       want_q=spec.verify == "rejection", carry_bits=noise.carry_bits)
    draft, q, dstate, draft_nfe = drafter.propose(state.draft, ctx, D)  # [B', D], [B', D, V]
    D = draft.shape[1]  # a drafter may propose fewer (none: a plain one-token step)
    logits, cache = model.extend(state.cache, torch.cat([pending, draft], dim=1))
    window, window_lq, n_new, kept, done, residual = verify_window(ctx, r, logits, draft, q, noise,
                                                            model, spec)
    # keep the pending token and the accepted drafts (n_new - 1 of them); forget the rest
    cache = model.rollback(cache, D + 1 - n_new)
    idx = count[:, None] + torch.arange(D + 1, device=dev)  # [B', D+1]
    valid = torch.arange(D + 1, device=dev)[None] < n_new[:, None]
    new_tokens = state.tokens.clone()
    new_tokens[r] = tokens.scatter(1, idx, torch.where(valid, window, tokens.gather(1, idx)))
    lp = state.logprobs[r]
    new_logprobs = state.logprobs.clone()
    new_logprobs[r] = lp.scatter(1, idx, torch.where(valid, window_lq, lp.gather(1, idx)))
    new_count = state.count.clone()
    new_count[r] = count + n_new
    new_done = state.done.clone()
    new_done[r] = done
    new_residual = None
    if state.residual is not None:
        new_residual = state.residual.clone()
        new_residual[r] = residual
    dstate = drafter.commit(dstate, count + n_new)
    draft_len = (adapt_draft_len(state.draft_len, kept + 1, D, spec.max_draft_len)
                 if spec.adaptive else state.draft_len)
    new = _drop_finished(SpecState(new_tokens, new_logprobs, new_count, new_done, new_residual,
                                   r, cache, dstate, draft_len), model, drafter, config)
    return new, SpecInfo(nfe=1, draft_nfe=draft_nfe, proposed=D * r.numel(),
                         accepted=int(kept.sum()), emitted=int(n_new.sum()),
                         n_active=new.rows.numel())


def generate(model, prompt_ids: torch.Tensor, attention_mask: torch.Tensor,
             source: UniformSource, config: SamplingConfig, spec: SpecConfig, drafter, *,
             samples_per_prompt: int = 1, progress=None) -> SpecGeneration:
    """Speculative :func:`parasample.ancestral.generate`: same arguments and rows (prompt-major,
    ``samples_per_prompt`` per prompt), plus the speculation config and a drafter (see
    :mod:`parasample.speculative.drafters`). With ``spec.verify == "identical"`` the tokens are
    those of ``ancestral.generate`` with the same source. ``progress``, if given, is called with
    the number of tokens emitted so far after each step."""
    for method in ("extend", "rollback"):
        if not callable(getattr(model, method, None)):
            raise InputError(f"{type(model).__name__} has no {method}(): speculative decoding "
                             "needs a model that verifies several tokens in one call and rolls "
                             "rows back (transformers causal LMs, the shipped AR models).")
    check_batch(model, prompt_ids, source, config, samples_per_prompt)
    noise = SpecNoise(source, spec.verify)
    state = init(model, prompt_ids, attention_mask, noise, config, spec, drafter,
                 samples_per_prompt, carry=source.carries_residual)
    nfe = 1
    draft_nfe = proposed = accepted = steps = 0
    while state.rows.numel():
        state, info = step(noise, state, model, config, spec, drafter)
        nfe, draft_nfe, steps = nfe + info.nfe, draft_nfe + info.draft_nfe, steps + 1
        proposed, accepted = proposed + info.proposed, accepted + info.accepted
        if progress is not None:
            progress(int(state.count.sum()))
    T = int(state.count.max())
    tokens, logprobs = state.tokens[:, :T], state.logprobs[:, :T]
    eos = None if config.ignore_eos else model.eos_id
    return SpecGeneration(tokens, logprobs, lengths_with_eos(tokens, eos), nfe, draft_nfe,
                          proposed, accepted, steps)
