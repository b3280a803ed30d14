"""Adaptation curves, confidence intervals, learning-speed metrics, plots and reports."""
from metadapt.evaluation.curves import adaptation_curve, evaluate_learning_speed
from metadapt.evaluation.evaluate import evaluate_run
from metadapt.evaluation.stats import mean_ci, steps_to_target

__all__ = ["adaptation_curve", "evaluate_learning_speed", "evaluate_run", "mean_ci", "steps_to_target"]
