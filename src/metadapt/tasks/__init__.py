"""Where tasks come from: task sources (``sample(n, generator) -> TaskBatch``) and the task
families that build them from a recipe."""
from metadapt.tasks.batch import TaskBatch, TaskSource
from metadapt.tasks.digits import DigitsFamily, DigitsTasks
from metadapt.tasks.family import GivenTasks, TaskFamily
from metadapt.tasks.images import ImagesFamily
from metadapt.tasks.omniglot import OmniglotFamily
from metadapt.tasks.quadratic import QuadraticFamily, QuadraticTasks
from metadapt.tasks.sinusoid import PRESETS as SINUSOID_PRESETS
from metadapt.tasks.sinusoid import SinusoidFamily, SinusoidTasks

__all__ = ["TaskBatch", "TaskSource", "TaskFamily", "GivenTasks", "SinusoidFamily", "SinusoidTasks",
           "OmniglotFamily", "ImagesFamily", "QuadraticFamily", "QuadraticTasks", "DigitsFamily",
           "DigitsTasks",
           "SINUSOID_PRESETS"]
