"""Multi-layer perceptron backbone."""
from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """``in → hidden[0] → … → out`` with ReLU between layers.

    The MAML sinusoid network is ``MLP(1, [40, 40], 1)``. Being an ``nn.Sequential``, its
    last ``nn.Linear`` is the head that ANIL adapts.
    """

    def __init__(self, in_features: int = 1, hidden: tuple[int, ...] | list[int] = (40, 40), out_features: int = 1):
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
