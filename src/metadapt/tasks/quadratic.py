"""Random quadratics ``f(x) = ‖Wx − y‖²`` (Andrychowicz et al., "Learning to learn by gradient descent
by gradient descent", NeurIPS 2016, §3.1): the first problem a learned optimizer is trained on.

A task is one ``(W, y)``, ``W`` a ``rows × dims`` matrix and ``y`` a ``rows``-vector, every entry drawn
IID from ``N(0, 1)``; the optimizee is a point ``x`` (``model.name: point``). A task's one support
"example" is the whole problem, input ``W`` and target ``y``, and its query set is the same problem:
what is measured is how far the optimizer has brought ``f`` after each step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.batch import TaskBatch
from metadapt.tasks.family import TaskFamily


def squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``‖Wx − y‖²`` per problem (the last axis), averaged over any problems in front."""
    return (prediction - target).pow(2).sum(-1).mean()


@dataclass(frozen=True)
class QuadraticTasks:
    """``sample(n, generator)``: ``support_x = query_x = W [n, 1, rows, dims]``, ``support_y = query_y = y
    [n, 1, rows]``."""

    dims: int = 10
    rows: int = 10

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        w = torch.randn(num_tasks, 1, self.rows, self.dims, generator=generator)
        y = torch.randn(num_tasks, 1, self.rows, generator=generator)
        return TaskBatch(w, y, w, y)


@dataclass
class QuadraticOptions:
    dims: int = option(10, positive=True, help="entries of x (the paper's 10)")
    rows: int = option(10, positive=True, help="rows of W and entries of y (the paper's 10)")


@register("task", "quadratic")
class QuadraticFamily(TaskFamily):
    """Random 10-dimensional quadratics; training, validation and test draw from one distribution,
    each split from its own seeded stream."""

    Options = QuadraticOptions
    default_model = "point"
    models = ("point",)

    def __init__(self, options=None):
        super().__init__(options)
        self.input_shape = (self.options.rows, self.options.dims)
        self.outputs = self.options.rows

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> QuadraticTasks:
        return QuadraticTasks(self.options.dims, self.options.rows)

    def loss(self, prediction, target):
        return squared_error(prediction, target)

    @property
    def metric(self) -> str:
        return "loss"

    def score(self, prediction, target, loss):
        return (prediction - target).pow(2).sum(-1).mean(-1)

    def eval_settings(self, eval_config):
        return [("quadratic", self.tasks("test"), 0)]

    def describe(self) -> list[str]:
        o = self.options
        return [f"- Tasks: random quadratics f(x) = ‖Wx − y‖², W {o.rows}×{o.dims} and y with N(0, 1) "
                "entries (Andrychowicz et al. 2016, §3.1)."]
