"""metadapt: meta-learning on PyTorch.

>>> import metadapt
>>> run = metadapt.load("runs/demo/maml")                       # doctest: +SKIP
>>> adapted = run.adapt(support_x, support_y, steps=10)         # doctest: +SKIP
>>> adapted.predict(query_x)                                    # doctest: +SKIP
"""
from metadapt.algorithms import MAML, Adapted, Algorithm, GradientLearner, Pretrain, Reptile, Scratch
from metadapt.config import Config, build_config, config_from_file
from metadapt.errors import UserError
from metadapt.models import MLP
from metadapt.tasks import SinusoidTasks, TaskBatch
from metadapt.training import Run, load, train

__version__ = "0.1.0"
__all__ = [
    "MAML", "Adapted", "Algorithm", "GradientLearner", "Pretrain", "Reptile", "Scratch",
    "Config", "build_config", "config_from_file", "UserError", "MLP", "SinusoidTasks", "TaskBatch",
    "Run", "load", "train",
]
