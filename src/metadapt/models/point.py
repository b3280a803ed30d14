"""A point ``x ∈ R^d`` as a model: the optimizee of a problem whose tasks give a linear map."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import register


@dataclass
class PointOptions:
    init_std: float = option(0.01, positive=True, help="x is drawn from N(0, init_std²)")


@register("model", "point")
class Point(nn.Module):
    """One parameter vector ``x`` of ``dims`` entries; ``forward(W) = W x`` for ``W [..., rows, dims]``.
    With the quadratic tasks this is the problem ``f(x) = ‖Wx − y‖²`` of Andrychowicz et al. (2016,
    §3.1), whose ``x`` starts from ``N(0, 0.01²)``."""

    Options = PointOptions

    def __init__(self, dims: int = 10, init_std: float = 0.01):
        super().__init__()
        self.init_std = float(init_std)
        self.x = nn.Parameter(torch.empty(dims))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.x.normal_(0.0, self.init_std)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w @ self.x

    @classmethod
    def from_options(cls, options: PointOptions, input_shape: tuple[int, ...], outputs: int | None) -> Point:
        if len(input_shape) != 2:
            raise UserError(f"model.name=point takes matrices W (rows × dims) as inputs; these tasks' inputs "
                            f"have shape {input_shape}")
        return cls(input_shape[1], options.init_std)

    def describe(self) -> str:
        return f"a point x in R^{self.x.numel()} (f(x) = ‖Wx − y‖²), drawn from N(0, {self.init_std}²)"
