"""The learned optimizer: hand-designed rules against torch.optim, the LSTM cell on any leading axes
against nn.LSTMCell, the truncated unroll's meta-gradient against finite differences with the
optimizee's gradients held constant (float64), the truncation and the per-task starting points,
exact resume, and the recipe with the comparison script through the command line."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from metadapt.algorithms import LearnedOptimizer, LSTMOptimizer
from metadapt.algorithms.learned_optimizer import optimize, task_seed
from metadapt.algorithms.meta_lstm import lstm_cell, preprocess
from metadapt.algorithms.update_rules import SGD, Adam, Momentum, Nesterov, RMSprop
from metadapt.cli import main
from metadapt.errors import UserError
from metadapt.models import Point
from metadapt.tasks import QuadraticTasks
from metadapt.tasks.quadratic import squared_error
from metadapt.training.checkpoint import load_checkpoint

ROOT = Path(__file__).parent.parent

TORCH_OPTIM = {
    SGD: lambda p, lr: torch.optim.SGD(p, lr=lr),
    Momentum: lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    Nesterov: lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    RMSprop: lambda p, lr: torch.optim.RMSprop(p, lr=lr),
    Adam: lambda p, lr: torch.optim.Adam(p, lr=lr),
}


@pytest.mark.parametrize("rule", list(TORCH_OPTIM), ids=lambda r: r.__name__)
def test_hand_designed_rules_equal_torch_optim_with_a_task_axis(rule):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 10, 10, generator=g, dtype=torch.float64)
    y = torch.randn(3, 10, generator=g, dtype=torch.float64)
    params = {"x": torch.zeros(3, 10, dtype=torch.float64)}
    r = rule({"x": torch.zeros(10)}, 0.01)
    state = r.init(params)
    for _ in range(30):
        x = params["x"].clone().requires_grad_()
        grad = torch.autograd.grad(((w @ x.unsqueeze(-1)).squeeze(-1) - y).pow(2).sum(), x)[0]
        params, state = r.update({"x": grad}, state, params)
    for task in range(3):
        x = torch.zeros(10, dtype=torch.float64, requires_grad=True)
        opt = TORCH_OPTIM[rule]([x], 0.01)
        for _ in range(30):
            opt.zero_grad()
            (w[task] @ x - y[task]).pow(2).sum().backward()
            opt.step()
        assert torch.allclose(params["x"][task], x.detach(), rtol=1e-12, atol=1e-14)


def test_lstm_cell_on_any_leading_axes_equals_nn_lstmcell():
    torch.manual_seed(0)
    cell = nn.LSTMCell(2, 5).double()
    x = torch.randn(3, 4, 7, 2, dtype=torch.float64)
    h, c = torch.randn(3, 4, 7, 5, dtype=torch.float64), torch.randn(3, 4, 7, 5, dtype=torch.float64)
    ours = lstm_cell(cell, x, (h, c))
    theirs = cell(x.reshape(-1, 2), (h.reshape(-1, 5), c.reshape(-1, 5)))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.reshape(-1, 5), b, rtol=1e-12, atol=1e-14)


def test_lstm_optimizer_step_is_the_scaled_readout_of_a_two_layer_lstm():
    torch.manual_seed(0)
    params = {"x": torch.tensor([0.5, -0.25, 2.0], dtype=torch.float64)}
    rule = LSTMOptimizer(params, lr=0.01).double()
    grads = {"x": torch.tensor([1e-6, -3.0, 0.4], dtype=torch.float64)}
    new, state = rule.update(grads, rule.init(params), params)
    first = rule.cells[0](preprocess(grads["x"]))  # from a zero state
    second = rule.cells[1](first[0])
    expected = params["x"] + 0.1 * rule.out(second[0]).squeeze(-1)
    assert torch.allclose(new["x"], expected, rtol=1e-12)
    assert torch.allclose(state["x"][1][0], second[0]) and torch.allclose(state["x"][0][1], first[1])


def make(**kwargs):
    torch.manual_seed(0)
    return LearnedOptimizer(Point(10), loss=squared_error, inner_steps=6, unroll=3, **kwargs).double()


def problems(n=4, seed=1):
    b = QuadraticTasks().sample(n, torch.Generator().manual_seed(seed))
    return type(b)(*(t.double() for t in (b.support_x, b.support_y, b.query_x, b.query_y)))


def test_each_task_starts_from_its_own_draw_of_the_models_initialization():
    algo, batch = make(), problems(64)
    start = algo.initial_params(batch.support_x, batch.support_y)["x"]
    again = algo.initial_params(batch.support_x, batch.support_y)["x"]
    assert torch.equal(start, again)  # seeded by the task: the same every time
    assert len({tuple(row.tolist()) for row in start}) == 64
    assert 0.008 < float(start.std()) < 0.012  # the Point's N(0, 0.01²)
    assert task_seed(batch.support_x[0]) != task_seed(batch.support_x[1])
    fixed = make(fresh_init=False).initial_params(batch.support_x, batch.support_y)["x"]
    assert torch.equal(fixed, algo.model.x.detach().expand(64, 10))


def test_unroll_meta_gradient_equals_finite_differences_with_gradients_held_constant():
    algo, batch = make(), problems()
    params = algo.initial_params(batch.support_x, batch.support_y)
    losses, _, _ = algo.unroll_losses(params, algo._init_state(params),
                                      algo.step_batches(batch.support_x, batch.support_y), 3)
    objective = losses.sum(1).mean()
    objective.backward()
    rule = algo.update_rule
    names = [n for n, _ in rule.named_parameters()]
    analytic = [p.grad.clone() for p in rule.parameters()]

    # the optimizee's gradients of the unperturbed unroll, to replay as constants
    recorded, x = [], params["x"].clone()
    state = rule.init({"x": x})
    with torch.no_grad():
        for _ in range(3):
            point = x.clone().requires_grad_()
            with torch.enable_grad():
                value = sum(squared_error(point[i] @ batch.support_x[i, 0].T, batch.support_y[i, 0])
                            for i in range(point.shape[0]))
                g = torch.autograd.grad(value, point)[0]
            recorded.append(g)
            new, state = rule.update({"x": g}, state, {"x": x})
            x = new["x"]

    def replay(values):
        r = copy.deepcopy(rule)
        with torch.no_grad():
            for n, v in zip(names, values):
                r.get_parameter(n).copy_(v)
            x, state, total = params["x"], r.init({"x": params["x"]}), 0.0
            for g in recorded:
                new, state = r.update({"x": g}, state, {"x": x})
                x = new["x"]
                predictions = (batch.support_x[:, 0] @ x.unsqueeze(-1)).squeeze(-1)
                total += float((predictions - batch.support_y[:, 0]).pow(2).sum(-1).mean())
        return total

    base = [p.detach().clone() for p in rule.parameters()]
    assert replay(base) == pytest.approx(objective.item(), rel=1e-12)
    generator = torch.Generator().manual_seed(5)
    for _ in range(4):
        d = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in base]
        eps = 1e-6
        numeric = (replay([p + eps * v for p, v in zip(base, d)])
                   - replay([p - eps * v for p, v in zip(base, d)])) / (2 * eps)
        exact = sum(float((a * v).sum()) for a, v in zip(analytic, d))
        assert exact == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    assert algo.model.x.grad is None  # the starting point is not meta-learned


def test_a_meta_iteration_takes_one_update_per_truncated_unroll_and_leaves_the_model_alone():
    from metadapt.training.distributed import Context
    from metadapt.training.steps import StepResult

    algo = make()
    before = copy.deepcopy(algo.state_dict())
    outer = algo.outer_step(type("C", (), {"train": type("T", (), {
        "meta_lr": 1e-3, "optimizer": "adam", "meta_batch_size": 4, "clip_grad_norm": 0.0})})(),
        Context(), torch.device("cpu"))
    draw = lambda self, n, g: problems(n, seed=int(torch.randint(99, (1,), generator=g)))  # noqa: E731
    tasks = type("S", (), {"sample": draw})()
    result = outer.step(tasks, torch.Generator().manual_seed(0))
    assert isinstance(result, StepResult) and result.finite
    steps = {int(s["step"]) for s in outer.optimizer.state_dict()["state"].values()}
    assert steps == {2}  # six steps, unrolls of three
    after = algo.state_dict()
    assert torch.equal(after["model.x"], before["model.x"])
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("update_rule."))


def test_hand_designed_optimize_matches_a_plain_loop():
    algo, batch = make(), problems(3)
    curve = optimize(algo, Adam({"x": torch.zeros(10)}, 0.05), batch, 10)
    start = algo.initial_params(batch.support_x, batch.support_y)["x"]
    for i in range(3):
        x = start[i].clone().requires_grad_()
        opt = torch.optim.Adam([x], lr=0.05)
        for k in range(10):
            loss = (batch.support_x[i, 0] @ x - batch.support_y[i, 0]).pow(2).sum()
            assert curve[i, k].item() == pytest.approx(loss.item(), rel=1e-10)
            opt.zero_grad()
            loss.backward()
            opt.step()


def digits_problems(num_tasks=3, support=40, split="train"):
    pytest.importorskip("sklearn")
    from metadapt.tasks.digits import DigitsTasks

    return DigitsTasks(split, support, 8).sample(num_tasks, torch.Generator().manual_seed(1))


def digits_algorithm(minibatch, **kwargs):
    from metadapt.models import MLP

    torch.manual_seed(0)
    model = MLP(64, (6,), 10, activation="sigmoid")
    return LearnedOptimizer(model, loss="cross_entropy", minibatch=minibatch, inner_steps=6,
                            unroll=3, **kwargs)


def test_minibatches_are_seeded_by_the_task_fresh_every_step_and_without_replacement():
    from metadapt.algorithms.learned_optimizer import StepBatches

    batch = digits_problems(3, support=40)
    a, b = (StepBatches(batch.support_x, batch.support_y, 16) for _ in range(2))
    rows = [{tuple(r.tolist()) for r in batch.support_x[i]} for i in range(3)]
    seen = []
    for _ in range(4):
        (xa, ya), (xb, yb) = a.current(), b.current()
        assert xa.shape == (3, 16, 64) and ya.shape == (3, 16)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)  # the same task, the same draws
        for i in range(3):
            drawn = [tuple(r.tolist()) for r in xa[i]]
            assert set(drawn) <= rows[i] and len(set(drawn)) == 16  # from the task's support, no repeats
        seen.append(xa)
        a.advance()
        b.advance()
    assert not torch.equal(seen[0], seen[1])  # a new minibatch every step
    assert not torch.equal(seen[0][0], seen[0][1])  # and each task its own
    whole = StepBatches(batch.support_x, batch.support_y, 0)
    whole.advance()
    assert whole.current()[0] is batch.support_x
    with pytest.raises(UserError, match="minibatch=41"):
        StepBatches(batch.support_x, batch.support_y, 41)


def test_minibatch_optimize_is_torch_optim_on_the_same_minibatches_scored_on_the_whole_support():
    from metadapt.algorithms.learned_optimizer import StepBatches

    algo, batch = digits_algorithm(16), digits_problems(2, support=40)
    curve = optimize(algo, Momentum(dict(algo.model.named_parameters()), 0.5), batch, 5)
    draws = StepBatches(batch.support_x, batch.support_y, 16)
    start = algo.initial_params(batch.support_x, batch.support_y)

    def loss(params, x, y):
        return nn.functional.cross_entropy(torch.func.functional_call(algo.model, params, (x,)), y)

    for i in range(2):
        params = {n: v[i].clone().requires_grad_() for n, v in start.items()}
        opt = torch.optim.SGD(params.values(), lr=0.5, momentum=0.9)
        for k in range(5):
            whole = loss(params, batch.support_x[i], batch.support_y[i]).item()
            assert curve[i, k].item() == pytest.approx(whole, rel=1e-5)
            x, y = draws.current()
            opt.zero_grad()
            loss(params, x[i], y[i]).backward()
            opt.step()
            draws.advance()
        whole = loss(params, batch.support_x[i], batch.support_y[i]).item()
        assert curve[i, 5].item() == pytest.approx(whole, rel=1e-5)
        draws = StepBatches(batch.support_x, batch.support_y, 16)


def test_minibatch_unroll_scores_each_step_on_the_next_minibatch_and_trains():
    from metadapt.algorithms.learned_optimizer import StepBatches

    algo, batch = digits_algorithm(16), digits_problems(2, support=40)
    params = algo.initial_params(batch.support_x, batch.support_y)
    losses, reached, _ = algo.unroll_losses(params, algo._init_state(params),
                                            algo.step_batches(batch.support_x, batch.support_y), 2)
    draws = StepBatches(batch.support_x, batch.support_y, 16)
    draws.advance()
    draws.advance()
    x, y = draws.current()  # the third step's minibatch scores the second step's result
    expected = torch.func.vmap(algo.loss)(reached, x, y)
    assert torch.allclose(losses[:, 1], expected)
    losses.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in algo.update_rule.parameters())


RECIPE = str(ROOT / "configs/quadratic/learned-optimizer.yaml")
TINY = ["algorithm.inner_steps=10", "algorithm.unroll=5", "train.meta_batch_size=8", "train.val_every=2",
        "train.val_tasks=8", "train.checkpoint_every=2", "train.log_every=2"]


def test_resume_continues_exactly(tmp_path):
    assert main(["train", RECIPE, *TINY, "train.iterations=4", "--run-dir", str(tmp_path / "a")]) == 0
    assert main(["train", RECIPE, *TINY, "train.iterations=2", "--run-dir", str(tmp_path / "b")]) == 0
    assert main(["train", RECIPE, *TINY, "train.iterations=4", "--run-dir", str(tmp_path / "b"),
                 "--resume"]) == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    for key, value in a["state"].items():
        assert torch.equal(value, b["state"][key]), key


def test_recipe_and_comparison_through_the_command_line(tmp_path):
    run = tmp_path / "run"
    assert main(["train", RECIPE, *TINY, "train.iterations=4", "--run-dir", str(run)]) == 0
    assert main(["eval", str(run), "--tasks", "6"]) == 0
    report = (run / "report.md").read_text()
    assert "LSTMOptimizer" in report and "quadratics" in report
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/learned_optimizer.py"), str(run),
                           "--tasks", "20", "--grid-tasks", "10", "--grid", "1e-3:1e-1:1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = json.loads((run / "optimizers.json").read_text())
    assert set(results["optimizers"]) == {"sgd", "momentum", "nesterov", "rmsprop", "adam", "learned"}
    assert results["horizon"] == 10 and len(results["optimizers"]["adam"]["mean"]) == 21
    assert results["optimizers"]["adam"]["lr"] in (1e-3, 1e-2, 1e-1)
    assert (run / "optimizers.png").stat().st_size > 10_000
    assert "| learned |" in (run / "optimizers.md").read_text()
    assert main(["eval", str(run), "--tasks", "6"]) == 0  # the report now carries the comparison
    report = (run / "report.md").read_text()
    assert "## Against hand-designed optimizers" in report and "optimizers.png" in report


def test_digits_problems_keep_their_splits_apart_and_train_through_the_cli(tmp_path):
    pytest.importorskip("sklearn")
    from metadapt.tasks.digits import SPLITS, DigitsTasks, load_digits

    images, labels = load_digits()
    assert images.shape == (1797, 64) and 0 <= float(images.min()) and float(images.max()) == 1.0
    batch = DigitsTasks("test", 128, 128).sample(3, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (3, 128, 64) and batch.query_y.shape == (3, 128)
    test_rows = {tuple(r.tolist()) for r in images[SPLITS["test"][0]:SPLITS["test"][1]]}
    for task in range(3):
        drawn = torch.cat([batch.support_x[task], batch.query_x[task]])
        assert all(tuple(r.tolist()) in test_rows for r in drawn)  # test problems use test images only
    run = tmp_path / "digits"
    recipe = str(ROOT / "configs/digits/learned-optimizer.yaml")
    assert main(["train", recipe, *TINY, "train.iterations=2", "--run-dir", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]  # the objective, and the held-out loss beside it
    assert val and all({"query_loss", "heldout_loss", "accuracy"} <= set(r) for r in val)
    assert main(["eval", str(run), "--tasks", "4"]) == 0
    assert "accuracy" in (run / "report.md").read_text()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/learned_optimizer.py"), str(run),
                           "--tasks", "6", "--grid-tasks", "4", "--grid", "1e-2:1e-1:1",
                           "--checkpoint", "last"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = json.loads((run / "optimizers.json").read_text())
    assert 0 <= results["optimizers"]["learned"]["accuracy_10"] <= 1
    assert "held-out accuracy" in (run / "optimizers.md").read_text()


def test_adaptation_equals_the_generic_vmapped_inner_loop():
    from metadapt.algorithms import GradientLearner

    algo, batch = make(), problems(5)
    ours = algo.adapt_tasks(batch.support_x, batch.support_y, 7)
    generic = GradientLearner.adapt_tasks(algo, batch.support_x, batch.support_y, 7)
    for k in range(8):
        torch.testing.assert_close(ours.trajectory[k]["x"], generic.trajectory[k]["x"])
        torch.testing.assert_close(ours.predict(batch.query_x, step=k),
                                   generic.predict(batch.query_x, step=k))


def test_a_minibatch_larger_than_the_support_is_refused_before_the_run_exists(tmp_path, capsys):
    pytest.importorskip("sklearn")
    run = tmp_path / "run"
    recipe = str(ROOT / "configs/digits/learned-optimizer-minibatch.yaml")
    assert main(["train", recipe, "algorithm.minibatch=300", "--run-dir", str(run)]) == 2
    error = capsys.readouterr().err
    assert "algorithm.minibatch=300 is larger than the task's support (task.support=256)" in error
    assert not run.exists()
