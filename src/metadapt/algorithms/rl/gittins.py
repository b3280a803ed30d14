"""Gittins indices of a Bernoulli arm with a Beta(a, b) posterior (Gittins 1979; Gittins, Glazebrook
& Weber, "Multi-armed Bandit Allocation Indices", 2011), by calibration.

The index of an arm is the per-pull payoff ``λ`` of a known arm that makes one indifferent between
pulling the unknown arm (with the option of switching to the known one for good at any later pull)
and switching now. For a fixed ``λ`` one backward induction over every posterior state answers, at
once for all of them, whether switching now is optimal; that is monotone in ``λ``, so each state's
index is where ``D(λ) = continue(λ) − switch(λ)`` crosses zero, located on a grid of ``λ`` and
interpolated linearly between the two grid points around the crossing.

- :func:`finite_horizon_gittins`: undiscounted, with ``m`` pulls left in the trial — the index for a
  trial of ``n`` pulls (Niño-Mora 2011, "Computing a classic index for finite-horizon bandits").
  With one pull left it is the posterior mean ``a / (a + b)``.
- :func:`discounted_gittins`: the classic infinite-horizon index with discount ``γ``, truncated at a
  depth where ``γ^depth`` is negligible (beyond it the arm's mean is taken as known).
"""
from __future__ import annotations

import torch


def _crossing(d: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Per state (trailing axes), the ``λ`` where ``d [L, ...]`` (decreasing in λ) crosses zero."""
    below = d <= 0
    first = torch.where(below.any(0), below.to(torch.int64).argmax(0), torch.full(d.shape[1:], len(lam) - 1))
    hi = first.clamp(min=1)
    lo = hi - 1
    d_lo, d_hi = d.gather(0, lo[None])[0], d.gather(0, hi[None])[0]
    frac = (d_lo / (d_lo - d_hi).clamp(min=1e-300)).clamp(0, 1)
    return lam[lo] + frac * (lam[hi] - lam[lo])


@torch.no_grad()
def finite_horizon_gittins(pulls: int, grid: int = 1001) -> torch.Tensor:
    """``[pulls + 2, pulls + 2, pulls + 1]``: the index of Beta(a, b) with ``m`` pulls left, at
    ``[a, b, m]`` (``a, b ≥ 1``, ``a + b − 2 + m ≤ pulls``; other entries are 0). Grid 1001 gives
    indices within 4e-4 of grid 2001."""
    lam = torch.linspace(0, 1, grid, dtype=torch.float64)
    table = torch.zeros(pulls + 2, pulls + 2, pulls + 1, dtype=torch.float64)
    # with m pulls left an arm has had at most pulls − m pulls: a, b ≤ pulls − m + 1 (+1 to look ahead)
    v = torch.zeros(grid, pulls + 3, pulls + 3, dtype=torch.float64)
    for m in range(1, pulls + 1):
        side = pulls - m + 3
        a = torch.arange(side, dtype=torch.float64)[:, None]
        b = torch.arange(side, dtype=torch.float64)[None, :]
        p = torch.where(a + b > 0, a / (a + b).clamp(min=1), torch.zeros(()))
        up, down = v[:, 1:side + 1, :side], v[:, :side, 1:side + 1]    # V(a + 1, b), V(a, b + 1)
        cont = p * (1 + up) + (1 - p) * down
        switch = m * lam[:, None, None]
        reach = pulls - m + 2
        table[1:reach, 1:reach, m] = _crossing((cont - switch)[:, 1:reach, 1:reach], lam)
        v = torch.maximum(cont, switch)
        v = torch.nn.functional.pad(v, (0, 1, 0, 1))  # the next m reads one past its side
    return table.float()


@torch.no_grad()
def discounted_gittins(max_sum: int, discount: float, depth: int = 400, grid: int = 4001) -> torch.Tensor:
    """``[max_sum, max_sum]``: the classic index of Beta(a, b) under discount ``γ``, at ``[a, b]``
    for ``a + b ≤ max_sum`` (others 0). Payoffs are per pull, so the index is on the scale of ``p``."""
    lam = torch.linspace(0, 1, grid, dtype=torch.float64)
    switch = lam / (1 - discount)
    top = max_sum + depth
    # states on the diagonal a + b = s are a = 1 … s − 1; beyond the depth the mean counts as known
    s = top
    a = torch.arange(1, s, dtype=torch.float64)
    v = torch.maximum(switch[:, None], (a / s)[None, :] / (1 - discount))
    table = torch.zeros(max_sum, max_sum, dtype=torch.float64)
    for s in range(top - 1, 1, -1):
        a = torch.arange(1, s, dtype=torch.float64)
        p = a / s
        cont = p * (1 + discount * v[:, 1:]) + (1 - p) * discount * v[:, :-1]
        if s < max_sum:
            index = _crossing(cont - switch[:, None], lam)
            ai = a.long()
            table[ai, s - ai] = index
        v = torch.maximum(cont, switch[:, None])
    return table.float()
