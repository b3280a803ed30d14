"""From a validated :class:`~metadapt.config.Config` to the objects a run uses."""
from __future__ import annotations

import torch
from torch import nn

from metadapt.algorithms import MAML, Algorithm, Pretrain, Reptile, Scratch
from metadapt.config import Config
from metadapt.models import MLP
from metadapt.tasks import SinusoidTasks

#: algorithm name → (class, options the name implies)
ALGORITHMS: dict[str, tuple[type, dict]] = {
    "maml": (MAML, {}),
    "fomaml": (MAML, {"first_order": True}),
    "metasgd": (MAML, {"learn_inner_lr": True}),
    "anil": (MAML, {"adapt_only": "head"}),
    "reptile": (Reptile, {}),
    "pretrain": (Pretrain, {}),
}


def build_tasks(config: Config, shots: int | None = None, queries: int | None = None) -> SinusoidTasks:
    return SinusoidTasks.preset(
        config.task.preset,
        shots=config.task.shots if shots is None else shots,
        queries=config.task.queries if queries is None else queries,
    )


def build_model(config: Config) -> nn.Module:
    return MLP(1, config.model.hidden, 1)


def _seeded(fn, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def _options(config: Config) -> dict:
    a = config.algorithm
    cls, implied = ALGORITHMS[a.name]
    options = dict(
        loss="mse", inner_lr=a.inner_lr, inner_steps=a.inner_steps, first_order=a.first_order,
        learn_inner_lr=a.learn_inner_lr, adapt_only=a.adapt_only, task_parallel=a.task_parallel,
    )
    options.update({k: v for k, v in implied.items() if v})
    return options


def build_algorithm(config: Config) -> Algorithm:
    """The run's algorithm, its model initialised from ``train.seed`` (global RNG untouched)."""
    cls, _ = ALGORITHMS[config.algorithm.name]
    options = _options(config)
    if cls is Reptile:
        options.pop("first_order")
    algorithm = cls(_seeded(lambda: build_model(config), config.train.seed), **options)
    algorithm.name_in_config = config.algorithm.name
    return algorithm.to(config.train.device)


def build_scratch(config: Config) -> Scratch:
    """Training from scratch, adapted with the run's inner learning rate."""
    options = _options(config)
    options.update(first_order=True, learn_inner_lr=False, adapt_only=None)
    return Scratch(lambda: build_model(config), seed=config.eval.seed, **options).to(config.train.device)
