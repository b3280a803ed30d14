"""The outer step of MAML for RL: collect the meta-batch's inner-step and post-adaptation
trajectories, then one TRPO update of the meta-parameters through the adaptation
(:func:`metadapt.training.trpo.trpo_update`). It keeps no state between updates (TRPO has no
optimizer state); ``discard`` restores the parameters from before the update. Under ``torchrun``
each process adapts to its slice of the meta-batch's tasks (see ``ppo.py``) and the update combines
the processes' gradients, curvature and line-search values."""
from __future__ import annotations

import copy

import torch

from metadapt.training import distributed
from metadapt.training.steps import OuterStep, StepResult, shared_metrics
from metadapt.training.trpo import _flat, trpo_update


class TRPOStep(OuterStep):
    def __init__(self, algorithm, context, tasks_per_step: int, device: torch.device):
        self.algorithm, self.tasks_per_step, self.device = algorithm, tasks_per_step, device
        self.context = context
        self._before = None

    def step(self, tasks, generator) -> StepResult:
        a = self.algorithm
        self._before = copy.deepcopy(a.state_dict())
        env, share, stream = distributed.process_tasks(tasks, self.tasks_per_step, generator, self.context,
                                                       self.device)
        batch = a.experience(env, stream)
        reduce = lambda x: distributed.weighted_sum(x, share, self.context)  # noqa: E731
        parameters = list(a.policy.parameters())
        with torch.enable_grad():
            gradient = _flat(torch.autograd.grad(a.surrogate(batch, with_sampling_term=True), parameters))
        gradient = reduce(gradient)
        finite = bool(torch.isfinite(gradient).all())
        stats = {}
        if finite:
            stats = trpo_update(parameters, lambda: a.surrogate(batch, graph=False),
                                lambda: a.kl(batch, graph=False), a.max_kl, a.cg_damping, a.cg_iterations,
                                a.backtracks, a.backtrack_ratio, gradient,
                                metric=lambda: a.kl(batch, fraction=a.metric_fraction), reduce=reduce)
            finite = all(bool(torch.isfinite(p).all()) for p in parameters)
        metrics = {**batch["metrics"], **stats}
        metrics["query_loss"] = -metrics["return"]
        # the line search's statistics are already the meta-batch's: each process reports its share
        return StepResult(metrics["query_loss"], shared_metrics(metrics, share), finite)

    def discard(self) -> None:
        if self._before is not None:
            self.algorithm.load_state_dict(self._before)
