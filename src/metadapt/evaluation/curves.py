"""Learning speed: the query score after 0, 1, …, N adaptation steps on fresh test tasks.

The score is the query MSE for regression and the query accuracy for classification (labels
are integers). Metric-based methods take no steps: their curve is one point.
"""
from __future__ import annotations

import torch
from torch.func import vmap

from metadapt.algorithms import Algorithm
from metadapt.evaluation.stats import mean_ci, paired_difference, steps_to_target
from metadapt.progress import track
from metadapt.tasks import TaskBatch, TaskFamily


def per_task_score(algorithm: Algorithm, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[T]`` accuracy (integer targets) or loss (real targets) of each task's predictions."""
    if not torch.is_floating_point(target):
        return (prediction.argmax(-1) == target).float().mean(-1)
    return vmap(algorithm.loss_fn)(prediction, target)


@torch.no_grad()
def adaptation_curve(algorithm: Algorithm, batch: TaskBatch, steps: int, chunk: int = 100,
                     family: TaskFamily | None = None) -> torch.Tensor:
    """Per-task query score after each adaptation step, shape ``[T, k + 1]`` with ``k`` the
    steps the method takes (``steps``, or 0 for a metric-based method). The score is the task
    family's (accuracy, or the algorithm's loss), or read from the labels without a family."""
    score = per_task_score if family is None else lambda a, p, t: family.score(p, t, a.loss_fn)  # noqa: E731
    rows = []
    for start in range(0, batch.num_tasks, chunk):
        part = batch[start:start + chunk]
        adapted = algorithm.adapt_tasks(part.support_x, part.support_y, steps)
        taken = adapted.steps
        rows.append(torch.stack([score(algorithm, adapted.predict(part.query_x, step=k), part.query_y)
                                 for k in range(taken + 1)], dim=1).cpu())
    return torch.cat(rows)


def evaluate_learning_speed(methods: dict[str, Algorithm], settings: dict[str, TaskBatch], steps: int,
                            targets: list[float], progress: bool = True, family: TaskFamily | None = None,
                            metric: str | None = None) -> dict:
    """Adaptation curves (mean and 95% Student-t CI over tasks) of every method in every setting, all
    methods on the same tasks, plus the steps each needs to reach each target score, and the paired
    difference of the first method against each other one (task by task, before adaptation and
    after the last step). ``metric``
    names the score (``accuracy``: higher is better; ``mse`` or ``loss``: lower), by default the
    family's, or read from the labels."""
    if metric is None:
        first = next(iter(settings.values()))
        metric = family.metric if family is not None else (
            "mse" if torch.is_floating_point(first.query_y) else "accuracy")
    results: dict = {"metric": metric, "steps": steps, "targets": targets, "settings": {}}
    jobs = [(label, name) for label in settings for name in methods]
    curves: dict = {}
    for label, name in track(jobs, desc="evaluate", unit="curve", enabled=progress):
        batch = settings[label]
        algorithm = methods[name]
        if getattr(algorithm, "supports", lambda b: True)(batch) is False:
            continue
        curve = adaptation_curve(algorithm, batch, steps, family=family)
        curves[label, name] = curve
        mean, ci = mean_ci(curve)
        entry = results["settings"].setdefault(label, {"tasks": batch.num_tasks,
                                                       "queries": batch.query_x.shape[1], "methods": {}})
        entry["methods"][name] = {
            "mean": mean.tolist(),
            "ci95": ci.tolist(),
            "steps_to_target": {str(t): steps_to_target(mean.tolist(), t,
                                                        higher_is_better=metric == "accuracy")
                                for t in targets},
        }
    first = next(iter(methods))
    for (label, name), curve in curves.items():
        if name == first or (label, first) not in curves:
            continue
        ours, theirs = curves[label, first], curve
        last = min(ours.shape[1], theirs.shape[1]) - 1
        ours, theirs = ours[:, [0, last] if last else [0]], theirs[:, [0, last] if last else [0]]
        diffs = [paired_difference(ours[:, i], theirs[:, i]) for i in range(ours.shape[1])]
        results["settings"][label].setdefault("paired", {})[name] = {
            "against": first, "steps": [0, last] if last else [0],
            "mean_difference": [d[0] for d in diffs], "ci95": [d[1] for d in diffs]}
    return results
