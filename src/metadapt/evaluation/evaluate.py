"""Evaluate a trained run against the baselines and write results, figures and report."""
from __future__ import annotations

import json

import torch

from metadapt.algorithms import Algorithm, GradientLearner
from metadapt.build import build_scratch, build_tasks, is_classification
from metadapt.evaluation.curves import evaluate_learning_speed
from metadapt.evaluation.plots import (plot_adaptation_curves, plot_example_episodes, plot_example_fits,
                                       plot_training_curve)
from metadapt.evaluation.report import write_report
from metadapt.training.checkpoint import atomic_write_text
from metadapt.training.run import Run


def _method_name(run: Run, taken: dict) -> str:
    name = run.config.algorithm.name
    return name if name not in taken else f"{name}:{run.path.name}"


def evaluation_settings(run: Run, tasks: int) -> dict:
    """The test tasks of every evaluation setting, the same for every method (seeded)."""
    cfg, device = run.config.eval, run.config.train.device
    if not is_classification(run.config):
        combos = [(f"{shots}-shot", dict(shots=shots, queries=cfg.queries), shots) for shots in cfg.shots]
    else:
        combos = [(f"{ways}-way {shots}-shot", dict(ways=ways, shots=shots, queries=cfg.queries), 1000 * ways + shots)
                  for ways in cfg.ways for shots in cfg.shots]
    return {label: build_tasks(run.config, "test", **kw).sample(tasks, torch.Generator().manual_seed(cfg.seed + offset)).to(device)
            for label, kw, offset in combos}


def evaluate_run(run: Run, compare: list[Run] = (), tasks: int | None = None, steps: int | None = None,
                 progress: bool = True, scratch: bool = True) -> dict:
    """Adaptation curves of ``run``, each ``compare`` run and training from scratch on the same
    test tasks; writes ``eval/results.json``, ``plots/*.png`` and ``report.md`` into ``run``."""
    cfg = run.config.eval
    tasks = cfg.tasks if tasks is None else tasks
    steps = cfg.steps if steps is None else steps
    methods: dict[str, Algorithm] = {run.config.algorithm.name: run.algorithm}
    for other in compare:
        methods[_method_name(other, methods)] = other.algorithm
    if scratch and any(isinstance(m, GradientLearner) for m in methods.values()):
        methods["scratch"] = build_scratch(run.config)
    settings = evaluation_settings(run, tasks)
    results = evaluate_learning_speed(methods, settings, steps, cfg.targets, progress=progress)
    results["seed"] = cfg.seed
    atomic_write_text(run.path / "eval" / "results.json", json.dumps(results, indent=1))

    figures = {"Adaptation curves": "plots/adaptation_curves.png"}
    plot_adaptation_curves(results, run.path / figures["Adaptation curves"])
    if is_classification(run.config):
        label, batch = next(iter(settings.items()))
        rel = "plots/example_episodes.png"
        plot_example_episodes(run.algorithm, batch.to("cpu"), run.path / rel)
        figures[f"Example episodes, {label}"] = rel
    else:
        fit_methods = {k: v for k, v in methods.items() if k != "scratch"}
        for shots in cfg.shots[:2]:
            rel = f"plots/example_fits_{shots}shot.png"
            plot_example_fits(fit_methods, build_tasks(run.config, shots=shots), run.path / rel,
                              steps=tuple(s for s in (1, 10) if s <= steps) or (steps,), seed=cfg.seed)
            figures[f"Example fits, {shots}-shot"] = rel
    metrics_path = run.path / "metrics.jsonl"
    if metrics_path.is_file():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        rel = "plots/training_curve.png"
        if plot_training_curve(rows, run.path / rel, f"{run.config.name}: validation during meta-training"):
            figures["Validation during meta-training"] = rel
    summary_path = run.path / "summary.json"
    training = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    write_report(run.path, run.config.to_dict(), training, results, figures)
    return results
