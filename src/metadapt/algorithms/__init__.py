"""One module per method, each registering its recipe name(s) (``metadapt.registry``).

The order of the imports below is the order in which recipes' errors list the names.
"""
# ruff: noqa: I001
from metadapt.algorithms.base import Adapted, AdaptedModel, Algorithm
from metadapt.algorithms.gradient import GradientLearner, use_batch_statistics
from metadapt.algorithms.maml import MAML
from metadapt.algorithms.maml_plus_plus import MAMLPlusPlus
from metadapt.algorithms.meta_lstm import MetaLSTM
from metadapt.algorithms.reptile import Reptile
from metadapt.algorithms.baselines import Pretrain, Scratch
from metadapt.algorithms.protonet import ProtoNet
from metadapt.algorithms.matching import MatchingNet
from metadapt.algorithms.update_rules import LSLR, SGD, MetaSGD, UpdateRule
from metadapt.algorithms.learned_optimizer import LearnedOptimizer, LSTMOptimizer
from metadapt.algorithms.rl import RL2

__all__ = ["Adapted", "AdaptedModel", "Algorithm", "GradientLearner", "MAML", "Reptile", "Pretrain",
           "Scratch", "ProtoNet", "MatchingNet", "UpdateRule", "SGD", "MetaSGD", "LSLR", "MAMLPlusPlus",
           "MetaLSTM", "LearnedOptimizer", "LSTMOptimizer", "RL2", "use_batch_statistics"]
