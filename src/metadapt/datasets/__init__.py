"""Real data on disk: checked archives, decoded once, cached as arrays."""
from metadapt.datasets.omniglot import load_omniglot

__all__ = ["load_omniglot"]
