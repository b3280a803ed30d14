"""The unit of data every algorithm consumes: a batch of tasks with a leading task axis."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class TaskBatch:
    """``T`` tasks, each with a support set (for adaptation) and a query set (for judging).

    Shapes: ``support_x [T, S, ...]``, ``support_y [T, S, ...]``, ``query_x [T, Q, ...]``,
    ``query_y [T, Q, ...]``. Optional ``info`` holds per-task ground truth a task family
    knows (for sinusoids: amplitude and phase), used for plots, never for training.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    info: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        t = self.support_x.shape[0]
        for name in ("support_y", "query_x", "query_y"):
            if getattr(self, name).shape[0] != t:
                raise ValueError(
                    f"TaskBatch: {name} has {getattr(self, name).shape[0]} tasks, support_x has {t}"
                )
        if self.support_x.shape[1] != self.support_y.shape[1]:
            raise ValueError("TaskBatch: support_x and support_y differ in the number of examples")
        if self.query_x.shape[1] != self.query_y.shape[1]:
            raise ValueError("TaskBatch: query_x and query_y differ in the number of examples")

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        info = None if self.info is None else {k: v.to(device) for k, v in self.info.items()}
        return TaskBatch(
            self.support_x.to(device), self.support_y.to(device),
            self.query_x.to(device), self.query_y.to(device), info,
        )

    def __getitem__(self, index: slice | int) -> TaskBatch:
        """Select tasks along the task axis (an int keeps the axis, length 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        info = None if self.info is None else {k: v[index] for k, v in self.info.items()}
        return TaskBatch(
            self.support_x[index], self.support_y[index],
            self.query_x[index], self.query_y[index], info,
        )


class TaskSource(Protocol):
    """Anything that draws tasks: ``sample(n, generator) -> TaskBatch``."""

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch: ...
