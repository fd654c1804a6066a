"""Batched, cached ancestral sampling from an AR LM, every token drawn by inverse CDF from uniforms.

The token of row i at step t is ``icdf_categorical(q_t(. | y_<t), u[i, t])`` where q_t is the
model's next-token distribution after temperature and top-p, and ``u[:, t]`` is dimension t of a
:class:`~parasample.noise.UniformSource`. So i.i.d., scrambled-Sobol, lattice and antithetic
sampling are this same code with a different source, and since each row of every source is
i.i.d. U[0, 1), **each sample is an exact draw from q** whatever the source.

A sampler is ``init`` plus a pure ``step``; :func:`generate` is the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from parasample.devices import model_device
from parasample.errors import InputError
from parasample.noise import UniformSource, carry_code_point, icdf_categorical, icdf_residual
from parasample.workspace import Workspace

__all__ = ["SamplingConfig", "AncestralState", "StepInfo", "Generation", "sampling_probs",
           "top_p_mask", "top_p_mask_by_sort", "Draw", "draw", "init", "prefill", "step",
           "generate", "check_batch", "lengths_with_eos", "select_rows"]


def lengths_with_eos(tokens: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """Tokens of each row up to and including its first EOS (``L`` if none): ``[B, L] -> [B]``."""
    L = tokens.shape[1]
    if eos_id is None:
        return torch.full((tokens.shape[0],), L, device=tokens.device)
    is_eos = tokens == eos_id
    return torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, L)


@dataclass(frozen=True)
class SamplingConfig:
    """How each next-token distribution is shaped; identical for every sampler.

    Attributes:
        temperature: logits are divided by it; must be > 0 (use a small value for near-greedy).
        top_p: nucleus mass in (0, 1]; 1 disables it.
        max_new_tokens: tokens generated per row (rows stop early at EOS).
        ignore_eos: EOS is an ordinary token and every row runs max_new_tokens (fixed-length
            timing, as ``min_new_tokens`` does in transformers).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    ignore_eos: bool = False

    def __post_init__(self):
        if not self.temperature > 0:
            raise InputError(f"temperature={self.temperature} must be > 0; for near-greedy "
                             "decoding use a small value such as 0.01.")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p={self.top_p} must lie in (0, 1]; 1 disables nucleus "
                             "sampling.")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise InputError(f"max_new_tokens={self.max_new_tokens} must be an integer >= 1.")

    @property
    def q_is_p(self) -> bool:
        """True when sampling draws from the model itself (temperature 1, no top-p)."""
        return self.temperature == 1.0 and self.top_p == 1.0


class AncestralState(NamedTuple):
    """Everything the next step needs.

    tokens: ``[B, t]`` generated tokens so far (EOS-padded after a row finishes).
    logprobs: ``[B, t]`` log q of each generated token (0 for padding after EOS).
    logits: ``[B, V]`` raw next-token logits from the model.
    cache: model state (KV cache), opaque here.
    done: ``[B]`` bool, the row has emitted EOS.
    residual: ``[B]`` float64, where each row's last uniform fell inside its token's interval
        (rescaled to [0, 1)), carried into the next uniform by arithmetic sampling; None for
        every other source.
    carry_bits: the source's ``carry_bits`` (None: the whole residual is carried).
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    logits: torch.Tensor
    cache: Any
    done: torch.Tensor
    residual: torch.Tensor | None = None
    carry_bits: int | None = None


class StepInfo(NamedTuple):
    """Diagnostics of one step: ``nfe`` model calls made (0 or 1), ``n_active`` unfinished rows,
    ``logp [B]`` log p_LM of each drawn token under the *raw* model (temperature 1, no top-p; 0
    on finished rows): what samplers of p_LM-based targets need beside log q (SMC's weights,
    QUEST's proposal correction)."""

    nfe: int
    n_active: int
    logp: torch.Tensor


class Generation(NamedTuple):
    """Output of :func:`generate`.

    tokens: ``[B, T]`` generated tokens, EOS-padded; T <= max_new_tokens.
    logprobs: ``[B, T]`` per-token log q (0 on padding).
    lengths: ``[B]`` tokens per row up to and including its EOS.
    nfe: model calls (1 prefill + one per decoding step).
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    nfe: int


def sampling_probs(logits: torch.Tensor, config: SamplingConfig,
                   workspace: Workspace | None = None) -> torch.Tensor:
    """``logits [B, V]`` -> ``[B, V]`` float64 probabilities after temperature and top-p.

    Top-p keeps the smallest set of most likely tokens whose mass reaches ``top_p`` (always at
    least the most likely one) and renormalises; see :func:`top_p_mask`.

    The float64 copy and the softmax go into ``workspace``'s buffers (a fresh one when None;
    no autograd): a caller that passes one reuses them across draws, and the result is then a
    view that the workspace's next use overwrites. Reused or fresh, the bits are the same
    (``tests/test_ancestral.py::test_a_workspace_gives_the_same_bits_as_fresh_tensors``).
    """
    work = Workspace() if workspace is None else workspace
    x = work.get("logits64", logits.shape, torch.float64, logits.device)  # [B, V]
    torch.nan_to_num(x.copy_(logits), nan=float("-inf"), out=x)
    if config.temperature != 1.0:  # x / 1.0 is x, bit for bit
        x.div_(config.temperature)
    probs = torch.softmax(x, dim=-1, out=work.get("probs", x.shape, x.dtype, x.device))  # [B, V]
    if config.top_p < 1.0:
        probs = torch.where(top_p_mask(probs, config.top_p), probs, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


#: candidates of the first :func:`top_p_mask` round; each further round takes 8x as many
TOP_P_FIRST_CANDIDATES = 64


def top_p_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs [B, V]`` -> ``[B, V]`` bool: the tokens top-p keeps.

    The rule: order tokens by probability, highest first and equal probabilities by token id
    (lowest first); keep each token whose mass strictly before it is below ``top_p`` (so the
    first token always). It is computed without sorting the vocabulary: ``topk`` takes the m
    largest probabilities (m = 64, then 8x more until they hold ``top_p`` in every row; a full
    sort only if that reaches a quarter of V), their cumulative sum finds the last kept value
    v and how many tokens are kept, and a token is kept when its probability exceeds v or equals
    it and it is among the lowest ids of that tie.

    On the CPU the kept set is that of a full stable sort for every row
    (``tests/test_ancestral.py::test_top_p_mask_equals_the_full_sort_rule*``: exhaustive on
    small vocabularies, 49k bfloat16 ties, SmolLM2's logits). It rests on a prefix of
    ``cumsum`` equalling the full ``cumsum``'s to the last bit, which a parallel CUDA scan need
    not keep: there a row whose cumulative mass meets ``top_p`` within rounding may keep one
    token more or fewer than the full sort (untested on CUDA). The coverage check is one host
    sync per call.
    """
    B, V = probs.shape
    m = min(V, TOP_P_FIRST_CANDIDATES)
    while True:
        if 4 * m >= V:
            m = V
        vals = torch.topk(probs, m, dim=-1, sorted=True).values  # [B, m] descending
        mass = torch.cumsum(vals, dim=-1)  # [B, m]
        # covered when the m candidates hold top_p with a margin above float64 rounding: every
        # token past them then has mass before it >= top_p, as in the full sort
        if m == V or bool((mass[:, -1] >= top_p + 1e-9).all()):
            break
        m *= 8
    kept = ((mass - vals) < top_p).sum(-1, keepdim=True).clamp(min=1)  # [B, 1] tokens kept
    last = vals.gather(-1, kept - 1)  # [B, 1] the smallest kept probability
    above = probs > last  # [B, V] kept whatever the order of ties
    tie = probs == last  # [B, V]
    room = kept - above.sum(-1, keepdim=True)  # [B, 1] tied tokens that still fit
    return above | (tie & (torch.cumsum(tie.long(), dim=-1) <= room))


def top_p_mask_by_sort(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The rule of :func:`top_p_mask` by its definition, one stable sort of the whole
    vocabulary per row: the reference its tests and ``parasample bench engines`` compare with."""
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # [B, V]
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly before each token
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def select_rows(model, state: AncestralState, rows: torch.Tensor) -> AncestralState:
    """The state whose row b is row ``rows[b]`` of ``state`` (``rows`` may repeat rows: k
    samples from one prefill, SMC resampling). The model's cache is reordered through
    ``model.reorder``, which may work in place: ``state`` is not used afterwards."""
    return AncestralState(
        tokens=state.tokens[rows], logprobs=state.logprobs[rows], logits=state.logits[rows],
        cache=model.reorder(state.cache, rows), done=state.done[rows],
        residual=None if state.residual is None else state.residual[rows],
        carry_bits=state.carry_bits)


def init(model, prompt_ids: torch.Tensor, attention_mask: torch.Tensor) -> AncestralState:
    """Prefill the prompts (``[B, P]``, left-padded) and return the initial state (1 NFE)."""
    logits, cache = model.start(prompt_ids, attention_mask)
    B, dev = prompt_ids.shape[0], logits.device
    return AncestralState(
        tokens=torch.empty(B, 0, dtype=torch.long, device=dev),
        logprobs=torch.empty(B, 0, dtype=torch.float64, device=dev),
        logits=logits,
        cache=cache,
        done=torch.zeros(B, dtype=torch.bool, device=dev),
    )


#: elements of one draw's ``[rows, V]`` float64 scratch tensors: :func:`step` draws in chunks
#: of ``DRAW_ELEMENTS // V`` rows (at least one), so 2048 rows of a 151,936-token vocabulary
#: work in 128 MB buffers (110 rows) instead of 2.5 GB ones. A row's draw reads its own row
#: alone, so the tokens, log-probs and residuals are the same bits however the batch is cut
#: (``tests/test_ancestral.py::test_a_step_drawn_in_row_chunks_gives_the_same_bits``).
DRAW_ELEMENTS = 1 << 24


class Draw(NamedTuple):
    """One token per row: ``tok``, ``logq`` (under q), ``logp`` (under the raw model; None
    where not asked for) and the arithmetic residual (None for other sources), each ``[B]``."""

    tok: torch.Tensor
    logq: torch.Tensor
    logp: torch.Tensor | None
    residual: torch.Tensor | None


def draw(logits: torch.Tensor, u: torch.Tensor, config: SamplingConfig, *,
         residual: torch.Tensor | None = None, prefix_logq: torch.Tensor | None = None,
         carry_bits: int | None = None, forced: torch.Tensor | None = None,
         raw_logp: bool = True, workspace: Workspace | None = None) -> Draw:
    """The token of each row of ``logits [B, V]`` under ``config`` from its uniform ``u [B]``:
    the draw of :func:`step` and of the transformers processor, in chunks of
    :data:`DRAW_ELEMENTS` // V rows.

    With ``residual [B]`` (arithmetic sampling; NaN on fresh rows) the code point carries on
    (:func:`~parasample.noise.carry_code_point` with the rows' ``prefix_logq [B]`` and
    ``carry_bits``) and the new residual is returned. ``forced [B]`` imposes a token where
    >= 0 (its residual is then NaN: it did not come from u). ``raw_logp`` False skips log p.
    """
    if residual is not None:
        u = carry_code_point(residual, u, prefix_logq, carry_bits)
    B, V = logits.shape
    rows = max(1, DRAW_ELEMENTS // V)
    parts = [_draw_rows(logits[i:i + rows], u[i:i + rows], config, residual is not None,
                        None if forced is None else forced[i:i + rows], raw_logp, workspace)
             for i in range(0, B, rows)]
    return Draw(*(None if parts[0][j] is None else torch.cat([d[j] for d in parts])
                  for j in range(4)))  # each [B]


def _draw_rows(logits: torch.Tensor, u: torch.Tensor, config: SamplingConfig, carry: bool,
               forced: torch.Tensor | None, raw_logp: bool, workspace: Workspace | None) -> Draw:
    """:func:`draw` on one chunk of rows, ``logits [b, V]``, ``u [b]`` (already carried)."""
    probs = sampling_probs(logits, config, workspace)  # [b, V]
    tok = icdf_categorical(probs, u, workspace)  # [b]
    residual = icdf_residual(probs, u, tok, workspace) if carry else None
    if forced is not None:
        tok = torch.where(forced >= 0, forced, tok)
        if residual is not None:
            residual = torch.where(forced >= 0, torch.nan, residual)
    logq = torch.log(probs.gather(1, tok[:, None]))[:, 0]  # [b]
    if config.q_is_p or not raw_logp:
        return Draw(tok, logq, logq if raw_logp else None, residual)
    raw = torch.log_softmax(torch.nan_to_num(logits.to(torch.float64), nan=float("-inf")),
                            dim=-1)  # [b, V]
    return Draw(tok, logq, raw.gather(1, tok[:, None])[:, 0], residual)


def step(u: torch.Tensor, state: AncestralState, model, config: SamplingConfig,
         *, advance: bool = True, forced: torch.Tensor | None = None,
         workspace: Workspace | None = None) -> tuple[AncestralState, StepInfo]:
    """Draw one token per row from its uniform ``u [B]`` and (if ``advance``) run the model on it.

    ``forced [B]`` (optional) imposes a token on the rows where it is >= 0 (teacher forcing, as
    QUEST does to keep a prefix); their log-prob is still that of the forced token under q.
    Finished rows receive EOS with log-prob 0. Pure in the sampler's own tensors (never
    modified); the model's KV cache may be extended in place, as transformers' caches are, so a
    state is not reused once stepped. ``workspace`` is scratch memory for the draw
    (:mod:`parasample.workspace`), which runs in chunks of rows (:data:`DRAW_ELEMENTS`): the
    same tokens with or without it, and nothing returned refers to it.
    """
    carry = state.residual is not None  # arithmetic sampling: the code point carries on
    tok, logq, logp, residual = draw(
        state.logits, u, config, residual=state.residual,
        prefix_logq=state.logprobs.sum(1) if carry else None, carry_bits=state.carry_bits,
        forced=forced, workspace=workspace)
    eos = None if config.ignore_eos else model.eos_id
    if eos is not None:
        tok = torch.where(state.done, eos, tok)
        logq = torch.where(state.done, 0.0, logq)
        logp = torch.where(state.done, 0.0, logp)
        done = state.done | (tok == eos)
    else:
        done = state.done
    logits, cache, nfe = state.logits, state.cache, 0
    if advance and not bool(done.all()):
        logits, cache = model.advance(state.cache, tok)
        nfe = 1
    new = AncestralState(
        tokens=torch.cat([state.tokens, tok[:, None]], dim=1),
        logprobs=torch.cat([state.logprobs, logq[:, None]], dim=1),
        logits=logits, cache=cache, done=done, residual=residual, carry_bits=state.carry_bits,
    )
    return new, StepInfo(nfe=nfe, n_active=int((~done).sum()), logp=logp)


def check_batch(model, prompt_ids: torch.Tensor, source: UniformSource, config: SamplingConfig,
                samples_per_prompt: int) -> int:
    """Validate a generation request (samples per prompt, context, source rows) -> rows B."""
    P = prompt_ids.shape[0]
    if not (isinstance(samples_per_prompt, int) and samples_per_prompt >= 1):
        raise InputError(f"samples_per_prompt={samples_per_prompt} must be an integer >= 1.")
    B = P * samples_per_prompt
    limit = getattr(model, "max_length", None)
    if limit is not None and prompt_ids.shape[1] + config.max_new_tokens - 1 > limit:
        raise InputError(f"a prompt of {prompt_ids.shape[1]} tokens plus max_new_tokens="
                         f"{config.max_new_tokens} does not fit the model's context of {limit} "
                         "tokens; shorten the prompt or lower max_new_tokens.")
    if source.n != B:
        raise InputError(f"the uniform source serves {source.n} rows but there are {P} prompts x "
                         f"{samples_per_prompt} samples = {B} rows; build the source with n={B}.")
    return B


def prefill(model, prompt_ids: torch.Tensor, attention_mask: torch.Tensor,
            samples_per_prompt: int = 1, *, carry: bool = False,
            carry_bits: int | None = None) -> AncestralState:
    """:func:`init` once per prompt, its state repeated ``samples_per_prompt`` times
    (prompt-major rows); ``carry`` starts arithmetic sampling's residuals (NaN: fresh rows),
    carried whole or to ``carry_bits``."""
    P, dev = prompt_ids.shape[0], prompt_ids.device
    state = init(model, prompt_ids, attention_mask)
    if carry:
        state = state._replace(residual=torch.full((P,), torch.nan, dtype=torch.float64,
                                                   device=dev), carry_bits=carry_bits)
    if samples_per_prompt > 1:
        rows = torch.arange(P, device=dev).repeat_interleave(samples_per_prompt)  # [B]
        state = select_rows(model, state, rows)
    return state


def generate(model, prompt_ids: torch.Tensor, attention_mask: torch.Tensor,
             source: UniformSource, config: SamplingConfig, *, samples_per_prompt: int = 1,
             progress=None) -> Generation:
    """Sample up to ``config.max_new_tokens`` tokens, ``samples_per_prompt`` rows per prompt of
    ``prompt_ids [P, L]``.

    Each prompt is prefilled once and its KV cache repeated, so the output has
    ``B = P * samples_per_prompt`` rows, prompt-major (row ``p * samples_per_prompt + j`` is
    sample j of prompt p). ``source.n`` must equal B, and its correlated groups of ``source.k``
    rows then fall inside one prompt's samples when ``source.k`` divides samples_per_prompt.
    Step t consumes dimension t of the source for every row (finished rows too, so dimensions
    stay aligned across rows). Stops when every row has emitted EOS. ``progress``, if given, is
    called with the step index after each step (the engine itself never prints).
    """
    check_batch(model, prompt_ids, source, config, samples_per_prompt)
    dev = model_device(model)
    state = prefill(model, prompt_ids.to(dev), attention_mask.to(dev), samples_per_prompt,
                    carry=source.carries_residual, carry_bits=source.carry_bits)
    nfe, work = 1, Workspace()
    for t in range(config.max_new_tokens):
        u = source.uniform().to(dev)  # [B], float64 (generated on the CPU: same on every device)
        last = t == config.max_new_tokens - 1
        state, info = step(u, state, model, config, advance=not last, workspace=work)
        nfe += info.nfe
        if progress is not None:
            progress(t)
        if info.n_active == 0:
            break
    eos = None if config.ignore_eos else model.eos_id
    return Generation(state.tokens, state.logprobs, lengths_with_eos(state.tokens, eos), nfe)
