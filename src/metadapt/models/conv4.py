"""The Conv-4 backbone of few-shot image classification (Vinyals et al. 2016; Snell et al. 2017;
Finn et al. 2017): four blocks of 3×3 convolution (64 filters), BatchNorm, ReLU and 2×2
max-pooling, flattened; a 28×28 input gives a 64-dimensional embedding.

``downsample="stride"`` is the variant of the MAML paper's Omniglot code (cbfinn/maml): each block
halves the image with a stride-2 convolution instead of a max-pool, and the last feature map is
averaged over space. Its convolutions run on a quarter of the pixels, so a block costs about a
quarter of the pooled one (28→14→7→4→2 instead of 28→28→14→7→3 before each pool).

BatchNorm always normalises with the statistics of the batch it sees (``track_running_stats=False``):
the support set during adaptation, the query set (or support and query together, for the
metric-based methods) when predicting. No running statistics are carried between tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from metadapt.options import option
from metadapt.registry import register

DOWNSAMPLE = ("pool", "stride")


def conv_block(in_channels: int, out_channels: int, downsample: str = "pool") -> nn.Sequential:
    stride = 2 if downsample == "stride" else 1
    layers: list[nn.Module] = [
        # BatchNorm follows: a bias would be inert
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
    ]
    if downsample == "pool":
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SpatialMean(nn.Module):
    """Average a feature map over its spatial axes: ``(B, C, H, W) → (B, C)``."""

    def forward(self, x):
        return x.mean(dim=(-2, -1))


@dataclass
class Conv4Options:
    filters: int = option(64, positive=True, high=10_000)
    downsample: str = option("pool", choices=DOWNSAMPLE,
                             help="pool: 2x2 max-pool per block; "
                                  "stride: stride-2 convolutions (the MAML code's)")


@register("model", "conv4")
class Conv4(nn.Sequential):
    """``Conv4(1, 64)`` is the embedding; ``Conv4(1, 64, out_features=5)`` adds a linear head
    (for MAML-style methods; the head is the last layer ANIL adapts)."""

    def __init__(self, in_channels: int = 1, filters: int = 64, out_features: int | None = None,
                 image_size: int = 28, downsample: str = "pool"):
        if downsample not in DOWNSAMPLE:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE}, not {downsample!r}")
        layers: list[nn.Module] = [conv_block(in_channels, filters, downsample)]
        layers += [conv_block(filters, filters, downsample) for _ in range(3)]
        if downsample == "stride":
            layers.append(SpatialMean())
            self.embedding_dim = filters
        else:
            layers.append(nn.Flatten())
            size = image_size
            for _ in range(4):
                size //= 2
            self.embedding_dim = filters * size * size
        if out_features is not None:
            layers.append(nn.Linear(self.embedding_dim, out_features))
        super().__init__(*layers)

    Options = Conv4Options

    @classmethod
    def from_options(cls, options: Conv4Options, input_shape: tuple[int, ...], outputs: int | None) -> Conv4:
        return cls(input_shape[0], options.filters, out_features=outputs, image_size=input_shape[-1],
                   downsample=options.downsample)

    def describe(self) -> str:
        block = self[0]
        down = "stride-2 convolutions" if block[0].stride == (2, 2) else "max-pooling"
        return f"Conv-4 with {block[0].out_channels} filters ({down}), BatchNorm on batch statistics"
