"""Multi-layer perceptron backbone."""
from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """``in → hidden[0] → … → out`` with ReLU between layers.

    The MAML sinusoid network is ``MLP(1, [40, 40], 1)``. Being an ``nn.Sequential``, its
    last ``nn.Linear`` is the head that ANIL adapts.

    ``init_std=None`` keeps PyTorch's default initialization; a number draws every weight from a
    normal distribution with that standard deviation truncated at two standard deviations, and
    zeroes the biases — the MAML paper code's fully connected initialization (``init_std=0.01``,
    cbfinn/maml ``construct_fc_weights``).
    """

    def __init__(self, in_features: int = 1, hidden: tuple[int, ...] | list[int] = (40, 40), out_features: int = 1,
                 init_std: float | None = None):
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        if init_std is not None:
            for layer in self:
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
                    nn.init.zeros_(layer.bias)
