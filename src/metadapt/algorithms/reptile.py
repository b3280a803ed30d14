"""Reptile (Nichol, Achiam & Schulman, 2018, "On First-Order Meta-Learning Algorithms",
arXiv:1803.02999).

Each task adapts a copy of ``θ`` for ``K`` SGD steps on its support set, giving ``θ̃_i``; the
meta-update moves ``θ`` towards the mean of the adapted weights,
``θ ← θ + ε (mean_i θ̃_i − θ)``. The pseudo-gradient ``θ − mean_i θ̃_i`` is produced as the
gradient of the surrogate ``½ ‖θ − sg(mean_i θ̃_i)‖²`` so the trainer's optimizer applies it
(plain SGD with ``meta_lr = ε`` is exactly Reptile; Adam is the paper's Adam variant).
"""
from __future__ import annotations

import torch

from metadapt.algorithms.gradient import GradientLearner
from metadapt.tasks.batch import TaskBatch


class Reptile(GradientLearner):
    name = "reptile"

    def __init__(self, model, **kwargs):
        kwargs["first_order"] = True
        super().__init__(model, **kwargs)

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        adapted = self.adapt_tasks(batch.support_x, batch.support_y, self.inner_steps)
        target = adapted.params
        query = self.loss_fn(adapted.predict(batch.query_x), batch.query_y)
        params = self.meta_params()
        surrogate = sum(0.5 * (params[n] - target[n].mean(0)).pow(2).sum() for n in self.adapted_names)
        return surrogate, {"query_loss": query.item(), "reptile_distance": float(surrogate.detach()) * 2}
