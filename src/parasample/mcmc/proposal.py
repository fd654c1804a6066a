"""Shared pieces of the MCMC kernels: the MH test and gradient-informed categorical proposals."""

from __future__ import annotations

import torch

from parasample.errors import InputError
from parasample.noise import icdf_categorical, icdf_categorical_many

__all__ = ["mh_accept", "value_and_grad", "pncg_logits", "draw", "draw_many", "seq_log_prob",
           "seq_log_prob_many", "check_alpha_p"]


def mh_accept(log_ratio: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Metropolis-Hastings test: accept iff log u < log_ratio (``[B] -> [B]`` bool).

    A NaN ratio (say, from a reward that returned NaN) is rejected, never accepted.
    """
    lr = log_ratio.to(torch.float64)
    return ~torch.isnan(lr) & (torch.log(u.to(device=lr.device, dtype=torch.float64)) < lr)


def check_alpha_p(alpha: float, p: int) -> None:
    if not alpha > 0:
        raise InputError(f"alpha={alpha} must be > 0 (the proposal's step size).")
    if p not in (1, 2):
        raise InputError(f"p={p}: the p-NCG proposal norm must be 1 or 2.")


def value_and_grad(target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(x) ``[B]`` and the gradient of U = -log pi w.r.t. the embeddings of x ``[B, L, D]``.

    ``target`` needs ``embedding [V, D]`` and a differentiable ``log_prob_embedded``.
    """
    with torch.enable_grad():
        e = target.embedding[x].detach().requires_grad_(True)  # [B, L, D]
        logp = target.log_prob_embedded(e)  # [B]
        (g,) = torch.autograd.grad(logp.sum(), e)
    return logp.detach(), -g


def pncg_logits(x: torch.Tensor, grad_u: torch.Tensor, emb: torch.Tensor, alpha: float, p: int,
                chunk_elems: int = 1 << 25) -> torch.Tensor:
    """Log-weights of the p-NCG proposal at every position: ``[B, L, V]``.

    q_i(v | x) is proportional to exp(-1/2 grad_i U(x) . (e_v - e_{x_i}) - ||e_v - e_{x_i}||_p^p
    / (2 alpha)). p = 2 expands the squared distance into matrix products; p = 1 goes through
    the vocabulary in chunks so that no ``[B, L, V, D]`` tensor larger than ``chunk_elems``
    exists (SmolLM2: V = 49152, D = 576).
    """
    ex = emb[x]  # [B, L, D]
    lin = -0.5 * (grad_u @ emb.T - (grad_u * ex).sum(-1, keepdim=True))  # [B, L, V]
    if p == 2:
        dist = ((emb * emb).sum(-1) - 2 * ex @ emb.T + (ex * ex).sum(-1, keepdim=True))
        dist = dist.clamp_min(0.0)
    else:
        B, L, D = ex.shape
        step = max(1, chunk_elems // max(1, B * L * D))
        dist = torch.cat([(ex[:, :, None, :] - emb[None, None, i:i + step]).abs().sum(-1)
                          for i in range(0, emb.shape[0], step)], dim=-1)
    return lin - dist / (2 * alpha)


def draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Independent categorical draws per position: ``logits [..., V]``, ``u [...]`` -> ``[...]``."""
    return icdf_categorical(torch.softmax(logits.to(torch.float64), dim=-1), u)


def seq_log_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log q(y) = sum_i log softmax(logits_i)[y_i]: ``[B, L, V], [B, L] -> [B]``."""
    logq = torch.log_softmax(logits.to(torch.float64), dim=-1)
    return logq.gather(-1, y[..., None])[..., 0].sum(-1)


def draw_many(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """m independent sequences from one proposal: ``logits [B, L, V]``, ``u [B, m, L]`` ->
    ``[B, m, L]``; the softmax and CDF are computed once, not m times."""
    probs = torch.softmax(logits.to(torch.float64), dim=-1)  # [B, L, V]
    return icdf_categorical_many(probs, u.transpose(1, 2)).transpose(1, 2)


def seq_log_prob_many(logits: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """log q(y_j) for m sequences under one proposal: ``[B, L, V], [B, m, L] -> [B, m]``."""
    logq = torch.log_softmax(logits.to(torch.float64), dim=-1)  # [B, L, V]
    return logq.gather(-1, ys.transpose(1, 2)).sum(1)  # [B, L, m] -> [B, m]
