"""The two objects every algorithm provides: a meta-loss for training, an adapted model for use."""
from __future__ import annotations

import inspect
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


def check_step(step, steps: int) -> int:
    """``predict(step=k)``: a whole number 0 … ``steps`` (no counting from the end)."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
        raise UserError(f"step must be a whole number from 0 to {steps} (the steps adapted), got {step!r}")
    return step


class Adapted:
    """A model adapted to one task, or to ``T`` tasks at once (``batched=True``: every
    tensor in the trajectory then has a leading task axis).

    ``trajectory[k]`` holds the fast parameters after ``k`` adaptation steps (``k = 0`` is
    the meta-learned initialization), so ``predict(x, step=k)`` reads any point of the
    adaptation curve; ``step=None`` uses the last. Predictions build no autograd graph.
    """

    def __init__(self, model: nn.Module, trajectory: list[Params], buffers: Params, batched: bool,
                 loop: bool = False, kept: list[int] | None = None):
        self.model = model
        self.trajectory = trajectory
        self.buffers = buffers
        self.batched = batched
        self.loop = loop  # predict task by task (the algorithm's task_parallel strategy), else vmap
        #: the step of each trajectory entry (None: every step, 0 … steps)
        self.kept = kept

    @property
    def steps(self) -> int:
        return self.kept[-1] if self.kept is not None else len(self.trajectory) - 1

    def _at(self, step: int | None) -> Params:
        if step is None:
            return self.trajectory[-1]
        step = check_step(step, self.steps)
        if self.kept is None:
            return self.trajectory[step]
        if step not in self.kept:
            raise UserError(f"step {step} was not kept (adapted with keep_steps=False: steps "
                            f"{', '.join(map(str, self.kept))} only); adapt again with keep_steps=True")
        return self.trajectory[self.kept.index(step)]

    @property
    def params(self) -> Params:
        return self.trajectory[-1]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor:
        params = self._at(step)
        first = next(iter(params.values()), None)
        x = torch.as_tensor(x)  # NumPy arrays too; float64 inputs computed in the model's dtype
        if first is not None:
            same = x.is_floating_point() and first.is_floating_point()
            x = x.to(first.device, first.dtype if same else None)
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
                    steps: int | None = None, keep_steps: bool = True) -> Adapted:
        """Adapt ``T`` tasks at once (a leading task axis); ``keep_steps=False`` may keep only the start
        and the end of the adaptation."""
        raise NotImplementedError

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None,
              keep_steps: bool = True) -> Adapted:
        """Adapt to one task given its support set ``[S, ...]``; returns an :class:`Adapted`
        (``keep_steps=False``: only the start and the end are kept, not every step)."""
        args = (support_x.unsqueeze(0), support_y.unsqueeze(0), steps)
        lean = not keep_steps and "keep_steps" in inspect.signature(self.adapt_tasks).parameters
        batched = self.adapt_tasks(*args, keep_steps=False) if lean else self.adapt_tasks(*args)
        trajectory = [{n: p[0] for n, p in params.items()} for params in batched.trajectory]
        return Adapted(batched.model, trajectory, batched.buffers, batched=False, kept=batched.kept)

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
    def resume_fixed(cls, config) -> tuple[str, ...]:
        """Settings a resume may normally change (``rundir.RESUMABLE``) that this method's numbers
        depend on, so a resume must keep them (MAML++: ``train.iterations`` sets its schedule)."""
        return ()

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
