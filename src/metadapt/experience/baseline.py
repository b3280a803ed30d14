"""The linear feature baseline of MAML for RL (Finn et al. 2017, from rllab; Duan et al., ICML 2016).

``V(s_t) = w · φ(s_t, t)`` with ``φ = [s, s², τ, τ², τ³, 1]``, ``τ = t / 100`` (``t`` the step within its
episode: the position along the time axis, or ``time`` for episodes packed along it) and observations clipped
to ``[-10, 10]``; ``w`` is the ridge-regression fit to the discounted returns of the task's own
trajectories, ``(ΦᵀΦ + λI) w = ΦᵀG``, with ``λ = 10⁻⁵`` raised tenfold (up to five times) until the
system solves and the solution is finite, as rllab does (per task; a task that never solves gets
``w = 0``, no baseline). One fit per task, all tasks solved as one batched system.
"""
from __future__ import annotations

import torch


def features(observations: torch.Tensor, mask: torch.Tensor,
             time: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., N, F]`` features of observations ``[..., N, D]`` (rows past termination are zero)."""
    obs = observations.clamp(-10, 10)
    n = obs.shape[-2]
    if time is None:
        tau = (torch.arange(n, dtype=obs.dtype, device=obs.device) / 100.0).expand(*obs.shape[:-1])[..., None]
    else:
        tau = (time.to(obs.dtype) / 100.0)[..., None]
    phi = torch.cat([obs, obs ** 2, tau, tau ** 2, tau ** 3, torch.ones_like(tau)], -1)
    return phi * mask[..., None]


def fit_linear_baseline(observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                        reg: float = 1e-5, time: torch.Tensor | None = None) -> torch.Tensor:
    """Per-task weights ``[T, F]`` from trajectories ``[T, C, N, D]``, returns and mask ``[T, C, N]``."""
    phi = features(observations, mask, time).flatten(1, 2)            # [T, C·N, F]
    target = (returns * mask).flatten(1, 2)[..., None]                 # [T, C·N, 1]
    gram, rhs = phi.transpose(1, 2) @ phi, phi.transpose(1, 2) @ target
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    weights = torch.zeros(rhs.shape[:-1], dtype=rhs.dtype, device=rhs.device)
    pending = torch.ones(gram.shape[0], dtype=torch.bool, device=gram.device)
    for attempt in range(6):
        # a singular system (e.g. every trajectory ended at its first step) is retried with a larger λ,
        # task by task; the tasks that solved keep their first solution
        solution, info = torch.linalg.solve_ex(gram[pending] + reg * eye, rhs[pending])
        good = (info == 0) & torch.isfinite(solution).all((-2, -1))
        if attempt == 5:  # λ = 1: the ridge term alone makes it solvable; anything left falls back to 0
            good = torch.isfinite(solution).all((-2, -1))
        index = pending.nonzero()[:, 0]
        weights[index[good]] = solution[good][..., 0]
        pending[index[good]] = False
        if not pending.any():
            break
        reg *= 10
    return weights


def linear_baseline(observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                    time: torch.Tensor | None = None) -> torch.Tensor:
    """``[T, C, N]`` baseline values of each task's trajectories, fitted on those trajectories."""
    weights = fit_linear_baseline(observations, returns, mask, time=time)
    return (features(observations, mask, time) @ weights[:, None, :, None])[..., 0]
