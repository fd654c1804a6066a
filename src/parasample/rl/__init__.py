"""RL post-training with correlated groups (GRPO)."""

from parasample.rl.grpo import GRPOConfig, clipped_objective, group_advantages, train_rl

__all__ = ["GRPOConfig", "clipped_objective", "group_advantages", "train_rl"]
