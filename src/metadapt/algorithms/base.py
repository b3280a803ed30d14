"""The two objects every algorithm provides: a meta-loss for training, an adapted model for use."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call, vmap

from metadapt.errors import UserError
from metadapt.tasks.batch import TaskBatch

Params = dict[str, torch.Tensor]


@runtime_checkable
class AdaptedModel(Protocol):
    """What adaptation returns, whatever the method: ``predict(x, step=k)`` after ``k`` of its
    ``steps`` (``None``: the last), for one task or a leading task axis (``batched``)."""

    steps: int
    batched: bool

    def predict(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor: ...


class Adapted:
    """A model adapted to one task, or to ``T`` tasks at once (``batched=True``: every
    tensor in the trajectory then has a leading task axis).

    ``trajectory[k]`` holds the fast parameters after ``k`` adaptation steps (``k = 0`` is
    the meta-learned initialization), so ``predict(x, step=k)`` reads any point of the
    adaptation curve; ``step=None`` uses the last. Predictions build no autograd graph.
    """

    def __init__(self, model: nn.Module, trajectory: list[Params], buffers: Params, batched: bool,
                 loop: bool = False):
        self.model = model
        self.trajectory = trajectory
        self.buffers = buffers
        self.batched = batched
        self.loop = loop  # predict task by task (the algorithm's task_parallel strategy), else vmap

    @property
    def steps(self) -> int:
        return len(self.trajectory) - 1

    @property
    def params(self) -> Params:
        return self.trajectory[-1]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor:
        params = self.trajectory[-1 if step is None else step]
        if not self.batched:
            return functional_call(self.model, (params, self.buffers), (x,))
        if self.loop:
            return torch.stack([functional_call(self.model,
                                                ({n: v[i] for n, v in params.items()}, self.buffers), (x[i],))
                                for i in range(x.shape[0])])
        fn = lambda p, xi: functional_call(self.model, (p, self.buffers), (xi,))  # noqa: E731
        return vmap(fn)(params, x)


class Algorithm(nn.Module):
    """An ``nn.Module`` holding the meta-parameters.

    Subclasses implement ``meta_loss(batch) -> (loss, metrics)`` (differentiable w.r.t.
    ``self.parameters()``), ``meta_backward`` where a lighter way to its gradient exists, and
    ``adapt_tasks(support_x, support_y, steps) -> Adapted`` over a leading task axis.
    ``adapt`` is the single-task form users call.
    """

    name: str = "algorithm"
    #: the recipe's ``algorithm.name`` (e.g. ``fomaml`` for a first-order ``MAML``), set by ``build``.
    name_in_config: str | None = None
    #: ``False`` for baselines that have nothing to meta-train (training from scratch).
    trainable: bool = True
    #: ``True`` for methods that only classify (metric-based): the task family must classify.
    classifies: bool = False
    #: ``True`` where the compiled meta-step (``train.compile``) covers the method.
    compilable: bool = False

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def meta_backward(self, batch: TaskBatch, scale: float = 1.0) -> tuple[float, dict[str, float]]:
        """Add ``scale ×`` the meta-gradient to each parameter's ``.grad``; returns the meta-loss and
        metrics. The trainer calls this. Methods with a per-task loop override it to differentiate
        one task at a time, so that peak memory holds one task's graph, not the meta-batch's."""
        loss, metrics = self.meta_loss(batch)
        (loss * scale).backward()
        return loss.item(), metrics

    def adapt_tasks(self, support_x: torch.Tensor, support_y: torch.Tensor,
                    steps: int | None = None) -> Adapted:
        raise NotImplementedError

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None) -> Adapted:
        """Adapt to one task given its support set ``[S, ...]``; returns an :class:`Adapted`."""
        batched = self.adapt_tasks(support_x.unsqueeze(0), support_y.unsqueeze(0), steps)
        trajectory = [{n: p[0] for n, p in params.items()} for params in batched.trajectory]
        return Adapted(batched.model, trajectory, batched.buffers, batched=False)

    def describe(self) -> str:
        """The report's words for this method and its options."""
        return f"`{self.name_in_config or self.name}`"

    @classmethod
    def from_config(cls, options, parts) -> Algorithm:
        """Build from a recipe: ``options`` are the ``algorithm:`` section's (a dataclass, or a dict
        for a class without ``Options``); ``parts`` (:class:`metadapt.build.Parts`) gives the task
        family, the loss, and the model built under the run's seed."""
        kwargs = vars(options) if not isinstance(options, dict) else options
        return cls(parts.seeded(parts.model), **kwargs)

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse a recipe this method cannot run (called when the config is validated)."""
        if config.train.compile and not cls.compilable:
            from metadapt.registry import builtin_names, lookup

            covered = [n for n in builtin_names("algorithm") if lookup("algorithm", n).target.compilable]
            raise UserError(f"train.compile=true covers {', '.join(covered)} and algorithms that declare "
                            f"compilable, not {config.algorithm.name}; set train.compile=false")


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": nn.functional.mse_loss,
    "cross_entropy": nn.functional.cross_entropy,
}
