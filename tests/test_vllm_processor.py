"""parasample's vLLM logits processor without vLLM: its batched state (slots, groups by config,
the carried residual) gives every request the token it would get alone, through vLLM's batch
updates (adds, removals, swaps, one-way moves) and mixed configs. The end-to-end tests through
a real vLLM engine are in test_integrations_vllm.py (their own environment)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from parasample.ancestral import SamplingConfig, sampling_probs
from parasample.integrations.vllm import ParasampleLogitsProcessor, request_args
from parasample.noise import carry_code_point, icdf_categorical, icdf_residual

V, T = 11, 8


class _Update(SimpleNamespace):
    """vLLM's BatchUpdate: removed indices, added (index, params, prompt, output), moved."""

    def __init__(self, removed=(), added=(), moved=()):
        super().__init__(removed=list(removed), added=list(added), moved=list(moved))

    def __bool__(self):
        return bool(self.removed or self.added or self.moved)


def _params(u, config, carry, bits=None):
    return SimpleNamespace(extra_args=request_args(u, config, carry, bits), max_tokens=T)


def _alone(u, config, carry, logits_rows, bits=None):
    """The reference: one request's tokens drawn by inverse CDF at each step, arithmetic
    sampling's residual carried from step to step (as the ancestral engine does)."""
    res, logq, out = torch.tensor([math.nan], dtype=torch.float64), torch.zeros(1), []
    for t, row in enumerate(logits_rows):
        probs = sampling_probs(row[None], config)  # [1, V]
        ut = u[t:t + 1]
        if carry:
            ut = carry_code_point(res, ut, logq, bits)
        tok = icdf_categorical(probs, ut)
        if carry:
            res = icdf_residual(probs, ut, tok)
            logq = logq + torch.log(probs[0, tok])
        out.append(int(tok))
    return out


def test_batched_processor_gives_each_request_its_own_tokens():
    g = torch.Generator().manual_seed(0)
    cfgs = [SamplingConfig(temperature=0.9), SamplingConfig(temperature=0.7, top_p=0.8)]
    # five requests: (config, carries the residual); logits per request and step
    reqs = [(cfgs[0], True), (cfgs[1], False), (cfgs[0], False), (cfgs[1], True),
            (cfgs[0], True)]
    u = torch.rand(len(reqs), T, generator=g, dtype=torch.float64)
    logits = torch.randn(len(reqs), T, V, generator=g)
    proc = ParasampleLogitsProcessor()
    outs = [[] for _ in reqs]
    plain = [3, 9]  # the output of a request without parasample's arguments
    swap, move = SimpleNamespace(name="SWAP"), SimpleNamespace(name="MOVE")
    # step: (vLLM's update before it, the batch after it: index -> request, None = plain)
    schedule = {
        0: (_Update(added=[(i, _params(u[i], *reqs[i]), [1], outs[i]) for i in range(3)]),
            {0: 0, 1: 1, 2: 2}),
        2: (_Update(added=[(3, _params(u[3], *reqs[3]), [1], outs[3]),
                           (4, SimpleNamespace(extra_args=None), [1], plain)]),
            {0: 0, 1: 1, 2: 2, 3: 3, 4: None}),
        3: (_Update(moved=[(0, 3, swap)]), {0: 3, 1: 1, 2: 2, 3: 0, 4: None}),
        4: (_Update(removed=[1], moved=[(4, 1, move)]), {0: 3, 1: None, 2: 2, 3: 0}),
        5: (_Update(added=[(4, _params(u[4], *reqs[4]), [1], outs[4])]),
            {0: 3, 1: None, 2: 2, 3: 0, 4: 4}),
    }
    at: dict[int, int | None] = {}
    for step in range(T):  # request 0 reaches T tokens at the last step
        if step in schedule:
            update, at = schedule[step]
            proc.update_state(update)
        batch = torch.zeros(max(at) + 1, V)
        for i, r in at.items():
            batch[i] = torch.randn(V, generator=g) if r is None else logits[r, len(outs[r])]
        before = batch.clone()
        batch = proc.apply(batch)
        for i, r in at.items():
            if r is None:  # the plain request's logits are untouched
                assert torch.equal(batch[i], before[i])
            else:
                assert torch.isfinite(batch[i]).sum() == 1
                outs[r].append(int(torch.argmax(batch[i])))
    assert [len(o) for o in outs] == [8, 4, 8, 6, 3]
    for r, (cfg, carry) in enumerate(reqs):
        assert outs[r] == _alone(u[r], cfg, carry, logits[r, :len(outs[r])]), r
