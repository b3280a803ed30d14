"""Evaluate a trained run against the baselines and write results, figures and report."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from metadapt.algorithms import Algorithm
from metadapt.build import build_scratch, build_tasks
from metadapt.evaluation.curves import evaluate_learning_speed
from metadapt.evaluation.plots import plot_adaptation_curves, plot_example_fits
from metadapt.evaluation.report import write_report
from metadapt.training.checkpoint import atomic_write_text
from metadapt.training.run import Run


def _method_name(run: Run, taken: dict) -> str:
    name = run.config.algorithm.name
    return name if name not in taken else f"{name}:{run.path.name}"


def evaluate_run(run: Run, compare: list[Run] = (), tasks: int | None = None, steps: int | None = None,
                 progress: bool = True) -> dict:
    """Adaptation curves of ``run``, each ``compare`` run and training from scratch on the same
    test tasks; writes ``eval/results.json``, ``plots/*.png`` and ``report.md`` into ``run``."""
    cfg = run.config.eval
    tasks = cfg.tasks if tasks is None else tasks
    steps = cfg.steps if steps is None else steps
    methods: dict[str, Algorithm] = {run.config.algorithm.name: run.algorithm}
    for other in compare:
        methods[_method_name(other, methods)] = other.algorithm
    methods["scratch"] = build_scratch(run.config)
    device = run.config.train.device
    batches = {
        shots: build_tasks(run.config, shots=shots, queries=cfg.queries)
        .sample(tasks, torch.Generator().manual_seed(cfg.seed + shots)).to(device)
        for shots in cfg.shots
    }
    results = evaluate_learning_speed(methods, batches, steps, cfg.targets, progress=progress)
    results["seed"] = cfg.seed
    atomic_write_text(run.path / "eval" / "results.json", json.dumps(results, indent=1))

    figures = {"Adaptation curves": "plots/adaptation_curves.png"}
    plot_adaptation_curves(results, run.path / figures["Adaptation curves"])
    fit_methods = {k: v for k, v in methods.items() if k != "scratch"}
    for shots in cfg.shots[:2]:
        rel = f"plots/example_fits_{shots}shot.png"
        plot_example_fits(fit_methods, build_tasks(run.config, shots=shots), run.path / rel,
                          steps=tuple(s for s in (1, 10) if s <= steps) or (steps,), seed=cfg.seed)
        figures[f"Example fits, {shots}-shot"] = rel
    summary_path = run.path / "summary.json"
    training = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    write_report(run.path, run.config.to_dict(), training, results, figures)
    return results
