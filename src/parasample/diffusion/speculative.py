"""Exact speculative decoding of a masked diffusion LM: several one-token steps per model call,
token-identical to one-token-per-step decoding.

The sequential sampler S is :func:`parasample.diffusion.decode` with :class:`FixedSteps` at one
token per step (``steps == gen_length``), no cache, a given score, temperature, block length
and source; its step t reads the logits of its current state and the step's own block of
uniforms ``u_t`` (``[2, block_length]``, whatever happens at other steps).

Each call of :func:`step` (FreeDave / Spiffy / SPOT's scheme, with the sampling source):

1. **draft**: simulate S for k steps on the *stale* logits (those of the last verified context):
   positions chosen by S's score on them, tokens drawn with step t + j's uniforms; the drafted
   states x^(1) .. x^(k) follow;
2. **verify**: run the model once over the k + 1 contexts x^(0) (the current state) .. x^(k)
   (one batched forward of k + 1 rows per sequence);
3. **replay**: S's step j on context x^(j)'s true logits with u_{t+j} (and, for arithmetic
   sampling, the residual carried through the true steps); commit while the replayed step
   equals the draft, and the first replayed step that differs (or the step after the last
   draft): 1 to k + 1 steps per call;
4. keep the logits of the last verified context for the next draft.

Every committed step is S's own step on S's own context with S's uniforms, so the output is
S's, token for token, for every score, temperature, block length and source (arithmetic
sampling's carried code point included), and whatever the drafts are (a drafter that is always
wrong costs one call per step, as S). Tested in float64 against :func:`decode` on the shipped
dLLM and on another masked LM (``tests/test_diffusion_speculative.py``); in float32 a k + 1-row
forward can round differently from S's one-row forward, which the benchmark's
``identical_to_sequential`` column measures.

Draft length k is fixed, or adaptive (:attr:`SpecDecodeConfig.adaptive`: doubled after a call
whose every row accepted all its drafts, halved after one where no row accepted half). The
dual / prefix caches are approximations of S with other logits; a verification pass of full
contexts cannot reproduce them, so they are refused.

**Law-exact variant** (``SpecDecodeConfig(verify="rejection")``, T > 0, a score that does not
read the draw: random order or top probability). S's step is an action (position, token): the
position is a function of the step's confidence uniforms ``u_t[1]`` and the logits (random order:
of the uniforms alone), the token a draw from the tempered conditional p there. Given ``u_t[1]``
the draft's action has law q(a) = [pos = pos_draft] q_pos(token) on the stale logits and S's
K(a) = [pos = pos_true] p_pos(token) on the true ones. Speculative sampling on actions keeps the
drafted action with probability min(1, K/q) and otherwise draws from (K - q)+: a draft at another
position than S's is always rejected and S's position drawn from p; at S's position the token is
kept with min(1, p/q), else drawn from (p - q)+. The tests and residual draws read a private
i.i.d. stream of the row (dimensions 2t and 2t + 1 for S's step t), which no draft depends on,
and a draft's token reads ``u_t[0]`` only, so each committed action has S's law given the
context and ``u_t[1]`` (Chen et al. 2023, Leviathan et al. 2023): every row's output has S's law,
though not S's tokens for the seed. A carried code point (arithmetic, stratified) is not carried
here; each row then draws from its own uniforms, still exactly. A draft at S's position is
kept with probability sum min(p, q), the most any coupling of p and q allows; the identical
verifier's inverse-CDF coupling keeps it at most that often (as often with two tokens). Tested
against the closed-form law of S on an enumerable masked LM, every source, random order and
top probability, a good and a bad drafter
(``tests/test_diffusion_speculative.py::test_rejection_variant_draws_the_exact_law_of_s``:
any TVD-0.02 deviation detected with probability >= 0.98).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from parasample.devices import model_device
from parasample.diffusion.caches import NoCache
from parasample.diffusion.decode import DecodeConfig, check_source, choose, proposal_logits
from parasample.diffusion.rules import FixedSteps
from parasample.errors import InputError
from parasample.noise import IIDSource, UniformSource, UniformTape, icdf_categorical
from parasample.speculative.verify import adapt_draft_len, rejection_token

VERIFIERS = ("identical", "rejection")

__all__ = ["VERIFIERS", "SpecDecodeConfig", "SpecDecodeState", "SpecDecodeInfo", "SpecDecoded",
           "check", "init", "step", "decode", "stale_drafter"]


@dataclass(frozen=True)
class SpecDecodeConfig:
    """draft_len: k, S's steps drafted per call (the call runs k + 1 contexts); adaptive: grow
    / shrink k between 1 and ``max_draft_len`` by the calls' acceptance; verify: ``identical``
    (S's tokens for the seed) or ``rejection`` (S's law; see the module docstring)."""

    draft_len: int = 4
    adaptive: bool = False
    max_draft_len: int = 16
    verify: str = "identical"

    def __post_init__(self):
        if not (isinstance(self.draft_len, int) and 1 <= self.draft_len <= self.max_draft_len):
            raise InputError(f"draft_len={self.draft_len!r} must be an integer in 1.."
                             f"{self.max_draft_len} (S's steps drafted per model call).")
        if self.verify not in VERIFIERS:
            raise InputError(f"verify={self.verify!r}: choose one of {', '.join(VERIFIERS)}.")


class SpecDecodeState(NamedTuple):
    """x: ``[B, P + G]`` tokens; t: ``[B]`` S's steps taken by each row (its committed
    tokens); residual / logq: ``[B]`` arithmetic sampling's carry (None otherwise); stale:
    ``[B, G, V]`` the answer logits of each row's last verified context (None before the first
    call); rows: ``[B']`` rows still decoding; draft_len: k of the next call."""

    x: torch.Tensor
    t: torch.Tensor
    residual: torch.Tensor | None
    logq: torch.Tensor | None
    stale: torch.Tensor | None
    rows: torch.Tensor
    draft_len: int


class SpecDecodeInfo(NamedTuple):
    """committed: ``[B']`` steps each running row committed this call (1..k+1); drafted: steps
    drafted per row; forward_rows: contexts in the call's forward; nfe: model calls (1)."""

    committed: torch.Tensor
    drafted: int
    forward_rows: int
    nfe: int


class SpecDecoded(NamedTuple):
    """tokens ``[B, G]``; nfe: model calls; forward_rows: contexts evaluated in all; steps: S's
    steps (= G per row); committed: the ``[calls, rows]``-flattened list of steps committed per
    row and call (the acceptance histogram)."""

    tokens: torch.Tensor
    nfe: int
    forward_rows: int
    committed: list[int]

    @property
    def calls_per_token(self) -> float:
        return self.nfe / self.tokens.shape[1]


def check(cfg: DecodeConfig, spec: SpecDecodeConfig | None = None) -> None:
    """S must be one-token-per-step decoding without a cache; the rejection verifier needs
    sampled tokens and a score that does not read them."""
    if spec is not None and spec.verify == "rejection":
        if cfg.temperature == 0:
            raise InputError("the rejection verifier tests sampled tokens; at temperature 0 S "
                             "is deterministic: use verify='identical' (the same output).")
        if cfg.score.uses_draw:
            raise InputError(f"the rejection verifier needs a score that does not read the drawn "
                             f"token (S's position must not depend on it): use score=random or "
                             f"top_prob, not {cfg.score.name}.")
    if not isinstance(cfg.rule, FixedSteps) or cfg.steps != cfg.gen_length:
        raise InputError(f"speculative decoding reproduces one-token-per-step decoding: use the "
                         f"fixed-steps rule with steps = gen_length = {cfg.gen_length} (got "
                         f"{type(cfg.rule).__name__}, steps={cfg.steps}).")
    if not isinstance(cfg.cache, NoCache):
        raise InputError(f"speculative decoding cannot verify against the {cfg.cache.name} "
                         "cache: its keys and values come from an earlier context, which a "
                         "verification pass over full contexts does not reproduce; use "
                         "--cache none.")


def _uniforms(tape: UniformTape | None, t: torch.Tensor, rows: torch.Tensor, cfg: DecodeConfig,
              offset: int, dev) -> torch.Tensor:
    """Step t's ``[R, 2, Lb]`` uniforms of each row (S draws one block of 2 Lb per step, after
    the code point of a carrying source), zeros where S draws none."""
    Lb = cfg.block_length
    if tape is None:
        return torch.zeros(rows.numel(), 2, Lb, dtype=torch.float64, device=dev)
    dims = offset + t[:, None].cpu() * 2 * Lb + torch.arange(2 * Lb)  # [R, 2 Lb]
    return tape.at(dims, rows.cpu()).view(-1, 2, Lb).to(dev)


def _s_step(x, t, answer_logits, u, residual, logq, cfg: DecodeConfig, P: int, mask_id: int,
            carry_bits):
    """S's step on each row: ``x [R, T]`` at step ``t [R]``, its answer logits ``[R, G, V]``
    -> (position ``[R]`` in the answer, token ``[R]``, residual, logq)."""
    R, Lb = x.shape[0], cfg.block_length
    dev = x.device
    idx = (t // Lb)[:, None] * Lb + torch.arange(Lb, device=dev)  # [R, Lb] answer positions
    V = answer_logits.shape[-1]
    logits = answer_logits.gather(1, idx[..., None].expand(R, Lb, V))  # [R, Lb, V]
    xb = x.gather(1, P + idx)
    one = torch.ones(R, 1, dtype=torch.long, device=dev)
    commit, tok, residual, logq = choose(u, xb, logits, cfg, mask_id,
                                         lambda conf: FixedSteps().select(conf, 0, one),
                                         residual, logq, carry_bits)
    j = commit.float().argmax(1)  # exactly one position of each row
    return idx.gather(1, j[:, None])[:, 0], tok.gather(1, j[:, None])[:, 0], residual, logq


def _answer_logits(model, xs: torch.Tensor, mask: torch.Tensor | None, P: int) -> torch.Tensor:
    out = model.logits(xs) if mask is None else model.logits(xs, mask)
    return out[:, P:].float()  # [R, G, V]


def init(model, prompt: torch.Tensor, cfg: DecodeConfig, spec: SpecDecodeConfig,
         code_point: torch.Tensor | None = None) -> SpecDecodeState:
    """All answer positions masked, no stale logits (the first call drafts nothing)."""
    check(cfg)
    B = prompt.shape[0]
    x = torch.cat([prompt, torch.full((B, cfg.gen_length), model.mask_id, dtype=prompt.dtype,
                                      device=prompt.device)], dim=1)
    zeros = None if code_point is None else torch.zeros(B, dtype=torch.float64,
                                                        device=prompt.device)
    return SpecDecodeState(x, torch.zeros(B, dtype=torch.long, device=prompt.device),
                           code_point, zeros, None, torch.arange(B, device=prompt.device),
                           spec.draft_len)


def stale_drafter(stale: torch.Tensor) -> torch.Tensor:
    """The default drafter: S simulated on the last verified context's logits, as they are."""
    return stale


def _tempered(logits: torch.Tensor, cfg: DecodeConfig, mask_id: int) -> torch.Tensor:
    """``[R, V]`` float64 tempered probabilities of one position, the mask token excluded (as
    :func:`~parasample.diffusion.decode.choose` draws)."""
    return torch.softmax(proposal_logits(logits, mask_id).double() / cfg.temperature, dim=-1)


def _rejection_step(u: torch.Tensor, pos: torch.Tensor, draft, true_logits: torch.Tensor,
                    draft_logits: torch.Tensor, cfg: DecodeConfig, mask_id: int):
    """The law-exact verifier's step: ``u [R, 2]`` (test, residual draw) from the private
    stream, ``pos [R]`` S's position on the true logits, ``draft`` its (position, token),
    ``true_logits`` / ``draft_logits`` ``[R, G, V]``. Returns (position, token, accepted)."""
    R = pos.numel()
    rows = torch.arange(R, device=pos.device)
    d_pos, d_tok = draft
    p = _tempered(true_logits[rows, pos], cfg, mask_id)  # [R, V] S's token law at S's position
    q = _tempered(draft_logits[rows, d_pos], cfg, mask_id)  # the draft's, at its position
    u_test, u_draw = u[:, 0], u[:, 1]
    tok = rejection_token(p, d_tok, q, u_test, u_draw)
    # a draft at another position has K = 0: rejected, S's position drawn from p
    at_pos = pos == d_pos
    tok = torch.where(at_pos, tok, icdf_categorical(p, u_draw))
    # (p - q)+ is 0 at a rejected draft's token, so a kept token equals the draft iff accepted
    return pos, tok, at_pos & (tok == d_tok)


def step(tape: UniformTape | None, state: SpecDecodeState, model, cfg: DecodeConfig,
         spec: SpecDecodeConfig, attention_mask: torch.Tensor | None = None, *,
         offset: int = 0, carry_bits: int | None = None, drafter=stale_drafter,
         private: UniformTape | None = None) -> tuple[SpecDecodeState, SpecDecodeInfo]:
    """Draft, verify the k + 1 contexts in one forward, replay S and commit (see the module
    docstring). ``drafter(stale [R, G, V]) -> [R, G, V]``: the logits S is simulated on to
    draft (any drafter keeps the output S's). ``private``: the rows' i.i.d. stream of the
    rejection verifier's tests and residual draws (``spec.verify == "rejection"``). Pure in the
    state's tensors."""
    rejection = spec.verify == "rejection"
    if rejection and private is None:
        raise InputError("the rejection verifier needs the rows' private stream (private=).")
    G, P = cfg.gen_length, state.x.shape[1] - cfg.gen_length
    r = state.rows
    dev = state.x.device
    R = r.numel()
    x, t = state.x[r], state.t[r]
    res = None if state.residual is None else state.residual[r]
    lq = None if state.logq is None else state.logq[r]
    mask = None if attention_mask is None else attention_mask[r]
    k = 0 if state.stale is None else min(state.draft_len, G - 1 - int(t.min()))
    k = max(k, 0)
    # 1. draft k steps of S on the stale logits
    contexts, drafts = [x], []
    dx, dres, dlq = x, res, lq
    draft_logits = None if not k else drafter(state.stale[r])
    for j in range(k):
        tj = (t + j).clamp(max=G - 1)
        u = _uniforms(tape, tj, r, cfg, offset, dev)
        pos, tok, dres, dlq = _s_step(dx, tj, draft_logits, u, dres, dlq, cfg, P,
                                      model.mask_id, carry_bits)
        dx = dx.clone()
        dx[torch.arange(R, device=dev), P + pos] = tok
        contexts.append(dx)
        drafts.append((pos, tok))
    # 2. one forward over the k + 1 contexts of every running row
    xs = torch.stack(contexts, 1).reshape(R * (k + 1), -1)  # [R (k+1), T]
    ms = None if mask is None else mask.repeat_interleave(k + 1, 0)
    logits = _answer_logits(model, xs, ms, P).view(R, k + 1, G, -1)  # [R, k+1, G, V]
    # 3. replay S on each true context; commit while it agrees with the draft
    taking = t < G  # every running row takes step t
    n = torch.zeros(R, dtype=torch.long, device=dev)
    new_x, new_res, new_lq = x.clone(), res, lq
    last = torch.zeros(R, dtype=torch.long, device=dev)  # index of the last verified context
    rows = torch.arange(R, device=dev)
    for j in range(k + 1):
        tj = (t + j).clamp(max=G - 1)
        u = _uniforms(tape, tj, r, cfg, offset, dev)
        pos, tok, res_j, lq_j = _s_step(contexts[j], tj, logits[:, j], u, new_res, new_lq, cfg,
                                        P, model.mask_id, carry_bits)
        take = taking & (t + j < G)
        if new_res is not None:
            new_res = torch.where(take, res_j, new_res)
            new_lq = torch.where(take, lq_j, new_lq)
        n += take.long()
        last = torch.where(take, j, last)
        if j < k and rejection:  # speculative sampling on S's action (position, token)
            u_private = private.at(2 * tj.cpu()[:, None] + torch.arange(2), r).to(dev)  # [R, 2]
            pos, tok, same = _rejection_step(u_private, pos, drafts[j], logits[:, j],
                                             draft_logits, cfg, model.mask_id)
        elif j < k:
            same = (pos == drafts[j][0]) & (tok == drafts[j][1])
        new_x[rows[take], P + pos[take]] = tok[take]
        if j < k:
            taking = take & same
        if not bool(taking.any()):
            break
    # 4. the next state; the last verified context's logits draft the next call
    x_all, t_all = state.x.clone(), state.t.clone()
    x_all[r], t_all[r] = new_x, t + n
    stale = state.stale.clone() if state.stale is not None else logits.new_zeros(
        state.x.shape[0], G, logits.shape[-1])
    stale[r] = logits[rows, last]
    res_all, lq_all = state.residual, state.logq
    if res_all is not None:
        res_all, lq_all = res_all.clone(), lq_all.clone()
        res_all[r], lq_all[r] = new_res, new_lq
    draft_len = (adapt_draft_len(state.draft_len, n, k, spec.max_draft_len) if spec.adaptive
                 else state.draft_len)
    running = r[t_all[r] < G]
    new = SpecDecodeState(x_all, t_all, res_all, lq_all, stale, running, draft_len)
    return new, SpecDecodeInfo(n, k, R * (k + 1), 1)


def decode(model, prompt: torch.Tensor, cfg: DecodeConfig, spec: SpecDecodeConfig,
           source: UniformSource | None = None, attention_mask: torch.Tensor | None = None,
           progress=None, drafter=stale_drafter) -> SpecDecoded:
    """Speculative :func:`parasample.diffusion.decode`: the same arguments; S's tokens
    (``spec.verify == "identical"``) or a draw of S's law (``"rejection"``)."""
    check(cfg, spec)
    B = prompt.shape[0]
    check_source(cfg, source, B)
    dev = model_device(model)
    prompt = prompt.to(dev)
    mask = None if attention_mask is None else torch.cat(
        [attention_mask, attention_mask.new_ones(B, cfg.gen_length)], 1).to(dev)
    # the rejection verifier carries no code point (each row draws from its own uniforms)
    carry = (source is not None and source.carries_residual and cfg.temperature > 0
             and spec.verify == "identical")
    code_point = source.uniform().to(dev) if carry else None  # S's first draw: dimension 0
    # S then draws 2 Lb dimensions per step: random access, as rows run at their own steps
    tape = UniformTape(source) if cfg.needs_noise else None
    private = None
    if spec.verify == "rejection":  # its own i.i.d. stream, seeded from the source's generator
        seed = int(torch.randint(0, 2**62, (1,), generator=source.generator))
        private = UniformTape(IIDSource(B, generator=torch.Generator().manual_seed(seed)))
    state = init(model, prompt, cfg, spec, code_point)
    nfe = rows = 0
    committed: list[int] = []
    bits = source.carry_bits if carry else None
    while state.rows.numel():
        state, info = step(tape, state, model, cfg, spec, mask, carry_bits=bits,
                           drafter=drafter, private=private)
        nfe, rows = nfe + info.nfe, rows + info.forward_rows
        committed += info.committed.tolist()
        if progress is not None:
            progress(int(info.committed.sum()))
    return SpecDecoded(state.x[:, prompt.shape[1]:], nfe, rows, committed)
