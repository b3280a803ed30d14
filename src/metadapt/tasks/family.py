"""A task family: one object that knows everything about a kind of task the rest of the library asks.

It builds the train / validation / test task sources from its recipe section, owns the loss and
the score (MSE or accuracy), the shapes a model must take and give, the evaluation settings, the
example figure and the report's lines. The trainer, the evaluator, the report and the CLI ask the
family; none of them names one. A new family is one class::

    @dataclass
    class Options:                      # the keys of the recipe's task: section
        shots: int = option(10, positive=True)
        queries: int = option(10, positive=True)

    class Lines(TaskFamily):
        Options = Options
        input_shape, outputs = (1,), 1
        def tasks(self, split="train", shots=None, queries=None, ways=None):
            return LineTasks(shots or self.options.shots, queries or self.options.queries)

named in a recipe as ``task: {family: pkg.module:Lines, shots: 5}``, or registered under a short
name with ``@register("task", "lines")``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import vmap

from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import import_path, register
from metadapt.tasks.batch import TaskBatch, TaskSource


class TaskFamily:
    """Base of every task family; subclasses set ``Options`` and implement :meth:`tasks`."""

    Options: type
    #: the model a recipe gets when it names none
    default_model: str = "mlp"
    #: the built-in models that fit this family's inputs (``None``: any); a user's model always may
    models: tuple[str, ...] | None = None
    #: the shape of one input example and the number of model outputs (classes, or regression targets)
    input_shape: tuple[int, ...] = (1,)
    outputs: int = 1
    #: labels are class indices: the score is accuracy (higher is better), else the loss (lower)
    classification: bool = False

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    # ----- tasks -------------------------------------------------------------------------------
    def tasks(self, split: str = "train", shots: int | None = None, queries: int | None = None,
              ways: int | None = None) -> TaskSource:
        """The task source of ``split`` (``"train"``, ``"val"`` or ``"test"``); ``shots``,
        ``queries`` and ``ways`` replace the recipe's for evaluation settings."""
        raise NotImplementedError

    def num_classes(self, split: str = "train") -> int | None:
        """Classes of ``split`` (a classifier over all of them is the pretrain baseline's model)."""
        return None

    # ----- loss and score ----------------------------------------------------------------------
    @property
    def metric(self) -> str:
        return "accuracy" if self.classification else "mse"

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.classification:
            return nn.functional.cross_entropy(prediction, target)
        return nn.functional.mse_loss(prediction, target)

    def score(self, prediction: torch.Tensor, target: torch.Tensor, loss: Callable) -> torch.Tensor:
        """``[T]`` score of each task's predictions: accuracy for class labels, else ``loss``."""
        if not torch.is_floating_point(target):
            return (prediction.argmax(-1) == target).float().mean(-1)
        return vmap(loss)(prediction, target)

    # ----- evaluation and report ---------------------------------------------------------------
    def eval_settings(self, eval_config) -> list[tuple[str, TaskSource, int]]:
        """``(label, test task source, seed offset)`` of every evaluation setting."""
        return [(f"{shots}-shot", self.tasks("test", shots=shots, queries=eval_config.queries), shots)
                for shots in eval_config.shots]

    def example_figures(self, methods: dict, settings: dict[str, TaskBatch], run_dir: Path, steps: int,
                        eval_config) -> dict[str, str]:
        """Draw this family's example figure(s) of the meta-trained ``methods`` into ``run_dir``;
        returns ``{title: path relative to run_dir}``."""
        return {}

    def describe(self) -> list[str]:
        """The report's lines about the tasks."""
        opts = (", ".join(f"{k} {v}" for k, v in vars(self.options).items())
                if hasattr(self.options, "__dict__") else "")
        return [f"- Tasks: `{type(self).__name__}`" + (f" ({opts})." if opts else ".")]

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse a recipe whose model or algorithm does not fit this family."""
        from metadapt.registry import is_import_path, lookup

        model = config.model.name
        if cls.models is not None and not is_import_path(model) and model not in cls.models:
            raise UserError(f"task.family={config.task.family} needs model.name "
                            f"{' or '.join(cls.models)}, not {model}")
        if (getattr(lookup("algorithm", config.algorithm.name).target, "classifies", False)
                and not cls.classification):
            raise UserError(f"algorithm.name={config.algorithm.name} classifies; use it with a "
                            "classification task family such as task.family=omniglot")


@dataclass
class GivenOptions:
    source: str = option("", help="the class of the task source given from Python (recorded, not rebuilt)")
    input_shape: list[int] = option([1], positive=True, help="shape of one input example")
    outputs: int = option(1, positive=True, help="model outputs: classes, or regression targets")
    classification: bool = option(False, help="labels are class indices")
    shots: int = option(1, positive=True, help="support examples per task")


@register("task", "given")
class GivenTasks(TaskFamily):
    """Tasks given from Python (``metadapt.train(config, run, tasks=source)``) as any object with
    ``sample(n, generator) -> TaskBatch``: the same source serves training, validation and
    evaluation. Shapes and the kind of labels are read from one task drawn with a generator of
    its own, and recorded in the run's ``task: {family: given, …}``, so ``metadapt.load`` rebuilds
    the model without the object; evaluation needs the object again and says so."""

    Options = GivenOptions

    def __init__(self, options: Any = None, source: TaskSource | None = None):
        super().__init__(options)
        self.source = source
        if source is not None:
            probe = source.sample(1, torch.Generator().manual_seed(0))
            classification = not torch.is_floating_point(probe.support_y)
            self.options.input_shape = list(probe.support_x.shape[2:])
            self.options.classification = classification
            self.options.outputs = (int(probe.support_y.max()) + 1 if classification
                                    else int(probe.support_y[0, 0].numel()))
            self.options.shots = probe.support_x.shape[1]
        self.classification = self.options.classification
        self.input_shape = tuple(self.options.input_shape)
        self.outputs = self.options.outputs

    @classmethod
    def wrap(cls, source: TaskSource) -> GivenTasks:
        return cls(GivenOptions(import_path(source) or type(source).__qualname__), source)

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> TaskSource:
        if self.source is None:
            raise UserError(
                f"this run was trained on tasks given from Python ({self.options.source or 'an object'}), "
                "which metadapt cannot rebuild from the recipe; evaluate it from Python with "
                "metadapt.evaluate_run(metadapt.load(RUN, tasks=...)), or make the tasks a task family and "
                "name it in the recipe (task.family: pkg.module:Family; docs/design.md, "
                "'How to add a task family')")
        return self.source

    def eval_settings(self, eval_config):
        return [(f"{self.options.shots}-shot", self.tasks("test"), self.options.shots)]

    def describe(self) -> list[str]:
        return [f"- Tasks: given from Python (`{self.options.source}`), {self.options.shots} support "
                "examples per task."]
