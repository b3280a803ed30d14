"""One module per method; ``build_algorithm`` turns a config into an instance."""
from metadapt.algorithms.base import Adapted, Algorithm
from metadapt.algorithms.baselines import Pretrain, Scratch
from metadapt.algorithms.gradient import GradientLearner
from metadapt.algorithms.maml import MAML
from metadapt.algorithms.reptile import Reptile

__all__ = ["Adapted", "Algorithm", "GradientLearner", "MAML", "Reptile", "Pretrain", "Scratch"]
