"""Multi-layer perceptron backbone."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import register


@dataclass
class MLPOptions:
    hidden: list[int] = option([40, 40], positive=True, high=100_000, help="widths of the hidden layers")
    init_std: float | None = option(None, positive=True,
                                    help="null keeps torch's init; "
                                         "0.01 is the MAML code's (truncated normal, zero bias)")
    activation: str = option("relu", choices=("relu", "sigmoid", "tanh"), help="between the layers")


@register("model", "mlp")
class MLP(nn.Sequential):
    """``in → hidden[0] → … → out`` with ReLU (or ``activation``) between layers.

    The MAML sinusoid network is ``MLP(1, [40, 40], 1)``. Being an ``nn.Sequential``, its
    last ``nn.Linear`` is the head that ANIL adapts.

    ``init_std=None`` keeps PyTorch's default initialization; a number draws every weight from a
    normal distribution with that standard deviation truncated at two standard deviations, and
    zeroes the biases — the MAML paper code's fully connected initialization (``init_std=0.01``,
    cbfinn/maml ``construct_fc_weights``).
    """

    def __init__(self, in_features: int = 1, hidden: tuple[int, ...] | list[int] = (40, 40),
                 out_features: int = 1, init_std: float | None = None, activation: str = "relu"):
        layers: list[nn.Module] = []
        width = in_features
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[activation]
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        if init_std is not None:
            for layer in self:
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
                    nn.init.zeros_(layer.bias)

    Options = MLPOptions

    @classmethod
    def from_options(cls, options: MLPOptions, input_shape: tuple[int, ...], outputs: int | None) -> MLP:
        if len(input_shape) != 1:
            raise UserError(f"model.name=mlp takes vector inputs; these tasks' inputs have shape "
                            f"{input_shape}")
        if outputs is None:
            raise UserError("model.name=mlp has no embedding-only form for a metric-based method; use conv4")
        return cls(input_shape[0], options.hidden, outputs, init_std=options.init_std,
                   activation=options.activation)

    def describe(self) -> str:
        widths = [m.out_features for m in self if isinstance(m, nn.Linear)][:-1]
        act = type(self[1]).__name__ if len(self) > 1 else ""
        return f"MLP with hidden layers {widths}" + ("" if act in ("ReLU", "") else f", {act}")
