"""Evaluate a trained run against the baselines and write results, figures and report.

Everything that depends on the kind of task (the settings, the score, the example figure, the
report's lines) comes from the run's task family."""
from __future__ import annotations

import json

import torch

from metadapt.algorithms import Algorithm, GradientLearner
from metadapt.build import build_scratch
from metadapt.evaluation.curves import evaluate_learning_speed
from metadapt.evaluation.plots import plot_adaptation_curves, plot_training_curve
from metadapt.evaluation.report import write_report
from metadapt.files import atomic_write_text
from metadapt.training.run import Run


def _method_name(run: Run, taken: dict) -> str:
    name = run.config.algorithm.name
    return name if name not in taken else f"{name}:{run.path.name}"


def evaluation_settings(run: Run, tasks: int) -> dict:
    """The test tasks of every evaluation setting, the same for every method (seeded)."""
    cfg, device = run.config.eval, run.config.train.device
    return {label: source.sample(tasks, torch.Generator().manual_seed(cfg.seed + offset)).to(device)
            for label, source, offset in run.family.eval_settings(cfg)}


def _scratch(runs: list[Run]) -> GradientLearner | None:
    """Training from scratch, adapted as the first gradient-based run adapts."""
    for run in runs:
        if isinstance(run.algorithm, GradientLearner) and run.algorithm.trainable:
            return build_scratch(run.config, run.family, model=run.given.get("model"),
                                 loss=run.given.get("loss"))
    return None


def evaluate_run(run: Run, compare: list[Run] = (), tasks: int | None = None, steps: int | None = None,
                 progress: bool = True, scratch: bool = True) -> dict:
    """Adaptation curves of ``run``, each ``compare`` run and training from scratch on the same
    test tasks; writes ``eval/results.json``, ``plots/*.png`` and ``report.md`` into ``run``."""
    if getattr(run.family, "reinforcement", False):
        from metadapt.evaluation.rl import evaluate_rl

        return evaluate_rl(run, compare, tasks=tasks, progress=progress)
    cfg = run.config.eval
    tasks = cfg.tasks if tasks is None else tasks
    steps = cfg.steps if steps is None else steps
    methods: dict[str, Algorithm] = {run.config.algorithm.name: run.algorithm}
    for other in compare:
        methods[_method_name(other, methods)] = other.algorithm
    baseline = _scratch([run, *compare]) if scratch else None
    if baseline is not None:
        methods["scratch"] = baseline
    settings = evaluation_settings(run, tasks)
    metric = run.family.metric if run.config.loss is None else "loss"
    results = evaluate_learning_speed(methods, settings, steps, cfg.targets, progress=progress,
                                      family=run.family, metric=metric)
    results["seed"] = cfg.seed
    atomic_write_text(run.path / "eval" / "results.json", json.dumps(results, indent=1))

    figures = {"Adaptation curves": "plots/adaptation_curves.png"}
    plot_adaptation_curves(results, run.path / figures["Adaptation curves"])
    trained = {name: m for name, m in methods.items() if m.trainable}
    figures.update(run.family.example_figures(trained, settings, run.path, steps, cfg))
    metrics_path = run.path / "metrics.jsonl"
    if metrics_path.is_file():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        rel = "plots/training_curve.png"
        if plot_training_curve(rows, run.path / rel, f"{run.config.name}: validation during meta-training"):
            figures["Validation during meta-training"] = rel
    summary_path = run.path / "summary.json"
    training = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    write_report(run, training, results, figures, methods)
    return results
