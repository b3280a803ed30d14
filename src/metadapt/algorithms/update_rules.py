"""Update rules of the inner loop: how one adaptation step turns gradients into new fast parameters.

An update rule is an ``nn.Module`` (so whatever it learns is a meta-parameter, trained by the
outer loop and saved in checkpoints) with optax's two-function shape:

    state = rule.init(params)                              # per-task state before the first step
    params, state = rule.update(grads, state, params)      # one step

``params`` and ``grads`` are dicts of the parameters the inner loop moves. They may carry leading
axes (the eager vmap path adapts every task of a meta-batch at once, with a task axis in front),
so a rule's own tensors must broadcast against them. ``state`` is anything the rule carries from
step to step (a step counter, an LSTM's hidden state); ``None`` when it needs none. The inner loop
differentiates through ``update`` for second-order meta-gradients, so it must be built from
differentiable torch operations.

A rule is built as ``Rule(params, lr, steps)``: the named parameters it will move, the recipe's
``inner_lr`` and ``inner_steps``. A rule that also reads the support loss sets ``takes_loss = True``
and is called as ``update(grads, state, params, loss=loss)``, the loss a constant with the tasks'
leading axes (``[]`` for one task, ``[T]`` on the eager vmap path). Recipes name it as
``algorithm.update_rule`` (``sgd``, ``metasgd``, … or ``pkg.module:Rule``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metadapt.registry import register

Params = dict[str, torch.Tensor]


def descend(params: Params, grads: Params, step_sizes: dict[str, Any]) -> Params:
    """The gradient step ``θ ← θ − α ⊙ g`` for every entry of ``grads`` (``α`` a number or a tensor
    per parameter). The one place it is written."""
    return {n: params[n] - step_sizes[n] * g for n, g in grads.items()}


class UpdateRule(nn.Module):
    """Base: ``init(params) -> state`` and ``update(grads, state, params) -> (params, state)``."""

    #: ``update`` also takes ``loss=``, the support loss before the step (a constant)
    takes_loss: bool = False

    def __init__(self, params: Params, lr: float, steps: int):
        super().__init__()

    def init(self, params: Params) -> Any:
        return None

    def update(self, grads: Params, state: Any, params: Params) -> tuple[Params, Any]:
        raise NotImplementedError


@register("update_rule", "sgd")
class SGD(UpdateRule):
    """Plain gradient descent with a fixed step size ``α`` (MAML, first-order MAML, ANIL, Reptile)."""

    def __init__(self, params: Params, lr: float, steps: int = 1):
        super().__init__(params, lr, steps)
        self.lr = float(lr)

    def update(self, grads, state, params):
        return descend(params, grads, {n: self.lr for n in grads}), state

    def extra_repr(self) -> str:
        return f"lr={self.lr}"


@register("update_rule", "metasgd")
class MetaSGD(UpdateRule):
    """Meta-SGD (Li, Zhou, Chen & Li, 2017, arXiv:1707.09835): a learned step size per parameter
    entry, ``θ ← θ − α ⊙ g`` with ``α`` the shape of ``θ``, initialised at ``inner_lr`` and
    meta-learned through the inner loop."""

    def __init__(self, params: Params, lr: float, steps: int = 1):
        super().__init__(params, lr, steps)
        self.names = list(params)
        self.lrs = nn.ParameterList(nn.Parameter(torch.full_like(p.detach(), float(lr)))
                                    for p in params.values())

    def step_sizes(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.lrs))

    def update(self, grads, state, params):
        return descend(params, grads, self.step_sizes()), state


@register("update_rule", "lslr")
class LSLR(UpdateRule):
    """Learned per-layer, per-step step sizes (LSLR) of MAML++ (Antoniou, Edwards & Storkey, "How to
    train your MAML", ICLR 2019, §4): step ``k`` moves parameter tensor ``ℓ`` by
    ``θ_ℓ ← θ_ℓ − α_{ℓ,k} g_ℓ``, one learned scalar per tensor and step, all initialised at
    ``inner_lr``. Steps beyond those it was meta-trained for reuse the last step's rates."""

    def __init__(self, params: Params, lr: float, steps: int = 1):
        super().__init__(params, lr, steps)
        self.names, self.steps = list(params), max(1, int(steps))
        self.rates = nn.ParameterList(nn.Parameter(torch.full((self.steps,), float(lr),
                                                              dtype=p.dtype, device=p.device))
                                      for p in params.values())

    def init(self, params):
        return 0  # the index of the next step

    def update(self, grads, state, params):
        k = min(state, self.steps - 1)
        return descend(params, grads, {n: r[k] for n, r in zip(self.names, self.rates)}), state + 1


@register("update_rule", "lslr-log")
class LogLSLR(LSLR):
    """LSLR with each rate learned as its logarithm, ``α_{ℓ,k} = exp(a_{ℓ,k})``: rates stay
    positive (a negative rate is gradient ascent, and on sinusoids the plain form learned rates
    down to −0.25 and diverged within 8,000 meta-iterations in 3 of 3 seeds), and Adam moves each by
    a bounded factor per meta-iteration rather than by a fixed amount."""

    def __init__(self, params: Params, lr: float, steps: int = 1):
        super().__init__(params, lr, steps)
        with torch.no_grad():
            for rates in self.rates:
                rates.log_()

    def update(self, grads, state, params):
        k = min(state, self.steps - 1)
        return descend(params, grads, {n: r[k].exp() for n, r in zip(self.names, self.rates)}), state + 1


# ----- hand-designed rules: the baselines a learned optimizer must beat, and inner loops of their own
def _zeros(params: Params) -> Params:
    return {n: torch.zeros_like(p) for n, p in params.items()}


@register("update_rule", "momentum")
class Momentum(UpdateRule):
    """Heavy-ball momentum (Polyak, 1964) in ``torch.optim.SGD``'s form: ``v ← μ v + g``,
    ``θ ← θ − α v``; with ``nesterov``, ``θ ← θ − α (g + μ v)`` (Sutskever et al., 2013). ``μ = 0.9``."""

    nesterov = False

    def __init__(self, params: Params, lr: float, steps: int = 1, momentum: float = 0.9):
        super().__init__(params, lr, steps)
        self.lr, self.momentum = float(lr), float(momentum)

    def init(self, params):
        return _zeros(params)

    def update(self, grads, state, params):
        velocity = {n: self.momentum * state[n] + g for n, g in grads.items()}
        direction = ({n: g + self.momentum * velocity[n] for n, g in grads.items()} if self.nesterov
                     else velocity)
        return descend(params, direction, {n: self.lr for n in grads}), velocity

    def extra_repr(self) -> str:
        return f"lr={self.lr}, momentum={self.momentum}"


@register("update_rule", "nesterov")
class Nesterov(Momentum):
    """Nesterov's accelerated gradient in ``torch.optim.SGD(nesterov=True)``'s form (:class:`Momentum`)."""

    nesterov = True


@register("update_rule", "rmsprop")
class RMSprop(UpdateRule):
    """RMSprop (Tieleman & Hinton, 2012) in ``torch.optim.RMSprop``'s form: ``s ← ρ s + (1 − ρ) g²``,
    ``θ ← θ − α g / (√s + ε)``, ``ρ = 0.99``, ``ε = 1e-8``."""

    def __init__(self, params: Params, lr: float, steps: int = 1, rho: float = 0.99, eps: float = 1e-8):
        super().__init__(params, lr, steps)
        self.lr, self.rho, self.eps = float(lr), float(rho), float(eps)

    def init(self, params):
        return _zeros(params)

    def update(self, grads, state, params):
        square = {n: self.rho * state[n] + (1 - self.rho) * g * g for n, g in grads.items()}
        direction = {n: g / (square[n].sqrt() + self.eps) for n, g in grads.items()}
        return descend(params, direction, {n: self.lr for n in grads}), square

    def extra_repr(self) -> str:
        return f"lr={self.lr}, rho={self.rho}"


@register("update_rule", "adam")
class Adam(UpdateRule):
    """Adam (Kingma & Ba, 2015) in ``torch.optim.Adam``'s form: ``m ← β₁ m + (1 − β₁) g``,
    ``v ← β₂ v + (1 − β₂) g²``, ``θ ← θ − α m̂ / (√v̂ + ε)`` with the bias-corrected ``m̂ = m / (1 − β₁ᵗ)``,
    ``v̂ = v / (1 − β₂ᵗ)``; ``β = (0.9, 0.999)``, ``ε = 1e-8``."""

    def __init__(self, params: Params, lr: float, steps: int = 1, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr, steps)
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)

    def init(self, params):
        return 0, _zeros(params), _zeros(params)

    def update(self, grads, state, params):
        t, m, v = state
        t, (b1, b2) = t + 1, self.betas
        m = {n: b1 * m[n] + (1 - b1) * g for n, g in grads.items()}
        v = {n: b2 * v[n] + (1 - b2) * g * g for n, g in grads.items()}
        direction = {n: (m[n] / (1 - b1 ** t)) / ((v[n] / (1 - b2 ** t)).sqrt() + self.eps) for n in grads}
        return descend(params, direction, {n: self.lr for n in grads}), (t, m, v)

    def extra_repr(self) -> str:
        return f"lr={self.lr}, betas={self.betas}"
