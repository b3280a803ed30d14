"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019, arXiv:1810.09502):
MAML with the training fixes that make it stable over several inner steps.

* **LSLR** — learned per-layer, per-step inner learning rates: the ``lslr`` update rule
  (``update_rules.py``), the default here.
* **Multi-step loss (MSL)** — the meta-loss is the query loss after *every* inner step, weighted
  by ``w``, ``Σ_k w_k L_query(θ_k)``; the weights start uniform (``1/K``) and are annealed towards the
  last step over ``msl_epochs`` epochs: each earlier weight falls by ``e / (K · msl_epochs)`` per epoch
  ``e`` down to ``min_step_weight / K``, the last rises by ``(K − 1)`` times that, up to
  ``1 − (K − 1) · min_step_weight / K``; from epoch ``msl_epochs`` on, only the last step counts.
* **Derivative-order annealing (DA)** — first-order meta-gradients for the first
  ``first_order_epochs`` epochs, second order after.
* **Cosine annealing of the meta learning rate (CA)** — from ``train.meta_lr`` down to
  ``min_meta_lr`` over the run, ``η_e = η_min + (η_0 − η_min)(1 + cos(π e / E)) / 2`` at epoch ``e``
  of ``E = train.iterations / epoch_iterations``.

* **Per-step BatchNorm weights and biases (BNWB)** — every BatchNorm layer gets its own meta-learned
  scale and shift for each inner step: the forward passes through ``θ_k`` (the support loss that
  gives step ``k``'s gradient, and the query loss of ``θ_k``) use ``(γ_k, β_k)``, ``k = 0 … K``; the
  inner loop does not move them (as in the paper's code) and steps beyond ``K`` reuse ``(γ_K, β_K)``.
  All start at the layer's own values. The paper's per-step running statistics (BNRS) have no
  counterpart: metadapt's BatchNorm always normalises with the batch's own statistics.

An epoch is ``epoch_iterations`` meta-iterations (the paper's code: 500). The iteration count is a
buffer of the algorithm, so checkpoints carry it and a resumed run anneals exactly as an
uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metadapt.algorithms.base import Algorithm
from metadapt.algorithms.gradient import select_adapted
from metadapt.algorithms.maml import MAML, MAMLOptions
from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.batch import TaskBatch


@dataclass
class MAMLPlusPlusOptions(MAMLOptions):
    update_rule: str = option("lslr", help="lslr (learned per-layer per-step rates), sgd, metasgd, a:Rule")
    multi_step_loss: bool = option(True, help="meta-loss over every inner step, annealed to the last (MSL)")
    msl_epochs: int = option(10, positive=True, help="epochs over which MSL's weights anneal to the last")
    min_step_weight: float = option(0.03, low=0, help="MSL: floor of an earlier step's weight, times K")
    first_order_epochs: int = option(0, low=0, help="epochs of first-order meta-gradients before second (DA)")
    cosine_meta_lr: bool = option(True, help="anneal train.meta_lr to min_meta_lr on a cosine (CA)")
    min_meta_lr: float = option(1e-5, low=0, help="CA: the meta learning rate at the end of the run")
    epoch_iterations: int = option(500, positive=True, help="meta-iterations per epoch of the schedules")
    per_step_bn: bool = option(True, help="a meta-learned BatchNorm scale and shift per inner step (BNWB)")


def step_weights(steps: int, epoch: int, msl_epochs: int, min_step_weight: float) -> torch.Tensor:
    """MSL's importance of each inner step's query loss at ``epoch`` (float64, sums to 1)."""
    decay = 1.0 / steps / msl_epochs
    floor = min_step_weight / steps
    weights = [max(1.0 / steps - epoch * decay, floor) for _ in range(steps - 1)]
    weights.append(min(1.0 / steps + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor))
    return torch.tensor(weights, dtype=torch.float64)


def cosine_lr(base: float, minimum: float, epoch: int, epochs: float) -> float:
    return minimum + (base - minimum) * (1 + math.cos(math.pi * min(epoch / max(epochs, 1e-12), 1.0))) / 2


@register("algorithm", "maml++")
class MAMLPlusPlus(MAML):
    """MAML with LSLR, MSL, DA and CA (see the module docstring); each is an option."""

    name = "maml++"
    Options = MAMLPlusPlusOptions
    compilable = False

    def __init__(self, model, multi_step_loss: bool = True, msl_epochs: int = 10,
                 min_step_weight: float = 0.03, first_order_epochs: int = 0, cosine_meta_lr: bool = True,
                 min_meta_lr: float = 1e-5, epoch_iterations: int = 500, update_rule="lslr",
                 per_step_bn: bool = True, **kwargs):
        norms = [(name, m) for name, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._NormBase) and m.affine] if per_step_bn else []
        affine = {f"{name}.{p}" if name else p for name, _ in norms for p in ("weight", "bias")}
        if affine:  # the inner loop does not move the per-step BatchNorm parameters
            chosen = select_adapted(model, kwargs.get("adapt_only"))
            kwargs["adapt_only"] = [n for n in chosen if n not in affine]
        super().__init__(model, update_rule=update_rule, **kwargs)
        #: per-step BatchNorm scale and shift, ``[K + 1, C]`` each, under the parameter's name with "." → "/"
        self.step_norms = nn.ParameterDict({
            n.replace(".", "/"): nn.Parameter(model.get_parameter(n).detach().clone()
                                              .unsqueeze(0).repeat(self.inner_steps + 1, 1))
            for n in sorted(affine)})
        self.multi_step_loss, self.msl_epochs = multi_step_loss, msl_epochs
        self.min_step_weight = min_step_weight
        self.first_order_epochs, self.epoch_iterations = first_order_epochs, epoch_iterations
        self.cosine_meta_lr, self.min_meta_lr = cosine_meta_lr, min_meta_lr
        self.register_buffer("iteration", torch.zeros((), dtype=torch.int64))

    # ----- per-step BatchNorm weights and biases: the inner loop's state carries the step index ------
    def _with_step_norms(self, params, step: int):
        if not self.step_norms:
            return params
        k = min(step, self.inner_steps)
        out = dict(params)
        for key, table in self.step_norms.items():
            n = key.replace("/", ".")
            value = table[k]
            lead = params[n].dim() - value.dim()
            out[n] = value.expand(*params[n].shape[:lead], *value.shape) if lead else value
        return out

    def meta_params(self):
        return self._with_step_norms(dict(self.model.named_parameters()), 0)

    def initial_params(self, support_x, support_y):
        return self._with_step_norms(super().initial_params(support_x, support_y), 0)

    def _init_state(self, params):
        state = super()._init_state(params)
        return (0, state) if self.step_norms else state

    def _advance(self, params, grads, state, loss=None):
        if not self.step_norms:
            return super()._advance(params, grads, state, loss)
        step, inner = state
        params, inner = super()._advance(params, grads, inner, loss)
        return self._with_step_norms(params, step + 1), (step + 1, inner)

    @property
    def epoch(self) -> int:
        return int(self.iteration) // self.epoch_iterations

    def _objective(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's meta-objective ``[T]`` and its query loss after the last step ``[T]``."""
        epoch, steps = self.epoch, self.inner_steps
        first_order = self.first_order or epoch < self.first_order_epochs
        if self.multi_step_loss and epoch < self.msl_epochs and steps > 1:
            losses = self.task_losses(self.meta_params(), batch, steps, first_order, per_step=True)
            weights = step_weights(steps, epoch, self.msl_epochs, self.min_step_weight).to(losses)
            return losses @ weights, losses[:, -1]
        losses = self.task_losses(self.meta_params(), batch, steps, first_order)
        return losses, losses

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        objective, last = self._objective(batch)
        return objective.mean(), {"query_loss": last.mean().item()}

    def meta_backward(self, batch: TaskBatch, scale: float = 1.0) -> tuple[float, dict[str, float]]:
        """On the per-task loop, one task's graph at a time (as MAML's)."""
        if self.strategy != "loop":
            return Algorithm.meta_backward(self, batch, scale)
        total, last_total = 0.0, 0.0
        for i in range(batch.num_tasks):
            objective, last = self._objective(batch[i])
            (objective[0] * (scale / batch.num_tasks)).backward()
            total, last_total = total + objective.item(), last_total + last.item()
        return total / batch.num_tasks, {"query_loss": last_total / batch.num_tasks}

    def describe(self) -> str:
        fixes = [f"update rule {type(self.update_rule).__name__}"]
        if self.step_norms:
            fixes.append("per-step BatchNorm weights and biases")
        if self.multi_step_loss:
            fixes.append(f"multi-step loss annealed over {self.msl_epochs} epochs")
        if self.first_order_epochs:
            fixes.append(f"first order for {self.first_order_epochs} epochs")
        if self.cosine_meta_lr:
            fixes.append(f"cosine meta lr down to {self.min_meta_lr:g}")
        return (f"`{self.name_in_config or self.name}`, inner lr {self.inner_lr} (initial), "
                f"{self.inner_steps} inner step(s), {', '.join(fixes)}; an epoch is {self.epoch_iterations} "
                "meta-iterations")

    @classmethod
    def resume_fixed(cls, config) -> tuple[str, ...]:
        """The cosine schedule's length is ``train.iterations``: extending a run would change its rates."""
        return ("train.iterations",) if config.algorithm.cosine_meta_lr else ()

    def outer_step(self, config, context, device):
        """The gradient step with the cosine schedule of the meta learning rate, counting
        iterations in ``self.iteration`` (``training.steps.ScheduledStep``)."""
        from metadapt.training.steps import ScheduledStep, build_optimizer

        base, epochs = config.train.meta_lr, config.train.iterations / self.epoch_iterations

        def lr_at(iteration: int) -> float:
            epoch = iteration // self.epoch_iterations
            return cosine_lr(base, self.min_meta_lr, epoch, epochs) if self.cosine_meta_lr else base

        return ScheduledStep(self, build_optimizer(config, self), context, config.train.meta_batch_size,
                             device, config.train.grad_shards, lr_at=lr_at,
                             clip_grad_norm=config.train.clip_grad_norm)
