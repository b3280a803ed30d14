"""Trust-region policy optimization's update (Schulman et al., "Trust region policy optimization",
ICML 2015), for any differentiable surrogate and KL, as rllab's conjugate-gradient optimizer does it:

    s = H⁻¹ g   (conjugate gradient on Hessian-vector products of the mean KL, damped: (H + λI) v)
    θ ← θ_old + β·rᵏ·s,   β = sqrt(2δ / sᵀHs)

taking the first ``k = 0, 1, …`` of the backtracking line search whose surrogate improves and whose
KL stays within ``δ``; none: the parameters stay where they were. ``g`` is the gradient of the
surrogate to maximise. The functions passed in rebuild their graph from the current parameters
(for MAML for RL, through the inner adaptation), so the Hessian-vector products differentiate
through it.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def conjugate_gradient(hvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int = 10,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """Approximately solve ``H x = b`` with ``iterations`` of conjugate gradient (``H`` symmetric
    positive definite, known through ``hvp(v) = H v``)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iterations):
        hp = hvp(p)
        alpha = rr / (p @ hp)
        x = x + alpha * p
        r = r - alpha * hp
        rr_new = r @ r
        if rr_new < residual_tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def trpo_update(parameters: list[torch.Tensor], surrogate: Callable[[], torch.Tensor],
                kl: Callable[[], torch.Tensor], max_kl: float = 0.01, damping: float = 1e-5,
                cg_iterations: int = 10, backtracks: int = 15, backtrack_ratio: float = 0.8,
                gradient: torch.Tensor | None = None,
                metric: Callable[[], torch.Tensor] | None = None,
                reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """One TRPO update of ``parameters`` in place; returns what it did. ``gradient`` (flat) replaces
    the surrogate's own gradient (an estimator with extra terms, e.g. MAML-RL's sampling term);
    ``metric`` (default ``kl``) is the function whose Hessian the conjugate gradient uses (a cheaper
    one on a subsample); the line search always checks ``kl``. ``reduce`` combines what each process
    computed on its tasks (the gradient, every Hessian-vector product, the surrogate and KL values)
    into the meta-batch's, the same on every process, so all take the same step (data-parallel)."""
    reduce = reduce or (lambda x: x)
    old = [p.detach().clone() for p in parameters]
    with torch.enable_grad():
        if gradient is None:
            before = surrogate()
            g = reduce(_flat(torch.autograd.grad(before, parameters)))
        else:
            g = gradient
            with torch.no_grad():
                before = surrogate()
        kl_grad = _flat(torch.autograd.grad((metric or kl)(), parameters, create_graph=True))
    before = reduce(before.detach())

    def hvp(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(kl_grad @ v, parameters, retain_graph=True)
        return reduce(_flat(hv)) + damping * v

    direction = conjugate_gradient(hvp, g.detach(), cg_iterations)
    shs = direction @ hvp(direction)
    step = torch.sqrt(2 * max_kl / shs.clamp(min=1e-12)) * direction
    before = float(before)
    for k in range(backtracks):
        fraction = backtrack_ratio ** k
        _assign(parameters, old, fraction * step)
        with torch.no_grad():
            after, divergence = float(reduce(surrogate())), float(reduce(kl()))
        if after > before and divergence <= max_kl and torch.isfinite(torch.tensor(after)):
            return {"surrogate_gain": after - before, "kl": divergence, "backtracks": float(k),
                    "accepted": 1.0}
    _assign(parameters, old, torch.zeros_like(step))
    return {"surrogate_gain": 0.0, "kl": 0.0, "backtracks": float(backtracks), "accepted": 0.0}


def _assign(parameters: list[torch.Tensor], old: list[torch.Tensor], flat_step: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p, o in zip(parameters, old):
            n = p.numel()
            p.copy_(o + flat_step[offset:offset + n].view_as(p))
            offset += n
