"""Backbones. Any ``nn.Module`` works with every algorithm; these are the standard ones."""
from metadapt.models.conv4 import Conv4
from metadapt.models.mlp import MLP

__all__ = ["MLP", "Conv4"]
