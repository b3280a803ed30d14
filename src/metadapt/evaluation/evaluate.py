"""Evaluate a trained run against the baselines and write results, figures and report.

Everything that depends on the kind of task (the settings, the score, the example figure, the
report's lines) comes from the run's task family."""
from __future__ import annotations

import torch

from metadapt.algorithms import Algorithm, GradientLearner
from metadapt.build import build_scratch
from metadapt.errors import UserError
from metadapt.evaluation.curves import evaluate_learning_speed
from metadapt.evaluation.plots import plot_adaptation_curves, plot_training_curve
from metadapt.evaluation.report import write_report
from metadapt.files import atomic_write_text, strict_json
from metadapt.resources import refuse_unless_fits
from metadapt.training import rundir
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


MAX_TASKS, MAX_STEPS = 100_000, 10_000
CHUNK = 100  # tasks adapted at once by evaluation.curves.adaptation_curve


def evaluate_run(run: Run, compare: list[Run] = (), tasks: int | None = None, steps: int | None = None,
                 progress: bool = True, scratch: bool = True) -> dict:
    """Adaptation curves of ``run``, each ``compare`` run and training from scratch on the same
    test tasks; writes ``eval/results.json``, ``plots/*.png`` and ``report.md`` into ``run`` as one
    set: all are made in a staging folder and moved into place only when every one is written, with
    the run's writer lock held (a run still training is refused)."""
    if tasks is not None and not 1 <= int(tasks) <= MAX_TASKS:
        raise UserError(f"--tasks must be between 1 and {MAX_TASKS:,}, got {tasks}")
    if steps is not None and not 0 <= int(steps) <= MAX_STEPS:
        raise UserError(f"--steps must be between 0 and {MAX_STEPS:,}, got {steps}")
    for other in compare:
        if (type(other.family) is not type(run.family)
                or tuple(other.family.input_shape) != tuple(run.family.input_shape)
                or other.family.outputs != run.family.outputs):
            raise UserError(
                f"--compare {str(other.path)!r} is a {other.config.task.family} run with "
                f"{other.family.outputs} outputs, {str(run.path)!r} a {run.config.task.family} run with "
                f"{run.family.outputs}; compare runs trained on the same kind of task")
        rl = getattr(run.family, "reinforcement", False)
        if rl and other.config.task.to_dict() != run.config.task.to_dict():
            raise UserError(f"--compare {str(other.path)!r} was trained on other environments "
                            f"({other.config.task.to_dict()}) than {str(run.path)!r}; compare agents of one "
                            "task")
    steps_asked = run.config.eval.steps if steps is None else int(steps)
    for other in (run, *compare):
        estimate = getattr(other.algorithm, "memory_estimate", None)
        if estimate is not None:
            chunk = min(CHUNK, run.config.eval.tasks if tasks is None else int(tasks))
            refuse_unless_fits(estimate(chunk, steps_asked, trajectory=True), other.device,
                               f"evaluating {steps_asked} adaptation steps of {chunk} tasks at a time",
                               "lower --steps")
    with rundir.locked(run.path, "eval"), rundir.staged(run.path) as stage:
        run.out, run.compared = stage, list(compare)
        try:
            return _evaluate(run, compare, tasks, steps, progress, scratch)
        finally:
            run.out, run.compared = None, []


def _evaluate(run: Run, compare, tasks, steps, progress, scratch) -> dict:
    if getattr(run.family, "reinforcement", False):
        from metadapt.evaluation.rl import evaluate_rl

        return evaluate_rl(run, compare, tasks=tasks, progress=progress, scratch=scratch)
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
    atomic_write_text(run.outputs / "eval" / "results.json", strict_json(results, indent=1))

    figures = {"Adaptation curves": "plots/adaptation_curves.png"}
    plot_adaptation_curves(results, run.outputs / figures["Adaptation curves"])
    trained = {name: m for name, m in methods.items() if m.trainable}
    figures.update(run.family.example_figures(trained, settings, run.outputs, steps, cfg))
    rel = "plots/training_curve.png"
    title = f"{run.config.name}: meta-training"
    if plot_training_curve(run.metrics(), run.outputs / rel, title):
        figures["Meta-training: training and validation"] = rel
    write_report(run, run.summary(), results, figures, methods)
    return results
