"""From a validated :class:`~metadapt.config.Config` to the objects a run uses."""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from metadapt.algorithms import MAML, Algorithm, Pretrain, Reptile, Scratch
from metadapt.algorithms.matching import MatchingNet
from metadapt.algorithms.protonet import ProtoNet
from metadapt.config import Config
from metadapt.models import MLP, Conv4
from metadapt.tasks import SinusoidTasks, TaskSource
from metadapt.tasks.episodes import Episodes

#: algorithm name → (class, options the name implies)
ALGORITHMS: dict[str, tuple[type, dict]] = {
    "maml": (MAML, {}),
    "fomaml": (MAML, {"first_order": True}),
    "metasgd": (MAML, {"learn_inner_lr": True}),
    "anil": (MAML, {"adapt_only": "head"}),
    "reptile": (Reptile, {}),
    "pretrain": (Pretrain, {}),
    "protonet": (ProtoNet, {}),
    "matching": (MatchingNet, {}),
}


@lru_cache(maxsize=4)
def _omniglot(subset: str, split: str, data_dir: str | None, download: bool):
    from metadapt.datasets.omniglot import load_omniglot

    return load_omniglot(subset, split=split, data_dir=data_dir, allow_download=download)


def build_tasks(config: Config, subset: str = "train", shots: int | None = None, queries: int | None = None,
                ways: int | None = None) -> TaskSource:
    """The task source of ``subset`` ("train", "val" or "test"; sinusoids have one distribution)."""
    t = config.task
    shots = t.shots if shots is None else shots
    queries = t.queries if queries is None else queries
    if t.family == "sinusoid":
        return SinusoidTasks.preset(t.preset, shots=shots, queries=queries)
    name = {"train": t.train_subset, "val": t.val_subset, "test": t.test_subset}[subset]
    return Episodes(_omniglot(name, t.split, t.data_dir, t.download), ways=t.ways if ways is None else ways,
                    shots=shots, queries=queries)


def is_classification(config: Config) -> bool:
    return config.task.family != "sinusoid"


def build_model(config: Config, head: bool = True) -> nn.Module:
    if config.model.name == "conv4":
        outputs = config.task.ways
        if config.algorithm.name == "pretrain":  # a classifier over every training class
            outputs = len(build_tasks(config).names)
        return Conv4(1, config.model.filters, out_features=outputs if head else None,
                     downsample=config.model.downsample)
    return MLP(1, config.model.hidden, 1, init_std=config.model.init_std)


def _seeded(fn, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def _options(config: Config) -> dict:
    a = config.algorithm
    _, implied = ALGORITHMS[a.name]
    options = dict(
        loss="cross_entropy" if is_classification(config) else "mse", inner_lr=a.inner_lr,
        inner_steps=a.inner_steps, first_order=a.first_order, learn_inner_lr=a.learn_inner_lr,
        adapt_only=a.adapt_only, task_parallel=a.task_parallel,
    )
    options.update({k: v for k, v in implied.items() if v})
    return options


def build_algorithm(config: Config) -> Algorithm:
    """The run's algorithm, its model initialised from ``train.seed`` (global RNG untouched)."""
    cls, _ = ALGORITHMS[config.algorithm.name]
    if cls in (ProtoNet, MatchingNet):
        encoder = _seeded(lambda: build_model(config, head=False), config.train.seed)
        if cls is ProtoNet:
            algorithm = ProtoNet(encoder)
        else:
            algorithm = _seeded(lambda: MatchingNet(encoder, encoder.embedding_dim, config.algorithm.fce,
                                                    config.algorithm.fce_steps, config.algorithm.cosine_scale),
                                config.train.seed + 1)
    else:
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
