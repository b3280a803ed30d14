"""metadapt: meta-learning on PyTorch.

>>> import metadapt
>>> run = metadapt.load("runs/demo/maml")                       # doctest: +SKIP
>>> adapted = run.adapt(support_x, support_y, steps=10)         # doctest: +SKIP
>>> adapted.predict(query_x)                                    # doctest: +SKIP
"""
from metadapt.algorithms import (
    MAML,
    SGD,
    Adapted,
    AdaptedModel,
    Algorithm,
    GradientLearner,
    MatchingNet,
    MetaSGD,
    Pretrain,
    ProtoNet,
    Reptile,
    Scratch,
    UpdateRule,
    use_batch_statistics,
)
from metadapt.config import Config, build_config, config_from_file
from metadapt.errors import UserError
from metadapt.models import MLP
from metadapt.registry import register
from metadapt.tasks import SinusoidTasks, TaskBatch, TaskFamily
from metadapt.training import Run, load, train
from metadapt.version import __version__  # noqa: F401


def __getattr__(name: str):
    # evaluation imports Matplotlib (and selects its Agg backend): only when it is asked for
    if name == "evaluate_run":
        from metadapt.evaluation import evaluate_run

        return evaluate_run
    raise AttributeError(f"module 'metadapt' has no attribute {name!r}")
__all__ = [
    "MAML", "Adapted", "AdaptedModel", "Algorithm", "GradientLearner", "Pretrain", "Reptile", "Scratch",
    "ProtoNet", "MatchingNet", "UpdateRule", "SGD", "MetaSGD", "use_batch_statistics", "Config",
    "build_config", "config_from_file", "UserError", "MLP", "SinusoidTasks", "TaskBatch", "TaskFamily",
    "register", "Run", "load", "train", "evaluate_run",
]
