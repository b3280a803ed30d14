"""From a validated :class:`~metadapt.config.Config` to the objects a run uses, through the registry:
the task family, the model, the loss and the algorithm. Objects a user passes from Python (a
model, a loss, a task source or family) take the place of the recipe's."""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metadapt.algorithms import Algorithm, Scratch
from metadapt.config import Config
from metadapt.errors import UserError
from metadapt.registry import import_object
from metadapt.tasks import GivenTasks, TaskFamily, TaskSource

DEFAULT = object()  # "the family's number of outputs"


def build_family(config: Config, tasks: TaskFamily | TaskSource | None = None) -> TaskFamily:
    """The run's task family: ``tasks`` when given (a family, or a task source to wrap), else the
    recipe's ``task:`` section."""
    if isinstance(tasks, TaskFamily):
        return tasks
    if tasks is not None:
        return GivenTasks.wrap(tasks)
    return config.task.entry.target(config.task.options)  # a TaskFamily: config.validate checked it


def build_tasks(config: Config, subset: str = "train", shots: int | None = None, queries: int | None = None,
                ways: int | None = None) -> TaskSource:
    """The task source of ``subset`` ("train", "val" or "test") of the recipe's family."""
    return build_family(config).tasks(subset, shots=shots, queries=queries, ways=ways)


def build_model(config: Config, family: TaskFamily, outputs: Any = DEFAULT) -> nn.Module:
    """The recipe's model for ``family``'s inputs, with ``outputs`` outputs (``None``: an
    embedding without a head, for metric-based methods). Draws from the global RNG."""
    entry = config.model.entry
    outputs = family.outputs if outputs is DEFAULT else outputs
    if hasattr(entry.target, "from_options"):
        return entry.target.from_options(config.model.options, tuple(family.input_shape), outputs)
    options = config.model.option_dict()
    try:
        return entry.target(**options)
    except TypeError as err:
        raise UserError(f"model.name={config.model.name}: {err}; "
                        "set its arguments in the model: section") from None


def build_loss(config: Config, family: TaskFamily, loss: Callable | None = None) -> Callable:
    """``loss``, else the recipe's ``loss:`` callable, else the family's."""
    if loss is not None:
        return loss
    if config.loss is not None:
        if config.loss.startswith("given:"):
            raise UserError(f"this run was trained with a loss given from Python ({config.loss[6:]}); "
                            "load it with metadapt.load(RUN, loss=...), or name the loss as "
                            "pkg.module:function")
        return import_object("loss", config.loss)
    return family.loss


@dataclass
class Parts:
    """What an algorithm's ``from_config`` builds from: the task family, the loss, and the model
    (``model(outputs)`` builds one; ``seeded(fn)`` calls ``fn`` under the run's seed in a forked RNG,
    leaving the global generator untouched)."""

    config: Config
    family: TaskFamily
    loss: Callable
    given_model: nn.Module | None = None

    def model(self, outputs: Any = DEFAULT) -> nn.Module:
        if self.given_model is not None:
            return self.given_model
        return build_model(self.config, self.family, outputs)

    def model_for(self, input_shape: tuple[int, ...], outputs: Any) -> nn.Module:
        """The recipe's model for inputs of ``input_shape`` and ``outputs`` outputs that the algorithm,
        not the task family, decides (a policy's observation and action sizes)."""
        if self.given_model is not None:
            return self.given_model
        entry = self.config.model.entry
        if hasattr(entry.target, "from_options"):
            return entry.target.from_options(self.config.model.options, tuple(input_shape), outputs)
        return build_model(self.config, self.family, outputs)

    def seeded(self, fn: Callable[[], Any], offset: int = 0) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed + offset)
            return fn()


def build_algorithm(config: Config, family: TaskFamily | None = None, model: nn.Module | None = None,
                    loss: Callable | None = None) -> Algorithm:
    """The run's algorithm, its model initialised from ``train.seed`` (global RNG untouched)."""
    family = build_family(config) if family is None else family
    cls = config.algorithm.entry.target  # an Algorithm: config.validate checked it
    parts = Parts(config, family, build_loss(config, family, loss), model)
    algorithm = cls.from_config(config.algorithm.options, parts)
    algorithm.name_in_config = config.algorithm.name
    return algorithm.to(config.train.device)


def build_scratch(config: Config, family: TaskFamily, model: nn.Module | None = None,
                  loss: Callable | None = None) -> Scratch:
    """Training from scratch, adapted as ``config``'s (gradient-based) algorithm adapts: the same
    inner lr, steps and task-parallel strategy, with plain first-order SGD on every parameter."""
    a = config.algorithm

    def fresh() -> nn.Module:
        if model is None:
            return build_model(config, family)
        clone = copy.deepcopy(model)
        for m in clone.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return clone

    return Scratch(fresh, seed=config.eval.seed, loss=build_loss(config, family, loss), inner_lr=a.inner_lr,
                   inner_steps=a.inner_steps, first_order=True,
                   task_parallel=a.task_parallel).to(config.train.device)


__all__ = ["build_family", "build_tasks", "build_model", "build_loss", "build_algorithm", "build_scratch",
           "Parts"]
