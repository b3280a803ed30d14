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
                              [(0 - 1) ** 2 + (3 - 0) ** 2, (0 - 0) ** 2 + (3 - 5) ** 2]],
                             dtype=torch.float32)
    torch.testing.assert_close(logits, expected)


def test_matching_probabilities_equal_a_hand_computation():
    logp = MatchingNet(nn.Identity(), 2).task_logits(SUPPORT_X, SUPPORT_Y, QUERY_X)
    q = QUERY_X[0] / QUERY_X[0].norm()
    cos = [float(q @ (s / s.norm())) if s.norm() > 0 else 0.0 for s in SUPPORT_X]
    weights = torch.softmax(torch.tensor(cos), 0)
    expected = torch.log(torch.stack([weights[:2].sum(), weights[2:].sum()]))
    torch.testing.assert_close(logp[0], expected)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(2))


def test_matching_cosine_scale_sharpens_the_attention_and_is_learned():
    scaled = MatchingNet(nn.Identity(), 2, cosine_scale=10.0)
    logp = scaled.task_logits(SUPPORT_X, SUPPORT_Y, QUERY_X)
    q = QUERY_X[0] / QUERY_X[0].norm()
    cos = torch.tensor([float(q @ (s / s.norm())) if s.norm() > 0 else 0.0 for s in SUPPORT_X])
    weights = torch.softmax(10.0 * cos, 0)
    torch.testing.assert_close(logp[0], torch.log(torch.stack([weights[:2].sum(), weights[2:].sum()])))
    nn.functional.nll_loss(logp, torch.tensor([0, 1])).backward()
    assert scaled.log_scale.grad is not None and scaled.log_scale.grad != 0
    with pytest.raises(ValueError, match="cosine_scale must be positive"):
        MatchingNet(nn.Identity(), 2, cosine_scale=0.0)


@pytest.mark.parametrize("make", [lambda: ProtoNet(Conv4(1, 8)),
                                  lambda: MatchingNet(Conv4(1, 8), 8, fce=True, fce_steps=2),
                                  lambda: MatchingNet(Conv4(1, 8), 8, cosine_scale=10.0)],
                         ids=["protonet", "matching-fce", "matching-scaled"])
def test_meta_loss_trains_and_adapt_predicts(make):
    torch.manual_seed(0)
    algorithm = make()
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(torch.rand(2, 6, 1, 28, 28, generator=g), torch.tensor([[0, 0, 1, 1, 2, 2]] * 2),
                      torch.rand(2, 3, 1, 28, 28, generator=g), torch.tensor([[0, 1, 2]] * 2))
    loss, metrics = algorithm.meta_loss(batch)
    loss.backward()
    assert all(p.grad is not None for p in algorithm.parameters())
    expected = [p.grad.clone() for p in algorithm.parameters()]
    algorithm.zero_grad()
    value, per_episode = algorithm.meta_backward(batch)  # one episode at a time, the same gradient
    assert value == pytest.approx(loss.item(), rel=1e-6) and per_episode == pytest.approx(metrics, rel=1e-6)
    for p, g in zip(algorithm.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    assert 0 <= metrics["accuracy"] <= 1 and math.isfinite(metrics["query_loss"])
    adapted = algorithm.adapt_tasks(batch.support_x, batch.support_y)
    assert adapted.predict(batch.query_x).shape == (2, 3, 3)
    single = algorithm.adapt(batch.support_x[0], batch.support_y[0]).predict(batch.query_x[0])
    torch.testing.assert_close(single, adapted.predict(batch.query_x)[0])
    with pytest.raises(ValueError, match="takes no adaptation steps"):
        adapted.predict(batch.query_x, step=3)


def test_classification_pretrain_maps_to_global_classes_and_refits_a_fresh_head():
    from metadapt.algorithms import Pretrain
    from metadapt.tasks.episodes import Episodes

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = {f"c{i}": torch.rand(6, 1, 28, 28, generator=g) for i in range(8)}
    batch = Episodes(data, ways=3, shots=1, queries=2).sample(2, g)
    pre = Pretrain(Conv4(1, 8, out_features=8), loss="cross_entropy", inner_lr=0.4, inner_steps=2)
    loss, metrics = pre.meta_loss(batch)
    x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
    y = batch.info["classes"].gather(1, torch.cat([batch.support_y, batch.query_y], 1)).flatten()
    torch.testing.assert_close(loss, nn.functional.cross_entropy(pre.model(x), y))
    assert "accuracy" in metrics
    adapted = pre.adapt_tasks(batch.support_x, batch.support_y, steps=2)
    assert adapted.trajectory[0]["5.weight"].shape == (2, 3, 8)  # a fresh 3-way head per task
    assert torch.count_nonzero(adapted.trajectory[0]["5.weight"]) == 0
    assert adapted.predict(batch.query_x, step=2).shape == (2, 6, 3)
    assert pre.supports(Episodes(data, ways=5, shots=1, queries=1).sample(1, g))
