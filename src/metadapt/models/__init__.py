"""Backbones. Any ``nn.Module`` works with every algorithm; these are the standard ones, built from
a recipe's ``model:`` section (``from_options``) with the input shape and outputs the task
family gives."""
from metadapt.models.conv4 import Conv4
from metadapt.models.gaussian_policy import GaussianPolicy
from metadapt.models.given import GivenModel
from metadapt.models.mlp import MLP
from metadapt.models.pearl_networks import PEARLNetworks
from metadapt.models.point import Point
from metadapt.models.recurrent import RecurrentGaussianPolicy, RecurrentPolicy
from metadapt.models.resnet12 import ResNet12

__all__ = ["MLP", "Conv4", "GivenModel", "Point", "RecurrentPolicy", "GaussianPolicy", "ResNet12",
           "PEARLNetworks", "RecurrentGaussianPolicy"]
