"""Summary statistics for evaluation over many tasks."""
from __future__ import annotations

import math
import statistics
from functools import lru_cache

import torch


def _t_pdf(x: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf(x: float, df: float, intervals: int = 400) -> float:
    """P(T ≤ x) for x ≥ 0 by Simpson's rule on the density (smooth, so 400 intervals give ~1e-10)."""
    h = x / intervals
    total = _t_pdf(0, df) + _t_pdf(x, df)
    total += sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, intervals))
    return 0.5 + total * h / 3


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by Newton's method
    on the CDF from the normal quantile (e.g. 12.706 for df 1, 2.262 for df 9, 1.984 for df 100)."""
    x = statistics.NormalDist().inv_cdf(p)
    if df > 1e6:
        return x
    x = max(x, 1.0) * (1 + 2.0 / df)
    for _ in range(100):
        step = (_t_cdf(x, df) - p) / _t_pdf(x, df)
        x = max(x - step, x / 2)
        if abs(step) < 1e-10:
            break
    return x


def mean_ci(values: torch.Tensor, dim: int = 0, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and half-width of the Student-t confidence interval at ``level``,
    ``t_{n−1} · s / √n`` with ``s`` the sample standard deviation over ``dim`` (for 10 tasks t is 2.262,
    not the normal 1.96: a normal interval would be 13% too narrow)."""
    n = values.shape[dim]
    mean = values.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, float("nan"))
    t = t_quantile(0.5 + level / 2, n - 1)
    return mean, t * values.std(dim, unbiased=True) / math.sqrt(n)


def paired_difference(a: torch.Tensor, b: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """Mean of ``a − b`` over the same tasks and its Student-t interval half-width: the comparison of
    two methods evaluated on the same tasks, tighter than their separate intervals when the tasks'
    difficulty varies more than the methods' difference."""
    mean, half = mean_ci((a - b).double(), 0, level)
    return float(mean), float(half)


def steps_to_target(curve: list[float], target: float, higher_is_better: bool = False) -> int | None:
    """First adaptation step whose mean score reaches ``target`` — a loss at most ``target``,
    or an accuracy at least ``target`` — or ``None`` when it never does."""
    for step, value in enumerate(curve):
        if (value >= target) if higher_is_better else (value <= target):
            return step
    return None
