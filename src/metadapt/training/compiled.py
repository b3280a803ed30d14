"""The compiled meta-step: meta-gradient and optimizer update fused into one ``torch.compile`` graph.

For small models the eager meta-step is dominated by per-operation overhead: hundreds of tiny
kernels, the autograd engine, the optimizer's Python loop. Here the whole step

    g = ∇_θ (1/T) Σ_i L_query_i(U_i(θ))        (``torch.func.grad_and_value``, no autograd engine)
    θ ← Adam(θ, g)                              (Kingma & Ba 2015, the update of ``torch.optim.Adam``)

is one traced function that Inductor compiles once. Parameters and the optimizer's own state
tensors are updated in place, so ``optimizer.state_dict()`` and checkpoints are exactly those of
the eager path and a run can switch between the two on resume. A non-finite loss or gradient
leaves every tensor untouched (the step reports it, as the eager path does).

Covers the algorithms that declare ``compilable`` (the MAML family: MAML, first-order MAML,
Meta-SGD, ANIL, with any update rule): those whose meta-loss is the mean query loss after
adaptation, their ``forward``. A test checks it against the eager step.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad_and_value

from metadapt.algorithms.maml import MAML
from metadapt.tasks.batch import TaskBatch


class CompiledMetaStep:
    """``step(batch) -> (loss, finite)``: one fused, compiled meta-training step.

    Args:
        algorithm: a ``MAML`` (any of its variants).
        optimizer: a ``torch.optim.Adam`` (no AMSGrad, no weight decay) or a plain
            ``torch.optim.SGD`` (no momentum) over ``algorithm.parameters()``, in one group.
    """

    def __init__(self, algorithm: MAML, optimizer: torch.optim.Optimizer):
        if not getattr(algorithm, "compilable", False):
            raise ValueError(f"the compiled meta-step covers the MAML family, not {type(algorithm).__name__}")
        if len(optimizer.param_groups) != 1:
            raise ValueError("the compiled meta-step needs an optimizer with one parameter group")
        group = optimizer.param_groups[0]
        if isinstance(optimizer, torch.optim.Adam):
            if group["amsgrad"] or group["weight_decay"] or group["maximize"]:
                raise ValueError("the compiled meta-step supports Adam without amsgrad, weight_decay or "
                                 "maximize")
            self.kind = "adam"
        elif isinstance(optimizer, torch.optim.SGD):
            if group["momentum"] or group["weight_decay"] or group["maximize"]:
                raise ValueError("the compiled meta-step supports SGD without momentum, weight_decay or "
                                 "maximize")
            self.kind = "sgd"
        else:
            raise ValueError(f"the compiled meta-step supports Adam and SGD, not {type(optimizer).__name__}")
        named = {n: p for n, p in algorithm.named_parameters() if p.requires_grad}
        if {id(p) for p in group["params"]} != {id(p) for p in named.values()}:
            raise ValueError("the optimizer must hold exactly the algorithm's trainable parameters")
        self.algorithm, self.optimizer, self.names = algorithm, optimizer, list(named)
        self._live = list(named.values())
        # On CPU, Inductor's C++ wrapper calls the step's kernels from C++ instead of Python,
        # which cuts the per-step overhead of this small graph.
        cpu = self._live[0].device.type == "cpu"
        self._compiled = torch.compile(self._step, dynamic=False,
                                       options={"cpp_wrapper": True} if cpu else None)

    def _state(self, p: torch.Tensor) -> dict:
        state = self.optimizer.state[p]
        if not state:  # the layout torch.optim.Adam creates on its first step
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _arguments(self) -> tuple:
        """The tensors the graph reads and updates, as flat tuples (cheap guards); rebuilt only
        when the parameters or the optimizer's state tensors were replaced (e.g. a loaded state)."""
        live = self._live
        if self.kind == "adam":
            states = [self._state(p) for p in live]
            key = tuple(id(x) for p, st in zip(live, states)
                        for x in (p, st["exp_avg"], st["exp_avg_sq"], st["step"]))
        else:
            states, key = [], tuple(id(p) for p in live)
        if key != getattr(self, "_key", None):
            self._key = key
            self._tensors = (tuple(p.detach() for p in live),  # views: updating them updates the module
                             tuple(st["exp_avg"] for st in states), tuple(st["exp_avg_sq"] for st in states),
                             tuple(st["step"] for st in states))
            self._lr = torch.tensor(0.0, dtype=torch.float64)  # a tensor: a schedule needs no recompile
        return self._tensors

    def _step(self, params, exp_avg, exp_avg_sq, steps, lr, beta1, beta2, eps, sx, sy, qx, qy):
        def mean_query_loss(p):
            return functional_call(self.algorithm, dict(zip(self.names, p)), (sx, sy, qx, qy))

        grads, loss = grad_and_value(mean_query_loss)(params)
        finite = torch.isfinite(loss)
        for g in grads:
            finite = finite & torch.isfinite(g).all()
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.kind == "sgd":
                p.copy_(torch.where(finite, p - lr * g, p))
                continue
            step = steps[i] + 1
            t = step.double()  # bias corrections in double precision, as torch.optim.Adam's
            m = exp_avg[i] + (g - exp_avg[i]) * (1 - beta1)
            v = exp_avg_sq[i] * beta2 + g * g * (1 - beta2)
            denom = v.sqrt() / (1 - beta2 ** t).sqrt() + eps
            new = p - (lr / (1 - beta1 ** t)) * m / denom
            p.copy_(torch.where(finite, new, p))
            exp_avg[i].copy_(torch.where(finite, m, exp_avg[i]))
            exp_avg_sq[i].copy_(torch.where(finite, v, exp_avg_sq[i]))
            steps[i].copy_(torch.where(finite, step, steps[i]))
        return loss, finite

    def __call__(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        params, exp_avg, exp_avg_sq, steps = self._arguments()
        group = self.optimizer.param_groups[0]
        if float(self._lr) != group["lr"]:
            self._lr.fill_(group["lr"])
        beta1, beta2 = group["betas"] if self.kind == "adam" else (0.0, 0.0)
        eps = group["eps"] if self.kind == "adam" else 0.0
        return self._compiled(params, exp_avg, exp_avg_sq, steps, self._lr, beta1, beta2, eps,
                              batch.support_x, batch.support_y, batch.query_x, batch.query_y)
