"""Reptile (Nichol, Achiam & Schulman, 2018, "On First-Order Meta-Learning Algorithms",
arXiv:1803.02999).

Each task adapts a copy of ``θ`` for ``K`` SGD steps on its support set, giving ``θ̃_i``; the
meta-update moves ``θ`` towards the mean of the adapted weights,
``θ ← θ + ε (mean_i θ̃_i − θ)``. The pseudo-gradient ``θ − mean_i θ̃_i`` is produced as the
gradient of the surrogate ``⟨θ, sg(mean_i (θ − θ̃_i))⟩`` so the trainer's optimizer applies it
(plain SGD with ``meta_lr = ε`` is exactly Reptile; Adam is the paper's Adam variant). Averaging
the per-task displacements ``θ − θ̃_i`` (rather than subtracting the mean of ``θ̃_i``) keeps a
parameter that no task moved at an exact zero, whatever the split of the meta-batch.
"""
from __future__ import annotations

import torch

from metadapt.algorithms.gradient import GradientLearner, GradientOptions
from metadapt.registry import register
from metadapt.tasks.batch import TaskBatch


@register("algorithm", "reptile")
class Reptile(GradientLearner):
    name = "reptile"
    Options = GradientOptions

    def __init__(self, model, **kwargs):
        kwargs["first_order"] = True
        super().__init__(model, **kwargs)

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        adapted = self.adapt_tasks(batch.support_x, batch.support_y, self.inner_steps)
        target = adapted.params
        # the tasks' query sets as one batch ([T, Q, …] → [T·Q, …]): the mean of equal-sized tasks' losses
        query = self.loss_fn(adapted.predict(batch.query_x).flatten(0, 1), batch.query_y.flatten(0, 1))
        params = self.meta_params()
        displacement = {n: (params[n].detach() - target[n]).mean(0) for n in self.adapted_names}
        surrogate = sum((params[n] * displacement[n]).sum() for n in self.adapted_names)
        distance = sum(d.pow(2).sum() for d in displacement.values()).sqrt()
        return surrogate, {"query_loss": query.item(), "reptile_distance": distance.item()}
