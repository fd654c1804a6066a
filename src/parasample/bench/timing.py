"""Facts about the machine that every benchmark row records."""

from __future__ import annotations

import torch

__all__ = ["device_name", "machine_fields"]


def device_name() -> str:
    """'cpu' or the CUDA device name."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def machine_fields() -> dict:
    """``device`` and ``torch_threads`` columns of a benchmark row."""
    return {"device": device_name(), "torch_threads": torch.get_num_threads()}
