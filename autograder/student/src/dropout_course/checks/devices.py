"""Which devices and dtypes the tensor checks run on: decided here, in one place.

``COURSE_DEVICES`` (comma-separated, e.g. ``cpu`` or ``cpu,cuda``) narrows the list; by
default every available device is used: the CPU always, CUDA when a GPU is present.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_devices", "float_dtypes"]


def available_devices() -> list[torch.device]:
    """Devices every tensor check must run on: CPU, plus CUDA when available."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    wanted = os.environ.get("COURSE_DEVICES")
    if wanted:
        names = {name.strip() for name in wanted.split(",") if name.strip()}
        missing = names - {d.type for d in devices}
        if missing:
            raise RuntimeError(
                f"COURSE_DEVICES asks for {sorted(missing)}, which this machine does not have"
            )
        devices = [d for d in devices if d.type in names]
    return devices


def float_dtypes(device: torch.device) -> list[torch.dtype]:
    """Floating dtypes to test on ``device``: float32, float64 and a 16-bit type."""
    dtypes = [torch.float32, torch.float64, torch.bfloat16]
    if device.type == "cuda":
        dtypes.append(torch.float16)
    return dtypes
