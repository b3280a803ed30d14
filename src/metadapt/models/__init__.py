"""Backbones. Any ``nn.Module`` works with every algorithm; these are the standard ones."""
from metadapt.models.mlp import MLP

__all__ = ["MLP"]
