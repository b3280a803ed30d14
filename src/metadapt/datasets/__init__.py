"""Real data on disk: checked archives, decoded once, cached as arrays."""
from metadapt.datasets.benchmarks import load_benchmark
from metadapt.datasets.images import load_image_folder
from metadapt.datasets.omniglot import load_omniglot

__all__ = ["load_omniglot", "load_image_folder", "load_benchmark"]
