"""MAML and its relatives: first-order MAML, Meta-SGD and ANIL.

MAML (Finn, Abbeel & Levine, 2017, arXiv:1703.03400) meta-learns an initialization ``θ`` so
that a few gradient steps on a task's support set give a good model for its query set:

    min_θ  Σ_i  L_query_i(θ'_i),      θ'_i = U^K_i(θ)  (K inner steps, see ``gradient.py``).

The meta-gradient differentiates through the inner steps; for one step
``∇_θ L_q(θ') = (I − α ∇²_θ L_s(θ)) ∇_{θ'} L_q(θ')``. First-order MAML drops the Hessian term
(treats ``∇_θ L_s`` as a constant). Meta-SGD (Li et al., 2017, arXiv:1707.09835) also learns
``α`` as a tensor the shape of ``θ``. ANIL (Raghu et al., 2020, arXiv:1909.09157) adapts only the
head in the inner loop while the body is still meta-learned through the outer loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metadapt.algorithms.gradient import GradientLearner, GradientOptions
from metadapt.algorithms.update_rules import UpdateRule
from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import lookup, register
from metadapt.tasks.batch import TaskBatch


@dataclass
class MAMLOptions(GradientOptions):
    first_order: bool = option(False, help="drop the second-derivative term (first-order MAML)")
    update_rule: str = option("sgd", help="sgd | metasgd | pkg.module:Rule (algorithms/update_rules.py)")

    def validate(self, prefix: str) -> None:
        """The update rule exists and is one, before anything is built."""
        try:
            target = lookup("update_rule", self.update_rule).target
        except UserError as err:
            raise UserError(f"{prefix}update_rule: {err}") from None
        if not (isinstance(target, type) and issubclass(target, UpdateRule)):
            raise UserError(f"{prefix}update_rule={self.update_rule} is not an update rule (a subclass of "
                            "metadapt.UpdateRule); see docs/design.md, 'How to add an update rule'")


@register("algorithm", "anil", adapt_only="head")
@register("algorithm", "metasgd", update_rule="metasgd")
@register("algorithm", "fomaml", first_order=True)
@register("algorithm", "maml")
class MAML(GradientLearner):
    """Meta-loss: mean query loss over the meta-batch after ``inner_steps`` adaptation steps.

    Example::

        >>> from metadapt.models import MLP
        >>> from metadapt.tasks import SinusoidTasks
        >>> maml = MAML(MLP(1, [40, 40], 1), inner_lr=0.01, inner_steps=1)
        >>> batch = SinusoidTasks(shots=10).sample(25, torch.Generator().manual_seed(0))
        >>> loss, metrics = maml.meta_loss(batch)
        >>> loss.backward()   # gradients on maml.parameters(); step any optimizer
    """

    name = "maml"
    Options = MAMLOptions
    compilable = True

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        losses = self.task_losses(self.meta_params(), batch, self.inner_steps, self.first_order)
        loss = losses.mean()
        return loss, {"query_loss": loss.item()}

    def meta_backward(self, batch: TaskBatch, scale: float = 1.0) -> tuple[float, dict[str, float]]:
        """On the per-task loop, each task's query loss is differentiated as soon as it is computed
        (the same sum of gradients; peak memory of one task instead of the whole meta-batch)."""
        if self.strategy != "loop" or self.compile:
            return super().meta_backward(batch, scale)
        params, total = self.meta_params(), 0.0
        for i in range(batch.num_tasks):
            loss = self._task_losses(params, batch.support_x[i:i + 1], batch.support_y[i:i + 1],
                                     batch.query_x[i:i + 1], batch.query_y[i:i + 1], self.inner_steps,
                                     self.first_order)[0]
            (loss * (scale / batch.num_tasks)).backward()
            total += loss.item()
        loss = total / batch.num_tasks
        return loss, {"query_loss": loss}
