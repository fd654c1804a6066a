"""Facts about the machine and the run that every benchmark row records."""

from __future__ import annotations

import torch

from parasample.devices import dtype_name

__all__ = ["device_name", "machine_fields", "sync"]


def device_name(device: str | torch.device | None = None) -> str:
    """'cpu', or the CUDA device's name (e.g. 'NVIDIA H100 80GB HBM3')."""
    device = torch.device(device or "cpu")
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def machine_fields(device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> dict:
    """``device``, ``dtype`` and ``torch_threads`` columns of a benchmark row."""
    return {"device": device_name(device), "dtype": dtype_name(dtype),
            "torch_threads": torch.get_num_threads()}


def sync(device: str | torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously), so a wall-clock timer around
    a call measures the call; nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
