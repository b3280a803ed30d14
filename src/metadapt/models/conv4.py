"""The Conv-4 backbone of few-shot image classification (Vinyals et al. 2016; Snell et al. 2017;
Finn et al. 2017): four blocks of 3×3 convolution (64 filters), BatchNorm, ReLU and 2×2
max-pooling, flattened; a 28×28 input gives a 64-dimensional embedding.

BatchNorm always normalises with the statistics of the batch it sees (``track_running_stats=False``):
the support set during adaptation, the query set (or support and query together, for the
metric-based methods) when predicting. No running statistics are carried between tasks.
"""
from __future__ import annotations

from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BatchNorm follows: a bias would be inert
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Sequential):
    """``Conv4(1, 64)`` is the embedding; ``Conv4(1, 64, out_features=5)`` adds a linear head
    (for MAML-style methods; the head is the last layer ANIL adapts)."""

    def __init__(self, in_channels: int = 1, filters: int = 64, out_features: int | None = None, image_size: int = 28):
        layers: list[nn.Module] = [conv_block(in_channels, filters)] + [conv_block(filters, filters) for _ in range(3)]
        layers.append(nn.Flatten())
        size = image_size
        for _ in range(4):
            size //= 2
        self.embedding_dim = filters * size * size
        if out_features is not None:
            layers.append(nn.Linear(self.embedding_dim, out_features))
        super().__init__(*layers)
