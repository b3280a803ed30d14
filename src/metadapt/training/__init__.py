"""Meta-training loop, checkpoints and runs on disk."""
from metadapt.training.run import Run, load
from metadapt.training.trainer import train

__all__ = ["Run", "load", "train"]
