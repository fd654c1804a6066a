"""MCMC kernels over token sequences, one module each: p-NCG, multiple-try p-NCG, QUEST."""

from parasample.mcmc import mtm, pncg, quest
from parasample.mcmc.proposal import mh_accept

__all__ = ["mh_accept", "mtm", "pncg", "quest"]
