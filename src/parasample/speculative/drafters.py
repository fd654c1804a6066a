"""Drafters: where speculative decoding's guesses come from.

A drafter has three methods, all batch-first:

* ``init(prompt_ids [P, L], attention_mask [P, L], samples_per_prompt) -> state`` (rows are
  prompt-major, as in :func:`parasample.ancestral.generate`);
* ``propose(state, ctx: DraftContext, D) -> (draft [B, D'], q [B, D', V] or None, state,
  model_calls)`` with D' <= D (a drafter with nothing to propose returns D' = 0, and the step
  is an ordinary one-token step); ``q`` is the distribution each draft was drawn from, None
  for deterministic drafts (a point mass, which the rejection verifier then uses);
* ``commit(state, count [B]) -> state`` once the verifier has decided: rows now hold ``count``
  emitted tokens.

Drafts never change what is sampled, only how many target calls it takes (the verifiers are
exact for any draft).

* :class:`NGramDrafter` - prompt lookup: the last n tokens of a row (n = 3, 2, 1) are looked up
  among the row's earlier tokens, prompt and output; the tokens that followed their latest
  occurrence are the draft. A continuation that runs into the row's end continues with the
  draft itself (a repeating pattern repeats). A row without a match drafts nothing.
* :class:`SiblingDrafter` - the same lookup over every row of the prompt's group of samples: a
  sample that has already been where this one is (k samples of one prompt share long prefixes,
  the more so under arithmetic sampling) proposes what it wrote next; the longest continuation
  found wins, the row's own n-gram lookup included.
* :class:`ModelDrafter` - a small AR model with the target's vocabulary, stepped D times from
  the row's tokens. Under ``identical`` it draws with the target's own uniforms (and carries
  arithmetic sampling's residual with its own probabilities), so where draft and target agree
  in distribution they agree in tokens.

The n-gram lookups are tensor operations over the whole batch (every window of every candidate
row compared with each row's last n tokens: ``[B, k, T]`` booleans per n), so a step costs a few
kernel calls whatever the batch, not a Python loop over rows; this is written here because
transformers' prompt lookup is tied to its own generate (batch 1, one sample) and vLLM's n-gram
drafter to its scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parasample.ancestral import sampling_probs
from parasample.errors import InputError
from parasample.speculative.engine import DraftContext
from parasample.speculative.verify import draw_token

__all__ = ["DRAFTERS", "NGramDrafter", "SiblingDrafter", "ModelDrafter"]

#: The drafter kinds of ``--speculative`` (``model:NAME`` names a draft model).
DRAFTERS = ("ngram", "sibling", "model")


@dataclass
class _Contexts:
    """Every row's context (prompt, then emitted tokens), left-aligned, for the whole batch:
    rows that finish keep serving their siblings.

    ids: ``[B']`` the full-batch row of each row of the running batch.
    ctx: ``[B, T]`` tokens (0 past each row's length); grown as rows get longer.
    length: ``[B]`` tokens in each row's context.
    prompt_len: ``[B]`` the prompt's part of it.
    members: ``[B, m]`` the rows each row searches (itself; for the sibling drafter its
        prompt's rows, in order).
    """

    ids: torch.Tensor
    ctx: torch.Tensor
    length: torch.Tensor
    prompt_len: torch.Tensor
    members: torch.Tensor


class NGramDrafter:
    """Prompt-lookup drafts from the row's own prompt and output: the longest match of the
    row's last ``max_ngram`` down to ``min_ngram`` tokens (no match: no draft).

    Among the searched rows' latest occurrences of the n-gram (each ending before the row's
    end), the one with the most tokens after it wins; on a tie a sibling's wins over the row's
    own, and the lowest-numbered sibling over the others."""

    name = "ngram"
    shares = False  # whether rows of one prompt search each other

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        if not (isinstance(min_ngram, int) and 1 <= min_ngram):
            raise InputError(f"min_ngram={min_ngram!r} must be an integer >= 1.")
        if not (isinstance(max_ngram, int) and max_ngram >= min_ngram):
            raise InputError(f"max_ngram={max_ngram!r} must be an integer >= min_ngram="
                             f"{min_ngram}.")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def init(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor,
             samples_per_prompt: int = 1) -> _Contexts:
        dev = prompt_ids.device
        P, L = prompt_ids.shape
        k = samples_per_prompt
        B = P * k
        # left-align the (left-padded) prompts: real tokens first
        order = torch.argsort(attention_mask.to(torch.int8), dim=1, descending=True, stable=True)
        prompts = prompt_ids.gather(1, order) * attention_mask.gather(1, order)  # [P, L]
        plen = attention_mask.sum(1).long()  # [P]
        rows = torch.arange(B, device=dev)
        if self.shares:  # the rows of its prompt, in order
            members = (rows // k * k)[:, None] + torch.arange(k, device=dev)  # [B, k]
        else:
            members = rows[:, None]
        return _Contexts(rows, prompts.repeat_interleave(k, 0), plen.repeat_interleave(k),
                         plen.repeat_interleave(k), members)

    def _update(self, st: _Contexts, ctx: DraftContext) -> None:
        """Write the running rows' emitted tokens into their contexts (in place)."""
        r = st.ids
        W = ctx.tokens.shape[1]
        need = int((st.prompt_len[r] + ctx.count).max()) if r.numel() else 0
        if need > st.ctx.shape[1]:
            st.ctx = torch.cat([st.ctx, st.ctx.new_zeros(st.ctx.shape[0], need + W
                                                          - st.ctx.shape[1])], 1)
        rows = st.ctx[r]  # [B', T]
        pos = (st.prompt_len[r][:, None] + torch.arange(W, device=r.device)).clamp(
            max=st.ctx.shape[1] - 1)  # [B', W]
        valid = torch.arange(W, device=r.device)[None] < ctx.count[:, None]
        rows.scatter_(1, pos, torch.where(valid, ctx.tokens, rows.gather(1, pos)))
        st.ctx[r] = rows
        st.length[r] = st.prompt_len[r] + ctx.count

    def _lookup(self, st: _Contexts, D: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each running row's draft ``[B', D]`` and its length ``[B']`` (0: no match)."""
        r = st.ids
        dev = r.device
        members = st.members[r]  # [B', m]
        C, Lc = st.ctx[members], st.length[members]  # [B', m, T], [B', m]
        Lb = st.length[r]  # [B']
        T = C.shape[2]
        is_self = members == r[:, None]  # [B', m]
        best_src = torch.full((r.numel(),), -1, dtype=torch.long, device=dev)
        best_end = torch.zeros_like(best_src)
        found = torch.zeros(r.numel(), dtype=torch.bool, device=dev)
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if T < n:
                continue
            qpos = (Lb[:, None] - n + torch.arange(n, device=dev)).clamp(min=0)  # [B', n]
            q = st.ctx[r].gather(1, qpos)  # [B', n] the row's last n tokens
            win = C.unfold(2, n, 1)  # [B', m, T - n + 1, n]
            match = (win == q[:, None, None, :]).all(-1)  # [B', m, S]
            end = torch.arange(n, T + 1, device=dev)  # [S] exclusive end of each window
            ok = match & (end[None, None] <= Lc[..., None] - 1)  # an occurrence with a token after
            latest = torch.where(ok, end[None, None], -1).max(-1).values  # [B', m]
            avail = torch.where(latest >= 0, Lc - latest, 0)  # tokens after it
            # most tokens after; a sibling wins a tie (then the first sibling)
            score = avail * 2 + (~is_self).long()
            choice = score.argmax(-1)  # [B']
            take = ~found & (Lb >= n) & (avail.gather(1, choice[:, None])[:, 0] > 0)
            best_src = torch.where(take, members.gather(1, choice[:, None])[:, 0], best_src)
            best_end = torch.where(take, latest.gather(1, choice[:, None])[:, 0], best_end)
            found |= take
        i = torch.arange(D, device=dev)  # [D]
        own = best_src == r  # continued by the draft itself: period Lb - end
        period = (Lb - best_end).clamp(min=1)
        pos = torch.where(own[:, None], best_end[:, None] + i[None] % period[:, None],
                          best_end[:, None] + i[None])  # [B', D]
        src_len = st.length[best_src.clamp(min=0)]
        n_draft = torch.where(found, torch.where(own, D, (src_len - best_end).clamp(max=D)), 0)
        src = st.ctx[best_src.clamp(min=0)]  # [B', T]
        draft = src.gather(1, pos.clamp(max=T - 1))
        return draft, n_draft

    def propose(self, st: _Contexts, ctx: DraftContext, D: int):
        B = ctx.count.shape[0]
        self._update(st, ctx)
        if D == 0:
            return ctx.tokens.new_zeros(B, 0), None, st, 0
        draft, n_draft = self._lookup(st, D)
        width = int(n_draft.max())  # as long as the longest draft; none: a plain step
        if width == 0:
            return ctx.tokens.new_zeros(B, 0), None, st, 0
        draft = draft[:, :width]
        # a shorter draft repeats its last token; a row without one repeats its pending token
        pending = ctx.tokens.gather(1, (ctx.count - 1)[:, None])  # [B, 1]
        last = torch.where(n_draft[:, None] > 0, draft.gather(1, (n_draft - 1).clamp(min=0)[
            :, None]), pending)
        j = torch.arange(width, device=draft.device)[None]
        return torch.where(j < n_draft[:, None], draft, last), None, st, 0

    def commit(self, st: _Contexts, count: torch.Tensor) -> _Contexts:
        return st  # the next propose reads the emitted tokens

    def select(self, st: _Contexts, keep: torch.Tensor) -> _Contexts:
        """The state of running rows ``keep [B'']`` (finished rows leave the batch)."""
        st.ids = st.ids[keep]
        return st


class SiblingDrafter(NGramDrafter):
    """N-gram lookup across the samples of one prompt: another sample's continuation after the
    same n tokens (the longest available), else the row's own prompt-lookup draft."""

    name = "sibling"
    shares = True


class ModelDrafter:
    """Drafts from a small AR model with the target's tokenizer (``extend`` / ``rollback``
    needed, as for the target). Its cache holds each row's prompt and all emitted tokens but the
    last two after a commit (one after init), so every proposal feeds the same number of tokens
    in every row before drafting."""

    name = "model"

    def __init__(self, model, target_vocab: int | None = None):
        for method in ("start", "extend", "rollback", "reorder"):
            if not callable(getattr(model, method, None)):
                raise InputError(f"the draft model {type(model).__name__} has no {method}(); "
                                 "use a transformers causal LM or a shipped AR model.")
        if target_vocab is not None and model.vocab_size != target_vocab:
            raise InputError(f"the draft model's vocabulary has {model.vocab_size} tokens and "
                             f"the target's {target_vocab}; a draft model must share the "
                             "target's tokenizer.")
        self.model = model
        self.name = f"model:{getattr(model, 'name', type(model).__name__)}"

    def init(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor,
             samples_per_prompt: int = 1):
        _, cache = self.model.start(prompt_ids, attention_mask)
        if samples_per_prompt > 1:
            rows = torch.arange(prompt_ids.shape[0], device=prompt_ids.device)
            cache = self.model.reorder(cache, rows.repeat_interleave(samples_per_prompt))
        B = prompt_ids.shape[0] * samples_per_prompt
        return cache, torch.zeros(B, dtype=torch.long, device=prompt_ids.device)  # cached

    def propose(self, state, ctx: DraftContext, D: int):
        cache, cached = state
        behind = ctx.count - cached  # [B] emitted tokens the cache lacks: the same in all rows
        k = int(behind.max())
        if int(behind.min()) != k:
            raise RuntimeError("draft cache out of step with the rows (a drafter bug).")
        idx = ctx.count[:, None] - k + torch.arange(k, device=ctx.count.device)  # [B, k]
        logits, cache = self.model.extend(cache, ctx.tokens.gather(1, idx))  # [B, k, V]
        calls, logits = 1, logits[:, -1]
        logq, residual, done = ctx.logq, ctx.residual, ctx.done
        drafts, qs = [], []
        for j in range(D):
            one = draw_token(ctx.u[:, j], logits, logq, residual, done, self.model, ctx.config,
                             carry_bits=ctx.carry_bits)
            tok = one.tokens[:, 0]
            drafts.append(tok)
            if ctx.want_q:  # q_j, for the rejection rule
                qs.append(sampling_probs(logits, ctx.config))
            logq, residual, done = logq + one.logprobs[:, 0], one.residual, one.done
            if j < D - 1:
                logits, cache = self.model.extend(cache, tok[:, None])
                calls, logits = calls + 1, logits[:, -1]
        cached = ctx.count + max(D - 1, 0)  # holds emitted[:count] + d_0 .. d_{D-2}
        B = ctx.count.shape[0]
        if not drafts:
            return ctx.tokens.new_zeros(B, 0), None, (cache, cached), calls
        q = torch.stack(qs, 1) if qs else None
        return torch.stack(drafts, 1), q, (cache, cached), calls

    def select(self, state, keep: torch.Tensor):
        """The state of running rows ``keep [B'']`` (finished rows leave the batch)."""
        cache, cached = state
        return self.model.reorder(cache, keep), cached[keep]

    def commit(self, state, count: torch.Tensor):
        cache, cached = state
        keep = (count - 2).clamp(min=0)  # everything but the last two emitted tokens
        return self.model.rollback(cache, cached - keep), keep
