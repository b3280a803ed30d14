"""Where tasks come from."""
from metadapt.tasks.batch import TaskBatch, TaskSource
from metadapt.tasks.sinusoid import PRESETS as SINUSOID_PRESETS, SinusoidTasks

__all__ = ["TaskBatch", "TaskSource", "SinusoidTasks", "SINUSOID_PRESETS"]
