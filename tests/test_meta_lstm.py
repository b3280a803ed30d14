"""The Meta-Learner LSTM: Andrychowicz's preprocessing at its boundary, one cell update against a
hand computation, the meta-gradient against finite differences with the learner's gradients held
constant (float64), loop against vmap, the paper's gate-bias initialization, and a recipe trained
and evaluated through the CLI."""
import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metadapt.algorithms import MAML, MetaLSTM
from metadapt.algorithms.meta_lstm import preprocess
from metadapt.cli import main
from metadapt.tasks import SinusoidTasks

ROOT = Path(__file__).parent.parent


def test_preprocess_at_the_boundary_and_either_side():
    p = 10.0
    edge = math.exp(-p)
    x = torch.tensor([edge, -edge, 0.5, -3.0, 1e-7, -2e-6, 0.0], dtype=torch.float64)
    out = preprocess(x, p)
    expected = [(-1.0, 1.0), (-1.0, -1.0), (math.log(0.5) / p, 1.0), (math.log(3.0) / p, -1.0),
                (-1.0, 1e-7 * math.exp(p)), (-1.0, -2e-6 * math.exp(p)), (-1.0, 0.0)]
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # the two branches meet at |x| = e^{-p}: just inside and just outside give nearly the same pair
    inside, outside = preprocess(torch.tensor([edge * (1 - 1e-9), edge * (1 + 1e-9)], dtype=torch.float64), p)
    assert torch.allclose(inside, outside, atol=1e-8)


def small_rule(params, hidden=3):
    torch.manual_seed(1)
    return MetaLSTM(params, lr=0.01, steps=2, hidden=hidden).double()


def test_one_cell_update_equals_a_hand_computation():
    theta = {"w": torch.tensor([[0.3, -1.2]], dtype=torch.float64)}
    grads = {"w": torch.tensor([[0.02, -4.0]], dtype=torch.float64)}
    loss = torch.tensor(0.7, dtype=torch.float64)
    rule = small_rule(theta)
    with torch.no_grad():  # gates far from their initial saturation, so every term matters
        rule.w_forget.copy_(torch.tensor([0.5, -0.3, 0.2, 0.4, 0.1], dtype=torch.float64))
        rule.w_input.copy_(torch.tensor([-0.2, 0.6, 0.1, -0.5, 0.3], dtype=torch.float64))
        rule.b_forget.fill_(1.5)
        rule.b_input.fill_(-2.0)
    new, state = rule.update(grads, rule.init(theta), theta, loss=loss)

    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    for j in range(2):
        g, th = grads["w"][0, j].item(), theta["w"][0, j].item()
        feats = []
        for v in (loss.item(), g):  # the paper's preprocessing, by hand
            feats += [math.log(abs(v)) / 10, math.copysign(1.0, v)] if abs(v) >= math.exp(-10) \
                else [-1.0, v * math.exp(10)]
        # the first layer: torch's own LSTMCell from a zero state is the reference
        h, _ = rule.lstm(torch.tensor([feats], dtype=torch.float64))
        h = h[0].tolist()
        wf, wi = rule.w_forget.tolist(), rule.w_input.tolist()
        f = sigmoid(sum(a * b for a, b in zip(wf[:3], h)) + wf[3] * th + wf[4] * 0.0 + 1.5)
        i = sigmoid(sum(a * b for a, b in zip(wi[:3], h)) + wi[3] * th + wi[4] * 0.0 - 2.0)
        assert new["w"][0, j].item() == pytest.approx(f * th - i * g, rel=1e-12)
        assert state["w"][2][0, j].item() == pytest.approx(f, rel=1e-12)
        assert state["w"][3][0, j].item() == pytest.approx(i, rel=1e-12)


def test_initialization_starts_near_small_step_gradient_descent():
    params = {"w": torch.zeros(1000)}
    rule = MetaLSTM(params, lr=0.01, steps=1)
    assert 4 <= rule.b_forget.item() <= 6
    assert -5.1 <= rule.b_input.item() <= -4.1
    assert rule.w_forget.abs().max() <= 0.01 and rule.w_input.abs().max() <= 0.01
    g = torch.randn(1000)
    new, _ = rule.update({"w": g}, rule.init(params), params, loss=torch.tensor(1.0))
    step = -new["w"] / g  # θ = 0, so θ' = −i·g: the effective step size
    assert step.min() > 0.004 and step.max() < 0.02


def tanh_net():
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)).double()


def make_maml(steps=2):
    torch.manual_seed(0)
    model = tanh_net()
    rule = small_rule(dict(model.named_parameters()))
    return MAML(model, inner_lr=0.01, inner_steps=steps, first_order=True, update_rule=rule)


def batch64(tasks=3):
    b = SinusoidTasks(shots=5).sample(tasks, torch.Generator().manual_seed(2))
    return type(b)(*(t.double() for t in (b.support_x, b.support_y, b.query_x, b.query_y)))


@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_equals_finite_differences_with_the_learners_gradients_held_constant(steps):
    algo, batch = make_maml(steps), batch64()
    loss, _ = algo.meta_loss(batch)
    loss.backward()
    names = [n for n, _ in algo.named_parameters()]
    analytic = {n: p.grad.clone() for n, p in algo.named_parameters()}

    # record the learner's support gradients and losses of the unperturbed run, per task and step
    recorded = []
    for i in range(batch.num_tasks):
        fast, state, per_step = dict(algo.model.named_parameters()), None, []
        state = algo.update_rule.init(fast)
        for _ in range(steps):
            support = nn.functional.mse_loss(functional_call(algo.model, fast, (batch.support_x[i],)),
                                             batch.support_y[i])
            grads = dict(zip(fast, torch.autograd.grad(support, list(fast.values()))))
            per_step.append((grads, support.detach()))
            fast, state = algo.update_rule.update(grads, state, fast, loss=support.detach())
            fast = {n: v.detach().requires_grad_() for n, v in fast.items()}
        recorded.append(per_step)

    def replay(values):
        """The meta-loss as a function of every meta-parameter, the recorded gradients constant."""
        with torch.no_grad():
            params = dict(zip(names, values))
            model = {n[len("model."):]: v for n, v in params.items() if n.startswith("model.")}
            rule = copy.deepcopy(algo.update_rule)
            for n, v in params.items():
                if n.startswith("update_rule."):
                    rule.get_parameter(n[len("update_rule."):]).copy_(v)
            total = 0.0
            for i in range(batch.num_tasks):
                fast = dict(model)
                state = rule.init(fast)
                for grads, support in recorded[i]:
                    fast, state = rule.update(grads, state, fast, loss=support)
                pred = functional_call(algo.model, fast, (batch.query_x[i],))
                total += nn.functional.mse_loss(pred, batch.query_y[i]).item()
            return total / batch.num_tasks

    base = [p.detach().clone() for p in algo.parameters()]
    assert replay(base) == pytest.approx(loss.item(), rel=1e-12)
    generator = torch.Generator().manual_seed(3)
    for _ in range(4):
        direction = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in base]
        eps = 1e-6
        plus = replay([p + eps * d for p, d in zip(base, direction)])
        minus = replay([p - eps * d for p, d in zip(base, direction)])
        numeric = (plus - minus) / (2 * eps)
        exact = sum((analytic[n] * d).sum().item() for n, d in zip(names, direction))
        assert exact == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    assert analytic["update_rule.b_input"].abs() > 0
    assert analytic["update_rule.lstm.weight_ih"].abs().sum() > 0


def test_loop_and_vmap_agree():
    algo, batch = make_maml(3), batch64(4)
    out = {}
    for strategy in ("loop", "vmap"):
        algo.strategy = strategy
        algo.zero_grad()
        loss, _ = algo.meta_loss(batch)
        loss.backward()
        out[strategy] = (loss.item(), [p.grad.clone() for p in algo.parameters()])
    assert out["loop"][0] == pytest.approx(out["vmap"][0], rel=1e-12)
    for a, b in zip(out["loop"][1], out["vmap"][1]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    adapted = algo.adapt_tasks(batch.support_x, batch.support_y, 3)
    losses = algo.task_losses(algo.meta_params(), batch, 3, True)
    prediction = adapted.predict(batch.query_x)
    assert torch.allclose(((prediction - batch.query_y) ** 2).mean((1, 2)), losses, rtol=1e-10)


def test_recipe_trains_and_evaluates_through_the_cli(tmp_path):
    run = tmp_path / "run"
    args = ["train", str(ROOT / "configs/sinusoid/meta-lstm.yaml"), "train.iterations=6", "train.val_every=3",
            "train.val_tasks=4", "train.checkpoint_every=3", "train.log_every=3", "train.meta_batch_size=2",
            "--run-dir", str(run)]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6
    assert main(["eval", str(run), "--tasks", "5"]) == 0
    report = (run / "report.md").read_text()
    assert "MetaLSTM" in report
