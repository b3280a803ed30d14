"""ResNet-12, the backbone of the mini-ImageNet / tieredImageNet / CIFAR-FS / CUB benchmarks since
TADAM (Oreshkin et al. 2018) and MetaOptNet (Lee et al. 2019).

Four residual blocks of widths 64, 160, 320, 640 (MetaOptNet's; TADAM's are 64, 128, 256, 512).
Each block is three 3×3 convolutions, each followed by BatchNorm, with LeakyReLU(0.1) between
them; a 1×1 convolution with BatchNorm carries the input around them; the sum passes a
LeakyReLU and a 2×2 max-pool:

    y = maxpool(LeakyReLU(BN(W₃ ∗ φ(BN(W₂ ∗ φ(BN(W₁ ∗ x))))) + BN(W_s ∗ x)))

An 84×84 image leaves the last block as 640×5×5 (32×32: 640×2×2). ``pool: mean`` averages it
over space to a 640-dimensional embedding (as FEAT and most later work); ``pool: flatten`` keeps
all 16,000 features (as MetaOptNet). Convolutions are initialised as MetaOptNet's (Kaiming normal,
fan-out); its dropout and DropBlock regularisers are not included.

BatchNorm normalises with the statistics of the batch it sees (no running statistics), like
Conv-4 here (``conv4.py``), so that MAML-style adaptation and metric methods see no state carried
between tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metadapt.errors import UserError
from metadapt.models.conv4 import SpatialMean
from metadapt.options import option
from metadapt.registry import register


def _conv_bn(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels, track_running_stats=False)]


class ResidualBlock(nn.Module):
    """Three 3×3 conv-BN layers around a 1×1 conv-BN shortcut, then LeakyReLU and a 2×2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, slope: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(in_channels, out_channels, 3), nn.LeakyReLU(slope),
                                  *_conv_bn(out_channels, out_channels, 3), nn.LeakyReLU(slope),
                                  *_conv_bn(out_channels, out_channels, 3))
        self.shortcut = nn.Sequential(*_conv_bn(in_channels, out_channels, 1))
        self.out = nn.Sequential(nn.LeakyReLU(slope), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


@dataclass
class ResNet12Options:
    widths: list[int] = option([64, 160, 320, 640], positive=True, high=10_000,
                               help="channels of the four residual blocks (TADAM: 64, 128, 256, 512)")
    pool: str = option("mean", choices=("mean", "flatten"),
                       help="mean: average the last feature map over space (640-d); flatten: keep it all")


@register("model", "resnet12")
class ResNet12(nn.Sequential):
    """``ResNet12(3)`` is the embedding; ``out_features`` adds a linear head (MAML-style methods)."""

    Options = ResNet12Options

    def __init__(self, in_channels: int = 3, widths=(64, 160, 320, 640), out_features: int | None = None,
                 image_size: int = 84, pool: str = "mean"):
        if len(widths) != 4:
            raise ValueError(f"ResNet-12 has four blocks; got widths {list(widths)}")
        if pool not in ("mean", "flatten"):
            raise ValueError(f"pool must be mean or flatten, not {pool!r}")
        blocks, channels, size = [], in_channels, image_size
        for width in widths:
            blocks.append(ResidualBlock(channels, width))
            channels, size = width, size // 2
        if size < 1:
            raise ValueError(f"ResNet-12 halves the image four times; {image_size}×{image_size} is too small")
        layers: list[nn.Module] = [*blocks, SpatialMean() if pool == "mean" else nn.Flatten()]
        self.embedding_dim = channels if pool == "mean" else channels * size * size
        if out_features is not None:
            layers.append(nn.Linear(self.embedding_dim, out_features))
        super().__init__(*layers)
        for module in self.modules():  # MetaOptNet's initialization
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")

    @classmethod
    def from_options(cls, options: ResNet12Options, input_shape: tuple[int, ...],
                     outputs: int | None) -> ResNet12:
        if len(options.widths) != 4:
            raise UserError(f"model.widths must list the four blocks' channels, e.g. [64, 160, 320, 640]; "
                            f"got {options.widths}")
        if input_shape[-1] < 16:
            size = input_shape[-1]
            raise UserError(f"ResNet-12 halves the image four times; {size}×{size} is too small: use images "
                            "of at least 16×16 (task.image_size)")
        return cls(input_shape[0], options.widths, out_features=outputs, image_size=input_shape[-1],
                   pool=options.pool)

    def describe(self) -> str:
        widths = ", ".join(str(self[i].body[0].out_channels) for i in range(4))
        pool = "averaged over space" if isinstance(self[4], SpatialMean) else "flattened"
        return f"ResNet-12 (blocks of {widths} channels, features {pool}), BatchNorm on batch statistics"
