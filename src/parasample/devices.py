"""Devices and dtypes: one place that turns ``auto`` / ``cuda:1`` / ``bfloat16`` into torch
objects, with a clear error for a device that is not here or a dtype it cannot run.

Models, KV caches and sampler state live on the chosen device. Uniforms come from a
:class:`~parasample.noise.UniformSource` on the CPU (its generator is a CPU ``torch.Generator``,
so the same seed gives the same numbers on every machine) and are moved to the device where they
are consumed; inverse CDFs run in float64 there, because a float32 cumulative sum over a 49k
vocabulary loses the low-probability tail that exact sampling (and arithmetic sampling's
residual) must keep.
"""

from __future__ import annotations

import torch

from parasample.errors import InputError

__all__ = ["DTYPES", "resolve_device", "resolve_dtype", "dtype_name", "model_device"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:i`` -> a device that
    exists here (else a ValueError that says what to pass instead)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise InputError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:i.") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InputError(f"device {spec!r}: parasample runs on cpu or cuda; pass --device auto.")
    if not torch.cuda.is_available():
        raise InputError(f"--device {spec}: no CUDA GPU is visible here (torch "
                         f"{torch.__version__}); use --device cpu or --device auto.")
    n = torch.cuda.device_count()
    if dev.index is not None and dev.index >= n:
        raise InputError(f"--device {spec}: only {n} CUDA device(s) here (cuda:0..cuda:{n - 1}).")
    return dev


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` -> a dtype the device can run (checked)."""
    if isinstance(name, torch.dtype):
        dtype = name
    else:
        key = (name or "float32").strip().lower()
        if key not in DTYPES:
            raise InputError(f"dtype {name!r} is not one of {', '.join(DTYPES)}.")
        dtype = DTYPES[key]
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise InputError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} cannot run "
                         "bfloat16; use --dtype float16 or float32.")
    if dtype is not torch.float32:
        try:  # the two kernels every model here needs
            x = torch.ones(2, 4, dtype=dtype, device=device)
            torch.nn.functional.layer_norm(x @ x.T, (2,))
        except RuntimeError as e:
            raise InputError(f"--dtype {dtype_name(dtype)} does not run on {device} here ({e}); "
                             "use --dtype float32.") from None
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16`` (the name CSV rows record)."""
    return str(dtype).removeprefix("torch.")


def model_device(model) -> torch.device:
    """The device a model (or adapter with a ``device`` attribute) runs on; CPU when unknown."""
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    params = getattr(model, "parameters", None)
    if callable(params):
        p = next(iter(params()), None)
        if p is not None:
            return p.device
    return torch.device("cpu")
