"""Prototypical Networks (Snell, Swersky & Zemel, 2017, arXiv:1703.05175).

Each class ``k`` is represented by the mean embedding of its support examples,
``c_k = (1/|S_k|) Σ_{x∈S_k} f(x)``, and a query ``x`` is classified by a softmax over negative
squared Euclidean distances, ``p(y=k|x) ∝ exp(−‖f(x) − c_k‖²)``. The meta-loss is the cross
entropy of the query labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metadapt.algorithms.metric import MetricLearner, class_means
from metadapt.registry import register


@register("algorithm", "protonet")
class ProtoNet(MetricLearner):
    name = "protonet"

    @dataclass
    class Options:
        """Prototypical Networks take no options."""

    def task_logits(self, support_x, support_y, query_x) -> torch.Tensor:
        ways = int(support_y.max()) + 1
        zs, zq = self.embed(support_x, query_x)
        prototypes = class_means(zs, support_y, ways)
        return -(zq.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)
