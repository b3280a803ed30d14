"""Prototypical and Matching Networks against hand computations."""
import math

import pytest
import torch
from torch import nn

from metadapt.algorithms.matching import MatchingNet
from metadapt.algorithms.protonet import ProtoNet
from metadapt.models import Conv4
from metadapt.tasks import TaskBatch

SUPPORT_X = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
SUPPORT_Y = torch.tensor([0, 0, 1, 1])
QUERY_X = torch.tensor([[1.0, 1.0], [0.0, 3.0]])


def test_protonet_logits_equal_a_hand_computation():
    logits = ProtoNet(nn.Identity()).task_logits(SUPPORT_X, SUPPORT_Y, QUERY_X)
    # prototypes: class 0 -> (1, 0), class 1 -> (0, 5)
    expected = -torch.tensor([[(1 - 1) ** 2 + (1 - 0) ** 2, (1 - 0) ** 2 + (1 - 5) ** 2],
                              [(0 - 1) ** 2 + (3 - 0) ** 2, (0 - 0) ** 2 + (3 - 5) ** 2]], dtype=torch.float32)
    torch.testing.assert_close(logits, expected)


def test_matching_probabilities_equal_a_hand_computation():
    logp = MatchingNet(nn.Identity(), 2).task_logits(SUPPORT_X, SUPPORT_Y, QUERY_X)
    q = QUERY_X[0] / QUERY_X[0].norm()
    cos = [float(q @ (s / s.norm())) if s.norm() > 0 else 0.0 for s in SUPPORT_X]
    weights = torch.softmax(torch.tensor(cos), 0)
    expected = torch.log(torch.stack([weights[:2].sum(), weights[2:].sum()]))
    torch.testing.assert_close(logp[0], expected)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(2))


@pytest.mark.parametrize("make", [lambda: ProtoNet(Conv4(1, 8)), lambda: MatchingNet(Conv4(1, 8), 8, fce=True, fce_steps=2)],
                         ids=["protonet", "matching-fce"])
def test_meta_loss_trains_and_adapt_predicts(make):
    torch.manual_seed(0)
    algorithm = make()
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(torch.rand(2, 6, 1, 28, 28, generator=g), torch.tensor([[0, 0, 1, 1, 2, 2]] * 2),
                      torch.rand(2, 3, 1, 28, 28, generator=g), torch.tensor([[0, 1, 2]] * 2))
    loss, metrics = algorithm.meta_loss(batch)
    loss.backward()
    assert all(p.grad is not None for p in algorithm.parameters())
    assert 0 <= metrics["accuracy"] <= 1 and math.isfinite(metrics["query_loss"])
    adapted = algorithm.adapt_tasks(batch.support_x, batch.support_y)
    assert adapted.predict(batch.query_x).shape == (2, 3, 3)
    single = algorithm.adapt(batch.support_x[0], batch.support_y[0]).predict(batch.query_x[0])
    torch.testing.assert_close(single, adapted.predict(batch.query_x)[0])
    with pytest.raises(ValueError, match="takes no adaptation steps"):
        adapted.predict(batch.query_x, step=3)
