"""What is sampled. ``parasample.targets.hf`` (transformers) is imported lazily by its users."""

from parasample.targets.base import ARModel, EnergyTarget, MaskedModel, NFECounter
from parasample.targets.exact import (
    MAX_STATES,
    any_order_distribution,
    enumerate_states,
    exact_distribution,
    state_index,
)
from parasample.targets.toy import IsingChain, TiltedTarget, ToyARLM, ToyMaskedLM, count_reward

__all__ = [
    "MAX_STATES",
    "ARModel",
    "EnergyTarget",
    "IsingChain",
    "MaskedModel",
    "NFECounter",
    "TiltedTarget",
    "ToyARLM",
    "ToyMaskedLM",
    "any_order_distribution",
    "count_reward",
    "enumerate_states",
    "exact_distribution",
    "state_index",
]
