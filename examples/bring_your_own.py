"""Bring your own model and your own tasks: meta-train MAML on them from Python.

The tasks here are lines ``y = a·x + b`` with slope and intercept drawn per task; the model
is any ``nn.Module``. Run it:  python examples/bring_your_own.py [meta-iterations]
"""
import sys

import torch
from torch import nn

import metadapt
from metadapt.tasks import TaskBatch


class LineTasks:
    """A task source: anything with ``sample(num_tasks, generator) -> TaskBatch``."""

    def __init__(self, shots: int = 5, queries: int = 20):
        self.shots, self.queries = shots, queries

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        slope = torch.empty(num_tasks, 1, 1).uniform_(-3, 3, generator=generator)
        intercept = torch.empty(num_tasks, 1, 1).uniform_(-2, 2, generator=generator)
        x = torch.empty(num_tasks, self.shots + self.queries, 1).uniform_(-1, 1, generator=generator)
        y = slope * x + intercept
        s = self.shots
        return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:])


def main(iterations: int = 2000) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))   # any nn.Module
    maml = metadapt.MAML(model, inner_lr=0.1, inner_steps=1)
    optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)
    tasks, generator = LineTasks(), torch.Generator().manual_seed(0)
    for step in range(1, iterations + 1):
        loss, metrics = maml.meta_loss(tasks.sample(16, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, iterations // 5) == 0:
            print(f"step {step}: query MSE after adaptation {metrics['query_loss']:.4f}")

    new_task = tasks.sample(1, torch.Generator().manual_seed(123))
    adapted = maml.adapt(new_task.support_x[0], new_task.support_y[0], steps=5)
    for k in (0, 1, 5):
        mse = nn.functional.mse_loss(adapted.predict(new_task.query_x[0], step=k), new_task.query_y[0])
        print(f"new task, {k} adaptation step(s): query MSE {mse:.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
