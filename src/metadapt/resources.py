"""Memory this machine has free, and refusing up front what cannot fit in it.

The estimates are lower bounds of what a setting must hold at once (parameters, their gradients and
the adaptation trajectory), not predictions: they catch settings that cannot possibly fit — a
billion inner steps, a trajectory of ten thousand steps for every test task — before any work, with
the numbers, instead of after the machine starts to swap.
"""
from __future__ import annotations

import os

import torch

from metadapt.errors import UserError

FLOAT_BYTES = 4


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory of ``device`` (CPU: the kernel's MemAvailable), or None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def refuse_unless_fits(needed: float, device, what: str, fix: str) -> None:
    """Refuse ``what`` if it needs more than the free memory of ``device``."""
    free = available_bytes(device)
    if free is not None and needed > free:
        raise UserError(f"{what} needs at least {_gb(needed)} of memory and {torch.device(device).type} has "
                        f"{_gb(free)} free; {fix}")


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
