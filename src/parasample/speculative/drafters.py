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

The n-gram and sibling tables are Python dicts updated with each row's new tokens only, so a
step costs O(new tokens), not O(sequence); this is written here because transformers' prompt
lookup is tied to its own generate (batch 1, one sample) and vLLM's n-gram drafter to its
scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from parasample.ancestral import sampling_probs
from parasample.errors import InputError
from parasample.speculative.engine import DraftContext, draw_token

__all__ = ["DRAFTERS", "NGramDrafter", "SiblingDrafter", "ModelDrafter"]

#: The drafter kinds of ``--speculative`` (``model:NAME`` names a draft model).
DRAFTERS = ("ngram", "sibling", "model")


@dataclass
class _Rows:
    """Per-row contexts (prompt + emitted tokens) and n-gram tables ``n -> gram -> {row: end}``
    shared by a group of rows (for the n-gram drafter a row is its own group). Rows are keyed
    by their index in the full batch, so rows that finish keep serving their siblings."""

    ids: list[int]  # the full-batch row of each row of the running batch
    ctx: dict[int, list[int]]
    group: dict[int, int]
    tables: dict[int, dict[int, dict[tuple, dict[int, int]]]]  # per group
    indexed: dict[int, int] = field(default_factory=dict)  # ends indexed so far, per row
    emitted: dict[int, int] = field(default_factory=dict)  # emitted tokens in ctx, per row


class NGramDrafter:
    """Prompt-lookup drafts from the row's own prompt and output: the longest match of the
    row's last ``max_ngram`` down to ``min_ngram`` tokens (no match: no draft)."""

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
             samples_per_prompt: int = 1) -> _Rows:
        prompts = [[int(t) for t, m in zip(row, mrow, strict=True) if m]
                   for row, mrow in zip(prompt_ids.tolist(), attention_mask.tolist(),
                                        strict=True)]
        B = len(prompts) * samples_per_prompt
        group = {b: b // samples_per_prompt if self.shares else b for b in range(B)}
        rows = _Rows(list(range(B)), {b: list(prompts[b // samples_per_prompt])
                                      for b in range(B)}, group, {g: {} for g in group.values()})
        for b in range(B):
            rows.indexed[b], rows.emitted[b] = 0, 0
            self._index(rows, b)
        return rows

    def _index(self, rows: _Rows, b: int) -> None:
        """Add the grams of row b ending at positions indexed[b]+1 .. len - 1 (the gram that ends
        at the row's end is the query, not yet a match)."""
        ctx, table = rows.ctx[b], rows.tables[rows.group[b]]
        for end in range(rows.indexed[b] + 1, len(ctx)):
            for n in range(1, min(self.max_ngram, end) + 1):
                table.setdefault(n, {}).setdefault(tuple(ctx[end - n:end]), {})[b] = end
        rows.indexed[b] = max(rows.indexed[b], len(ctx) - 1)

    def _lookup(self, rows: _Rows, b: int, D: int) -> list[int]:
        """Row b's draft: after the longest matching n-gram, the occurrence (any row of the
        group) with the most tokens after it, a sibling's on ties."""
        ctx, table = rows.ctx[b], rows.tables[rows.group[b]]
        for n in range(min(self.max_ngram, len(ctx)), self.min_ngram - 1, -1):
            hits = table.get(n, {}).get(tuple(ctx[-n:]))
            if not hits:
                continue
            best, best_len = None, 0
            for r, end in hits.items():
                avail = len(rows.ctx[r]) - end  # tokens that followed this occurrence
                if avail > best_len or (avail == best_len and r != b):
                    best, best_len = (r, end), avail
            r, end = best
            src = rows.ctx[r]
            out: list[int] = []
            for i in range(D):
                if r == b:  # the row's own earlier occurrence, continued by the draft itself
                    out.append((ctx + out)[end + i])
                elif end + i < len(src):
                    out.append(src[end + i])
            if out:
                return out
        return []

    def propose(self, rows: _Rows, ctx: DraftContext, D: int):
        B = ctx.count.shape[0]
        counts = ctx.count.tolist()
        emitted = ctx.tokens.tolist()
        for i, b in enumerate(rows.ids):  # bring every row's context up to date, index it
            rows.ctx[b].extend(emitted[i][rows.emitted[b]:counts[i]])
            rows.emitted[b] = counts[i]
            self._index(rows, b)
        draft = [self._lookup(rows, b, D) if D else [] for b in rows.ids]
        # as long as the longest draft: no row matched, no draft (a plain one-token step)
        width = max(map(len, draft))
        padded = [d + [d[-1] if d else ctx.tokens[i, ctx.count[i] - 1].item()] * (width - len(d))
                  for i, d in enumerate(draft)]
        out = torch.tensor(padded, dtype=torch.long, device=ctx.tokens.device).view(B, width)
        return out, None, rows, 0

    def commit(self, rows: _Rows, count: torch.Tensor) -> _Rows:
        return rows  # the next propose reads the emitted tokens

    def select(self, rows: _Rows, keep: torch.Tensor) -> _Rows:
        """The state of running rows ``keep [B'']`` (finished rows leave the batch)."""
        rows.ids = [rows.ids[i] for i in keep.tolist()]
        return rows


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
            one = draw_token(ctx.u[:, j], logits, logq, residual, done, self.model, ctx.config)
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
