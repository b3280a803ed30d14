"""Meta-reinforcement learning: algorithms that learn from a distribution of environments
(``metadapt.envs``) rather than of supervised tasks."""
from metadapt.algorithms.rl.maml_rl import MAMLRL
from metadapt.algorithms.rl.pearl import PEARL
from metadapt.algorithms.rl.rl2 import RL2

__all__ = ["RL2", "MAMLRL", "PEARL"]
