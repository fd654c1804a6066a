"""Sequential Monte Carlo over tokens for reward-tilted targets pi(y) ~ p_LM(y) exp(r(y) / beta).

R independent systems of N particles (rows ``r * N + i``). Each step extends every particle by
one token from the proposal q (the LM after temperature / top-p, through the ancestral engine)
and multiplies its weight by

    p_LM(y_t | y_<t) / q(y_t | y_<t) * exp((r_t(y_<=t) - r_{t-1}(y_<t)) / beta),

where r_t is the reward's ``partial`` (a twist; the final r_L must equal r). Systems whose ESS
falls below ``ess_threshold * N`` are resampled with explicit uniforms. At the end the weighted
particles are properly weighted for pi, and ``log_evidence`` estimates log sum_y p(y) exp(r/beta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from parasample.ancestral import AncestralState, SamplingConfig, select_rows
from parasample.ancestral import init as ar_init
from parasample.ancestral import step as ar_step
from parasample.errors import InputError
from parasample.metrics import ess
from parasample.smc.resampling import RESAMPLERS

__all__ = ["SMCConfig", "SMCState", "SMCInfo", "init", "step", "noise_dims", "final_log_evidence"]


@dataclass(frozen=True)
class SMCConfig:
    """n_particles per system; beta: tilt temperature; ess_threshold in [0, 1] (0 never
    resamples, 1 always); resampler: 'systematic', 'stratified' or 'multinomial'."""

    n_particles: int = 16
    beta: float = 1.0
    ess_threshold: float = 0.5
    resampler: str = "systematic"

    def __post_init__(self):
        if self.n_particles < 1:
            raise InputError(f"n_particles={self.n_particles} must be >= 1.")
        if not self.beta > 0:
            raise InputError(f"beta={self.beta} must be > 0 (pi ~ p exp(r / beta)).")
        if not 0 <= self.ess_threshold <= 1:
            raise InputError(f"ess_threshold={self.ess_threshold} must lie in [0, 1].")
        if self.resampler not in RESAMPLERS:
            raise InputError(f"resampler={self.resampler!r}; choose one of "
                             f"{', '.join(RESAMPLERS)}.")


class SMCState(NamedTuple):
    """ar: the particles' ancestral state (rows = R * N); logw: ``[R, N]`` log-weights;
    log_evidence: ``[R]`` accumulated at resampling times; reward: ``[R * N]`` r_t so far."""

    ar: AncestralState
    logw: torch.Tensor
    log_evidence: torch.Tensor
    reward: torch.Tensor


class SMCInfo(NamedTuple):
    """ess ``[R]`` before resampling; resampled ``[R]`` bool; nan_rejected ``[R*N]``: particles
    whose reward was NaN (weight set to zero); nfe: model calls (1)."""

    ess: torch.Tensor
    resampled: torch.Tensor
    nan_rejected: torch.Tensor
    nfe: int


def noise_dims(cfg: SMCConfig) -> int:
    """Resampling uniforms per system and step."""
    return RESAMPLERS[cfg.resampler][1](cfg.n_particles)


def init(model, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: SMCConfig,
         reward) -> SMCState:
    """Prefill ``prompt_ids [R * N, P]`` (each prompt repeated N times: when a system's N rows
    are one prompt, it is prefilled once and its cache repeated)."""
    B = prompt_ids.shape[0]
    if B % cfg.n_particles:
        raise InputError(f"{B} rows is not a whole number of systems of "
                         f"n_particles={cfg.n_particles}.")
    R, N = B // cfg.n_particles, cfg.n_particles
    ids3, mask3 = prompt_ids.view(R, N, -1), attention_mask.view(R, N, -1)
    if N > 1 and torch.equal(ids3, ids3[:, :1].expand_as(ids3)) and torch.equal(
            mask3, mask3[:, :1].expand_as(mask3)):  # each system's prompt: one prefill
        ar = ar_init(model, ids3[:, 0], mask3[:, 0])
        ar = select_rows(model, ar, torch.arange(R, device=ar.logits.device)
                         .repeat_interleave(N))
    else:
        ar = ar_init(model, prompt_ids, attention_mask)
    r0 = reward.partial(ar.tokens).to(torch.float64)
    dev = ar.logits.device
    return SMCState(ar, torch.zeros(R, cfg.n_particles, dtype=torch.float64, device=dev),
                    torch.zeros(R, dtype=torch.float64, device=dev), r0)


def step(u_tok: torch.Tensor, u_res: torch.Tensor, state: SMCState, model, reward,
         cfg: SMCConfig, sampling: SamplingConfig, *, advance: bool = True
         ) -> tuple[SMCState, SMCInfo]:
    """Extend, reweight, and resample where the ESS is low.

    ``u_tok [R * N]`` draws the tokens; ``u_res [R, noise_dims(cfg)]`` drives the resampler.
    """
    R, N = state.logw.shape
    ar, info = ar_step(u_tok, state.ar, model, sampling, advance=advance)
    logp, logq = info.logp, ar.logprobs[:, -1]  # [B] each, 0 on finished rows
    r = reward.partial(ar.tokens).to(torch.float64)  # [B]
    bad = torch.isnan(r)
    inc = logp - logq + (r - state.reward) / cfg.beta
    inc = torch.where(bad, -math.inf, inc)
    logw = state.logw + inc.view(R, N)
    r = torch.where(bad, state.reward, r)

    e = ess(logw)  # [R]
    # A system whose particles all have zero weight is dead (log-evidence -inf): never resampled.
    alive = torch.isfinite(torch.logsumexp(logw, -1))
    resample = (e < cfg.ess_threshold * N) & alive
    log_ev = state.log_evidence
    if bool(resample.any()):
        fn = RESAMPLERS[cfg.resampler][0]
        safe = torch.where(alive[:, None], logw, 0.0)
        idx = fn(torch.softmax(safe, -1), u_res)  # [R, N]
        ar_n = torch.arange(N, device=idx.device)
        idx = torch.where(resample[:, None], idx, ar_n[None])
        rows = (idx + N * torch.arange(R, device=idx.device)[:, None]).reshape(-1)  # [B]
        log_ev = log_ev + torch.where(resample, torch.logsumexp(logw, -1) - math.log(N), 0.0)
        logw = torch.where(resample[:, None], 0.0, logw)
        ar = select_rows(model, ar, rows)
        r = r[rows]
    return SMCState(ar, logw, log_ev, r), SMCInfo(e, resample, bad, 1 if advance else 0)


def final_log_evidence(state: SMCState) -> torch.Tensor:
    """``[R]`` log Z estimate: accumulated evidence plus the last weights' mean."""
    N = state.logw.shape[1]
    return state.log_evidence + torch.logsumexp(state.logw, -1) - math.log(N)
