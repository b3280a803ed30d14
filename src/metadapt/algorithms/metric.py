"""Shared machinery of the metric-based methods: embed support and query together, classify
each query by comparing its embedding with the support set's. Adaptation builds no parameters:
it only remembers the support set (prototypes or a memory are computed at prediction time, in
the same BatchNorm batch as the query, as during training)."""
from __future__ import annotations

import torch
from torch import nn

from metadapt.algorithms.base import Algorithm
from metadapt.tasks.batch import TaskBatch


class SupportMemory:
    """The adapted form of a metric-based method (an :class:`~metadapt.algorithms.base.AdaptedModel`
    with no steps): predictions are logits ``[.., Q, ways]``."""

    steps = 0

    def __init__(self, algorithm: MetricLearner, support_x: torch.Tensor, support_y: torch.Tensor,
                 batched: bool):
        self.algorithm, self.support_x, self.support_y, self.batched = (
            algorithm, support_x, support_y, batched)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor:
        if step not in (None, 0):
            raise ValueError(f"{self.algorithm.name} takes no adaptation steps; asked for step {step}")
        if not self.batched:
            return self.algorithm.task_logits(self.support_x, self.support_y, x)
        return torch.stack([self.algorithm.task_logits(sx, sy, q)
                            for sx, sy, q in zip(self.support_x, self.support_y, x)])


class MetricLearner(Algorithm):
    """Base: ``task_logits(support_x, support_y, query_x)`` defines the method."""

    classifies = True

    @classmethod
    def from_config(cls, options, parts) -> MetricLearner:
        """The model is an embedding (no head), built under the run's seed."""
        kwargs = vars(options) if not isinstance(options, dict) else options
        return cls(parts.seeded(lambda: parts.model(None)), **kwargs)

    def describe(self) -> str:
        return f"`{self.name_in_config or self.name}` (metric-based: no adaptation steps)"

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.loss_fn = nn.functional.cross_entropy
        self.inner_steps = 0

    def embed(self, support_x: torch.Tensor, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(torch.cat([support_x, query_x]))
        return z[: len(support_x)], z[len(support_x):]

    def task_logits(self, support_x, support_y, query_x) -> torch.Tensor:
        raise NotImplementedError

    def _episodes(self, batch: TaskBatch):
        """``(query loss, query accuracy)`` of each episode, in order."""
        for sx, sy, qx, qy in zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y):
            logits = self.task_logits(sx, sy, qx)
            yield self.loss_fn(logits, qy), (logits.argmax(-1) == qy).float().mean().item()

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        losses, accuracies = zip(*self._episodes(batch))
        loss = torch.stack(losses).mean()
        return loss, {"query_loss": loss.item(), "accuracy": sum(accuracies) / batch.num_tasks}

    def meta_backward(self, batch: TaskBatch, scale: float = 1.0) -> tuple[float, dict[str, float]]:
        """One episode at a time: peak memory holds one episode's graph."""
        total, correct = 0.0, 0.0
        for loss, accuracy in self._episodes(batch):
            (loss * (scale / batch.num_tasks)).backward()
            total += loss.item()
            correct += accuracy
        return total / batch.num_tasks, {"query_loss": total / batch.num_tasks,
                                         "accuracy": correct / batch.num_tasks}

    def adapt_tasks(self, support_x, support_y, steps=None, keep_steps: bool = True) -> SupportMemory:
        return SupportMemory(self, support_x, support_y, batched=True)

    def adapt(self, support_x, support_y, steps=None, keep_steps: bool = True) -> SupportMemory:
        return SupportMemory(self, support_x, support_y, batched=False)


def class_means(z: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Mean embedding of each class: ``[ways, d]``."""
    one_hot = nn.functional.one_hot(labels, ways).to(z.dtype)
    return (one_hot.T @ z) / one_hot.sum(0).unsqueeze(1)
