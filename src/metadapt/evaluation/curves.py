"""Learning speed: query loss after 0, 1, …, N adaptation steps on fresh test tasks."""
from __future__ import annotations

import torch
from torch.func import vmap
from tqdm.auto import tqdm

from metadapt.algorithms import Algorithm
from metadapt.evaluation.stats import mean_ci, steps_to_target
from metadapt.tasks import TaskBatch


@torch.no_grad()
def adaptation_curve(algorithm: Algorithm, batch: TaskBatch, steps: int, chunk: int = 300) -> torch.Tensor:
    """Per-task query loss after each adaptation step, shape ``[T, steps + 1]``."""
    rows = []
    per_task_loss = vmap(algorithm.loss_fn)
    for start in range(0, batch.num_tasks, chunk):
        part = batch[start:start + chunk]
        adapted = algorithm.adapt_tasks(part.support_x, part.support_y, steps)
        rows.append(torch.stack(
            [per_task_loss(adapted.predict(part.query_x, step=k), part.query_y) for k in range(steps + 1)], dim=1))
    return torch.cat(rows)


def evaluate_learning_speed(methods: dict[str, Algorithm], batches: dict[int, TaskBatch], steps: int,
                            targets: list[float], progress: bool = True) -> dict:
    """Adaptation curves (mean and 95% CI over tasks) of every method at every shot count,
    all methods on the same tasks, plus the steps each needs to reach each target loss."""
    results: dict = {"steps": steps, "targets": targets, "shots": {}}
    jobs = [(shots, name) for shots in batches for name in methods]
    for shots, name in tqdm(jobs, desc="evaluate", disable=not progress, unit="curve"):
        batch = batches[shots]
        curve = adaptation_curve(methods[name], batch, steps)
        mean, ci = mean_ci(curve)
        entry = results["shots"].setdefault(str(shots), {"tasks": batch.num_tasks, "queries": batch.query_x.shape[1], "methods": {}})
        entry["methods"][name] = {
            "mean": mean.tolist(),
            "ci95": ci.tolist(),
            "steps_to_target": {str(t): steps_to_target(mean.tolist(), t) for t in targets},
        }
    return results
