"""Metrics: TVD, pass@k, ESS, throughput."""

from parasample.metrics.core import (
    empirical_distribution,
    ess,
    iid_tvd_floor,
    pass_at_k,
    throughput,
    tvd,
)

__all__ = ["empirical_distribution", "ess", "iid_tvd_floor", "pass_at_k", "throughput", "tvd"]
