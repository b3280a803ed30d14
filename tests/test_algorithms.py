"""Adaptation, Reptile, the baselines and the model-agnostic contract."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from metadapt.algorithms import MAML, Pretrain, Reptile, Scratch
from metadapt.errors import UserError
from metadapt.models import MLP


def sgd_steps(model, x, y, lr, steps):
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    for _ in range(steps):
        loss = nn.functional.mse_loss(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {n: (p - lr * g).detach().requires_grad_() for (n, p), g in zip(params.items(), grads)}
    return params


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_adapt_is_plain_sgd_on_the_support_set_and_leaves_the_model_alone(strategy, sine_batch64):
    torch.manual_seed(0)
    maml = MAML(MLP(1, [16, 16], 1).double(), inner_lr=0.05, task_parallel=strategy)
    before = {n: p.detach().clone() for n, p in maml.model.named_parameters()}
    sx, sy = sine_batch64.support_x[1], sine_batch64.support_y[1]
    adapted = maml.adapt(sx, sy, steps=4)
    expected = sgd_steps(maml.model, sx, sy, 0.05, 4)
    for n in expected:
        torch.testing.assert_close(adapted.params[n], expected[n].detach(), rtol=1e-12, atol=1e-12)
    q = sine_batch64.query_x[1]
    pred = adapted.predict(q)
    assert not pred.requires_grad
    torch.testing.assert_close(pred, functional_call(maml.model, expected, (q,)).detach())
    torch.testing.assert_close(adapted.predict(q, step=0), maml.model(q).detach())
    for n, p in maml.model.named_parameters():
        assert torch.equal(p.detach(), before[n])


def test_adapt_tasks_builds_no_graph(sine_batch64):
    maml = MAML(MLP(1, [16, 16], 1).double())
    adapted = maml.adapt_tasks(sine_batch64.support_x, sine_batch64.support_y, 3)
    assert all(not p.requires_grad and p.grad_fn is None
               for step in adapted.trajectory for p in step.values())
    assert adapted.predict(sine_batch64.query_x).shape == sine_batch64.query_y.shape


def test_reptile_pseudo_gradient_is_init_minus_mean_adapted_weights(sine_batch64):
    torch.manual_seed(0)
    reptile = Reptile(MLP(1, [8], 1).double(), inner_lr=0.05, inner_steps=3)
    loss, metrics = reptile.meta_loss(sine_batch64)
    grads = dict(zip([n for n, _ in reptile.model.named_parameters()],
                     torch.autograd.grad(loss, list(reptile.model.parameters()))))
    adapted = [sgd_steps(reptile.model, sine_batch64.support_x[i], sine_batch64.support_y[i], 0.05, 3)
               for i in range(4)]
    for n, p in reptile.model.named_parameters():
        mean = torch.stack([a[n].detach() for a in adapted]).mean(0)
        torch.testing.assert_close(grads[n], p.detach() - mean, rtol=1e-10, atol=1e-12)
    assert metrics["query_loss"] > 0


def test_reptile_logs_the_mean_query_loss_of_classification_tasks():
    # [T, Q, C] predictions once reached cross_entropy unflattened: classes read from the query axis
    from metadapt.tasks.batch import TaskBatch

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batch = TaskBatch(torch.randn(2, 5, 6, generator=g), torch.arange(5).repeat(2, 1),
                      torch.randn(2, 10, 6, generator=g), torch.arange(5).repeat_interleave(2).repeat(2, 1))
    reptile = Reptile(MLP(6, [8], 5).double(), inner_lr=0.1, inner_steps=2, loss="cross_entropy")
    batch = TaskBatch(*(t.double() if t.is_floating_point() else t for t in
                        (batch.support_x, batch.support_y, batch.query_x, batch.query_y)))
    _, metrics = reptile.meta_loss(batch)
    adapted = reptile.adapt_tasks(batch.support_x, batch.support_y, 2)
    prediction = adapted.predict(batch.query_x)
    expected = torch.stack([nn.functional.cross_entropy(prediction[i], batch.query_y[i]) for i in range(2)])
    assert metrics["query_loss"] == pytest.approx(float(expected.mean()), rel=1e-12)


def test_pretrain_loss_is_joint_regression_on_all_points(sine_batch64):
    torch.manual_seed(0)
    pre = Pretrain(MLP(1, [8], 1).double())
    loss, _ = pre.meta_loss(sine_batch64)
    x = torch.cat([sine_batch64.support_x, sine_batch64.query_x], 1).reshape(-1, 1)
    y = torch.cat([sine_batch64.support_y, sine_batch64.query_y], 1).reshape(-1, 1)
    torch.testing.assert_close(loss, nn.functional.mse_loss(pre.model(x), y))


def test_scratch_gives_each_task_its_own_reproducible_init(sine_batch64):
    scratch = Scratch(lambda: MLP(1, [8], 1), seed=5)
    state = torch.random.get_rng_state()
    a = scratch.initial_params(sine_batch64.support_x, sine_batch64.support_y)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert not torch.equal(a["0.weight"][0], a["0.weight"][1])
    # same task, same init, any batch
    b = scratch.initial_params(sine_batch64.support_x[2:], sine_batch64.support_y[2:])
    assert torch.equal(a["0.weight"][2], b["0.weight"][0])
    with pytest.raises(RuntimeError, match="nothing to meta-train"):
        scratch.meta_loss(sine_batch64)


def test_any_module_works_unchanged():
    class Custom(nn.Module):  # not a Sequential, with a nested submodule
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(1, 6), nn.SiLU())
            self.out = nn.Linear(6, 1)

        def forward(self, x):
            return self.out(self.body(x))

    algo = MAML(Custom(), adapt_only="head")
    assert algo.adapted_names == ["out.weight", "out.bias"]
    batch = __import__("metadapt").SinusoidTasks().sample(3, torch.Generator().manual_seed(0))
    loss, _ = algo.meta_loss(batch)
    loss.backward()
    assert algo.model.body[0].weight.grad is not None


def test_invalid_algorithm_options_are_refused():
    with pytest.raises(ValueError, match="inner_lr must be positive"):
        MAML(MLP(), inner_lr=-0.1)
    with pytest.raises(ValueError, match="task_parallel"):
        MAML(MLP(), task_parallel="threads")
    with pytest.raises(UserError, match="matches no parameter"):
        MAML(MLP(), adapt_only=["nope"])


def test_mlp_init_std_is_the_maml_code_initialization():
    """``init_std``: weights from a normal truncated at ±2σ, zero biases; the seeded build repeats it."""
    from metadapt.build import build_algorithm
    from metadapt.config import config_from_file

    torch.manual_seed(0)
    net = MLP(1, [400, 400], 1, init_std=0.01)
    weights = torch.cat([layer.weight.flatten() for layer in net if isinstance(layer, torch.nn.Linear)])
    assert weights.abs().max() <= 0.02
    assert 0.008 < weights.std() < 0.0095  # a normal truncated at 2σ has std 0.88σ
    assert all(layer.bias.abs().sum() == 0 for layer in net if isinstance(layer, torch.nn.Linear))
    config = config_from_file("configs/sinusoid/maml.yaml", ["model.init_std=0.01"])
    first, second = build_algorithm(config), build_algorithm(config)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert max(p.abs().max() for p in first.parameters()) <= 0.02
