"""MAML++: LSLR and the multi-step loss against a plain autograd loop and finite differences
(float64), the annealing schedules against their formulas, and training through the CLI with exact
resume."""
import copy
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metadapt.algorithms import MAMLPlusPlus
from metadapt.algorithms.maml_plus_plus import cosine_lr, step_weights
from metadapt.cli import main
from metadapt.config import config_from_file
from metadapt.tasks import SinusoidTasks
from metadapt.training import train
from metadapt.training.checkpoint import load_checkpoint
from metadapt.training.trainer import Interrupted

ROOT = Path(__file__).parent.parent


def tanh_net():
    return nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))


def make(**kwargs):
    torch.manual_seed(0)
    algo = MAMLPlusPlus(tanh_net().double(), **kwargs)
    with torch.no_grad():  # distinct rates per layer and step, so a mix-up would show
        for i, rates in enumerate(algo.update_rule.rates):
            rates.copy_(torch.linspace(0.05, 0.15, len(rates), dtype=torch.float64) * (1 + 0.1 * i))
    return algo


def reference(algo, batch, weights, first_order=False):
    """The textbook loop: per task, K steps of θ_ℓ ← θ_ℓ − α_{ℓ,k} ∇_ℓ L_support with
    create_graph, the query loss after each step weighted by ``weights``."""
    model, rates = algo.model, dict(zip(algo.update_rule.names, algo.update_rule.rates))
    params = dict(model.named_parameters())
    total = 0.0
    for i in range(batch.num_tasks):
        fast = dict(params)
        for k in range(len(weights)):
            prediction = functional_call(model, fast, (batch.support_x[i],))
            loss = nn.functional.mse_loss(prediction, batch.support_y[i])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            if first_order:
                grads = [g.detach() for g in grads]
            fast = {n: fast[n] - rates[n][k] * g for n, g in zip(fast, grads)}
            prediction = functional_call(model, fast, (batch.query_x[i],))
            query = nn.functional.mse_loss(prediction, batch.query_y[i])
            total = total + weights[k] * query
    return total / batch.num_tasks


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("steps", [1, 3])
def test_lslr_and_multi_step_loss_match_a_plain_autograd_loop(strategy, steps, sine_batch64):
    algo = make(inner_steps=steps, task_parallel=strategy, epoch_iterations=10, msl_epochs=4)
    algo.iteration.fill_(25)  # epoch 2: weights part-way annealed
    weights = step_weights(steps, 2, 4, 0.03) if steps > 1 else torch.ones(1, dtype=torch.float64)
    loss, _ = algo.meta_loss(sine_batch64)
    expected = reference(algo, sine_batch64, weights)
    torch.testing.assert_close(loss, expected)
    params = list(algo.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_of_the_rates_matches_finite_differences(steps, sine_batch64):
    algo = make(inner_steps=steps, epoch_iterations=10, msl_epochs=4)
    algo.iteration.fill_(15)
    rates = algo.update_rule.rates[2]  # the last layer's weight, every step
    (grad,) = torch.autograd.grad(algo.meta_loss(sine_batch64)[0], [rates])
    eps = 1e-6
    for k in range(steps):
        with torch.no_grad():
            rates[k] += eps
            up = algo.meta_loss(sine_batch64)[0].item()
            rates[k] -= 2 * eps
            down = algo.meta_loss(sine_batch64)[0].item()
            rates[k] += eps
        assert abs((up - down) / (2 * eps) - grad[k].item()) < 1e-6 * max(1.0, abs(grad[k].item()))


def test_meta_backward_on_the_loop_equals_backward_of_meta_loss(sine_batch64):
    algo = make(inner_steps=3, task_parallel="loop", epoch_iterations=10, msl_epochs=4)
    loss, _ = algo.meta_loss(sine_batch64)
    expected = torch.autograd.grad(loss, list(algo.parameters()))
    algo.zero_grad()
    algo.meta_backward(sine_batch64)
    for p, g in zip(algo.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_step_weights_follow_the_papers_schedule():
    torch.testing.assert_close(step_weights(5, 0, 10, 0.03), torch.full((5,), 0.2, dtype=torch.float64))
    w = step_weights(5, 3, 10, 0.03)  # earlier steps fall by 3/(5*10) each, the last rises by 4x that
    torch.testing.assert_close(w, torch.tensor([0.14, 0.14, 0.14, 0.14, 0.44], dtype=torch.float64))
    late = step_weights(5, 50, 10, 0.03)  # floored at 0.03/5; the last capped at 1 - 4 * 0.006
    torch.testing.assert_close(late, torch.tensor([0.006] * 4 + [0.976], dtype=torch.float64))
    assert abs(float(step_weights(3, 7, 10, 0.01).sum()) - 1.0) < 1e-12


def test_derivative_order_annealing_switches_exactly_at_the_configured_epoch(sine_batch64):
    algo = make(inner_steps=2, epoch_iterations=3, first_order_epochs=2, multi_step_loss=False)
    ones = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for iteration, first_order in ((5, True), (6, False)):
        algo.iteration.fill_(iteration)
        got = torch.autograd.grad(algo.meta_loss(sine_batch64)[0], list(algo.model.parameters()))
        for order in (True, False):
            want = torch.autograd.grad(reference(algo, sine_batch64, ones, first_order=order),
                                       list(algo.model.parameters()))
            same = all(torch.allclose(a, b, atol=1e-10) for a, b in zip(got, want))
            assert same == (order == first_order), (iteration, order)


def test_multi_step_loss_ends_after_its_epochs(sine_batch64):
    algo = make(inner_steps=3, epoch_iterations=2, msl_epochs=2)
    algo.iteration.fill_(4)  # epoch 2 = msl_epochs: only the last step's loss counts
    last = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(algo.meta_loss(sine_batch64)[0], reference(algo, sine_batch64, last))


def test_cosine_annealing_of_the_meta_learning_rate():
    assert cosine_lr(1e-3, 1e-5, 0, 10) == 1e-3
    assert abs(cosine_lr(1e-3, 1e-5, 5, 10) - (1e-5 + (1e-3 - 1e-5) / 2)) < 1e-15
    assert abs(cosine_lr(1e-3, 1e-5, 10, 10) - 1e-5) < 1e-15


class InterruptAt:
    """The recipe's sinusoids, sending this process SIGINT while drawing meta-batch ``at``."""

    def __init__(self, tasks, at=None):
        self.tasks, self.at, self.calls = tasks, at, 0

    def sample(self, n, generator):
        if n == 5:  # meta-batches, not the validation tasks
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)
        return self.tasks.sample(n, generator)


def test_maml_plus_plus_recipe_trains_anneals_and_resumes_exactly(tmp_path):
    config = config_from_file(ROOT / "configs" / "sinusoid" / "maml++.yaml", [
        "train.iterations=30", "train.meta_batch_size=5", "train.val_every=10", "train.checkpoint_every=10",
        "train.log_every=5", "train.val_tasks=10", "algorithm.epoch_iterations=4", "algorithm.msl_epochs=3",
        "algorithm.first_order_epochs=1", "model.hidden=[16, 16]"])
    source = SinusoidTasks()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(copy.deepcopy(config), straight, progress=False, tasks=InterruptAt(source))
    with pytest.raises(Interrupted):
        train(copy.deepcopy(config), resumed, progress=False, tasks=InterruptAt(source, at=17))
    assert int(load_checkpoint(resumed / "checkpoints" / "last.pt")["state"]["iteration"]) == 17
    train(copy.deepcopy(config), resumed, resume=True, progress=False, tasks=InterruptAt(source))
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, resumed))
    assert int(a["state"]["iteration"]) == 30
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] < 0.001
    rates = [v for k, v in a["state"].items() if k.startswith("update_rule.rates.")]
    assert len(rates) == 6 and all(r.shape == (5,) for r in rates)
    assert not torch.allclose(rates[0], rates[0][:1])  # the steps learned different rates


def test_maml_plus_plus_through_the_cli(tmp_path):
    recipe = str(ROOT / "configs" / "sinusoid" / "maml++.yaml")
    small = ["train.iterations=20", "train.meta_batch_size=5", "train.val_every=10",
             "train.checkpoint_every=10", "train.val_tasks=10", "algorithm.epoch_iterations=4",
             "model.hidden=[16, 16]"]
    assert main(["train", recipe, *small, "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["eval", str(tmp_path / "run"), "--tasks", "10", "--no-progress"]) == 0
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert len(results["settings"]["5-shot"]["methods"]["maml++"]["mean"]) == 11
    assert "multi-step loss" in (tmp_path / "run" / "report.md").read_text()


def test_log_lslr_steps_by_the_exponential_of_its_parameters(sine_batch64):
    torch.manual_seed(0)
    algo = MAMLPlusPlus(tanh_net().double(), inner_steps=2, update_rule="lslr-log", inner_lr=0.1,
                        multi_step_loss=False)
    assert all(torch.allclose(r, torch.full_like(r, math.log(0.1))) for r in algo.update_rule.rates)
    with torch.no_grad():
        for i, rates in enumerate(algo.update_rule.rates):
            rates.copy_(torch.log(torch.tensor([0.05, 0.12], dtype=torch.float64) * (1 + 0.1 * i)))
    plain = make(inner_steps=2, multi_step_loss=False)
    plain.load_state_dict({k: v for k, v in algo.state_dict().items() if "rates" not in k}, strict=False)
    with torch.no_grad():
        for mine, theirs in zip(plain.update_rule.rates, algo.update_rule.rates):
            mine.copy_(theirs.exp())
    torch.testing.assert_close(algo.meta_loss(sine_batch64)[0], plain.meta_loss(sine_batch64)[0])


# ----- per-step BatchNorm weights and biases (BNWB) ------------------------------------------------
def bn_net():
    return nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Tanh(),
                         nn.Linear(8, 1))


def make_bn(steps=3, per_step_bn=True, **kwargs):
    torch.manual_seed(0)
    algo = MAMLPlusPlus(bn_net().double(), inner_steps=steps, epoch_iterations=10, msl_epochs=4,
                        per_step_bn=per_step_bn, **kwargs)
    with torch.no_grad():
        for i, rates in enumerate(algo.update_rule.rates):
            rates.copy_(torch.linspace(0.05, 0.15, len(rates), dtype=torch.float64) * (1 + 0.1 * i))
    return algo


def bn_reference(algo, batch, weights):
    """Step k's support forward and the query forward of θ_k use (γ_k, β_k); the inner loop moves
    the other parameters only."""
    model, rates = algo.model, dict(zip(algo.update_rule.names, algo.update_rule.rates))
    gamma, beta = algo.step_norms["1/weight"], algo.step_norms["1/bias"]
    moving = {n: p for n, p in model.named_parameters() if not n.startswith("1.")}

    def forward(fast, k, x):
        k = min(k, algo.inner_steps)
        return functional_call(model, {**fast, "1.weight": gamma[k], "1.bias": beta[k]}, (x,))

    total = 0.0
    for i in range(batch.num_tasks):
        fast = dict(moving)
        for k in range(len(weights)):
            loss = nn.functional.mse_loss(forward(fast, k, batch.support_x[i]), batch.support_y[i])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: fast[n] - rates[n][k] * g for n, g in zip(fast, grads)}
            query = nn.functional.mse_loss(forward(fast, k + 1, batch.query_x[i]), batch.query_y[i])
            total = total + weights[k] * query
    return total / batch.num_tasks


def test_per_step_batchnorm_weights_match_a_plain_loop_and_finite_differences(sine_batch64):
    algo = make_bn(task_parallel="loop")
    assert set(algo.step_norms) == {"1/weight", "1/bias"} and algo.step_norms["1/weight"].shape == (4, 8)
    assert not any(n.startswith("1.") for n in algo.adapted_names)
    with torch.no_grad():  # distinct per-step values, so a mix-up of steps would show
        for j, table in enumerate(algo.step_norms.values()):
            table.add_(torch.linspace(-0.3, 0.3, 32, dtype=torch.float64).view(4, 8) * (1 + j))
    algo.iteration.fill_(25)
    weights = step_weights(3, 2, 4, 0.03)
    loss, _ = algo.meta_loss(sine_batch64)
    expected = bn_reference(algo, sine_batch64, weights)
    torch.testing.assert_close(loss, expected)
    params = [p for p in algo.parameters()]
    for a, b in zip(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True),
                    torch.autograd.grad(expected, params, allow_unused=True, materialize_grads=True)):
        torch.testing.assert_close(a, b)
    gamma = algo.step_norms["1/weight"]
    (grad,) = torch.autograd.grad(algo.meta_loss(sine_batch64)[0], [gamma])
    assert grad[3].abs().sum() > 0  # the query forward of θ_3 uses γ_3
    eps = 1e-6
    for k in range(4):
        with torch.no_grad():
            gamma[k, 2] += eps
            up = algo.meta_loss(sine_batch64)[0].item()
            gamma[k, 2] -= 2 * eps
            down = algo.meta_loss(sine_batch64)[0].item()
            gamma[k, 2] += eps
        assert abs((up - down) / (2 * eps) - grad[k, 2].item()) < 1e-6 * max(1.0, abs(grad[k, 2].item()))


def test_per_step_batchnorm_weights_left_at_their_start_change_nothing(sine_batch64):
    with_bnwb, without = make_bn(task_parallel="loop"), make_bn(task_parallel="loop", per_step_bn=False)
    with torch.no_grad():  # without BNWB the inner loop would move γ and β: freeze them in both
        without.model[1].weight.requires_grad_(False)
        without.model[1].bias.requires_grad_(False)
    without = MAMLPlusPlus(without.model, inner_steps=3, epoch_iterations=10, msl_epochs=4, per_step_bn=False,
                           task_parallel="loop")
    without.update_rule.load_state_dict({f"rates.{i}": r for i, r in
                                         enumerate(with_bnwb.update_rule.rates)})
    a, b = with_bnwb.meta_loss(sine_batch64)[0], without.meta_loss(sine_batch64)[0]
    torch.testing.assert_close(a, b)


def test_adaptation_at_test_time_uses_each_steps_batchnorm_weights(sine_batch64):
    algo = make_bn(task_parallel="loop")
    with torch.no_grad():
        algo.step_norms["1/weight"].mul_(torch.tensor([1.0, 0.7, 1.3, 0.9], dtype=torch.float64).view(4, 1))
    per_step = algo.task_losses(algo.meta_params(), sine_batch64, 5, True, per_step=True)
    adapted = algo.adapt_tasks(sine_batch64.support_x, sine_batch64.support_y, 5)
    for k in range(1, 6):
        prediction = adapted.predict(sine_batch64.query_x, step=k)
        mse = ((prediction - sine_batch64.query_y) ** 2).mean((1, 2))
        torch.testing.assert_close(mse, per_step[:, k - 1])
