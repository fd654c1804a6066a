"""Metrics: TVD, pass@k, ESS, throughput."""

from parasample.metrics.core import (
    empirical_distribution,
    ess,
    pass_at_k,
    throughput,
    tvd,
)

__all__ = ["empirical_distribution", "ess", "pass_at_k", "throughput", "tvd"]
