"""Summary statistics for evaluation over many tasks."""
from __future__ import annotations

import math

import torch


def mean_ci(values: torch.Tensor, dim: int = 0, z: float = 1.96) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and half-width of the normal-approximation 95% confidence interval,
    ``z · s / √n`` with ``s`` the sample standard deviation over ``dim``."""
    n = values.shape[dim]
    mean = values.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, float("nan"))
    return mean, z * values.std(dim, unbiased=True) / math.sqrt(n)


def steps_to_target(curve: list[float], target: float, higher_is_better: bool = False) -> int | None:
    """First adaptation step whose mean score reaches ``target`` — a loss at most ``target``,
    or an accuracy at least ``target`` — or ``None`` when it never does."""
    for step, value in enumerate(curve):
        if (value >= target) if higher_is_better else (value <= target):
            return step
    return None
