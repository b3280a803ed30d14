"""Bring your own model, loss and tasks from Python, end to end; frozen and unused parameters;
BatchNorm with running statistics; evaluation of a run whose tasks cannot be rebuilt."""
import json

import pytest
import torch
from test_plugins import LineFamily, LineTasks, huber
from torch import nn

import metadapt
from metadapt import MAML, AdaptedModel, ProtoNet, UserError, use_batch_statistics
from metadapt.cli import main
from metadapt.config import build_config
from metadapt.training.checkpoint import load_checkpoint

SMALL = ["train.iterations=30", "train.meta_batch_size=4", "train.val_every=15", "train.val_tasks=8",
         "train.checkpoint_every=15", "train.log_every=5", "algorithm.inner_lr=0.1", "eval.tasks=10",
         "eval.shots=[5]", "eval.steps=2", "eval.queries=10"]


class Net(nn.Module):
    """A user's model: a frozen input scaling, a parameter the forward pass never uses, two layers."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([2.0]), requires_grad=False)
        self.unused = nn.Parameter(torch.zeros(3))
        self.body = nn.Sequential(nn.Linear(1, 16), nn.Tanh())
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.body(x * self.scale))


def smooth_l1(prediction, target):
    return nn.functional.smooth_l1_loss(prediction, target)


def test_model_loss_and_family_from_python_through_train_eval_and_report(tmp_path):
    torch.manual_seed(0)
    net = Net()
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    config = build_config(None, SMALL)
    metadapt.train(config, tmp_path / "run", progress=False, model=net, loss=smooth_l1, tasks=LineFamily())
    recorded = (tmp_path / "run" / "config.yaml").read_text()
    assert "family: test_plugins:LineFamily" in recorded and "name: given" in recorded
    assert "loss: test_bring_your_own:smooth_l1" in recorded
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state"]
    assert torch.equal(state["model.scale"], before["scale"])          # frozen: never moved
    assert torch.equal(state["model.unused"], before["unused"])        # unused: zero gradient, never moved
    assert not torch.equal(state["model.head.weight"], before["head.weight"])

    with pytest.raises(UserError, match="trained with a model given from Python"):
        metadapt.load(tmp_path / "run")
    run = metadapt.load(tmp_path / "run", model=Net(), loss=smooth_l1)
    results = metadapt.evaluate_run(run, progress=False)
    assert (set(results["settings"]["5-shot"]["methods"]) == {"maml", "scratch"}
            and results["metric"] == "loss")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "lines y = a·x + b" in report and "Loss: `test_bring_your_own:smooth_l1`" in report


def test_eval_of_a_run_trained_on_given_tasks_refuses_in_one_line(tmp_path, capsys):
    config = build_config(None, SMALL)
    metadapt.train(config, tmp_path / "run", progress=False, tasks=LineTasks(5, 10, 3.0))
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert main(["eval", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on tasks given from Python (test_plugins:LineTasks)" in err
    assert "task.family: pkg.module:Family" in err
    assert before == {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    run = metadapt.load(tmp_path / "run")  # adaptation needs no tasks: shapes were recorded
    assert run.adapt(torch.zeros(5, 1), torch.ones(5, 1)).predict(torch.zeros(2, 1)).shape == (2, 1)
    results = metadapt.evaluate_run(metadapt.load(tmp_path / "run", tasks=LineTasks(5, 10, 3.0)),
                                    progress=False)
    assert "5-shot" in results["settings"]


def test_a_frozen_parameter_is_left_alone_and_unused_ones_get_zero_gradient():
    torch.manual_seed(0)
    maml = MAML(Net(), inner_lr=0.1, inner_steps=2)
    assert maml.adapted_names == ["unused", "body.0.weight", "body.0.bias", "head.weight", "head.bias"]
    batch = LineTasks(5, 10, 3.0).sample(4, torch.Generator().manual_seed(0))
    for strategy in ("vmap", "loop"):
        maml.strategy = strategy
        maml.zero_grad()
        loss, _ = maml.meta_loss(batch)
        loss.backward()
        assert maml.model.scale.grad is None
        assert maml.model.unused.grad is None or torch.equal(maml.model.unused.grad, torch.zeros(3))
        adapted = maml.adapt_tasks(batch.support_x, batch.support_y, steps=2)
        assert torch.equal(adapted.trajectory[2]["scale"][0], maml.model.scale)
        assert torch.equal(adapted.trajectory[2]["unused"][0], maml.model.unused.detach())


def test_adapt_only_takes_a_list_of_name_prefixes_in_a_recipe():
    config = build_config(None, ["algorithm.adapt_only=[model.2, model.4]", "model.hidden=[8, 8]"])
    assert config.algorithm.adapt_only == ["model.2", "model.4"]
    maml = MAML(metadapt.MLP(1, [8, 8], 1), adapt_only=["2", "4"])
    assert maml.adapted_names == ["2.weight", "2.bias", "4.weight", "4.bias"]


def test_batchnorm_with_running_statistics_is_refused_naming_the_layer_and_the_fix():
    def net():
        return nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    with pytest.raises(UserError, match=r"model layer '1' \(BatchNorm1d\) tracks running statistics"
                                        r".*use_batch_statistics"):
        MAML(net())
    maml = MAML(use_batch_statistics(net()), inner_lr=0.05)
    assert not [name for name, _ in maml.model.named_buffers()]
    batch = LineTasks(5, 10, 3.0).sample(4, torch.Generator().manual_seed(0))
    loss, _ = maml.meta_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_train_refuses_batchnorm_with_running_statistics_before_writing_anything(tmp_path):
    model = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(UserError, match="tracks running statistics"):
        metadapt.train(build_config(None, SMALL), tmp_path / "run", progress=False, model=model)
    assert not (tmp_path / "run").exists()


def test_every_adapted_object_satisfies_one_protocol():
    maml = MAML(metadapt.MLP(1, [8], 1))
    assert isinstance(maml.adapt(torch.zeros(5, 1), torch.zeros(5, 1)), AdaptedModel)
    protonet = ProtoNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    memory = protonet.adapt(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]))
    assert isinstance(memory, AdaptedModel) and memory.steps == 0
    assert memory.predict(torch.randn(3, 4)).shape == (3, 2)


def test_a_custom_loss_reaches_the_inner_loop_and_the_metrics(tmp_path):
    summary = metadapt.train(build_config(None, SMALL + ["loss=test_plugins:huber"]), tmp_path / "run",
                             progress=False, tasks=LineFamily())
    assert summary["steps"] == 30
    run = metadapt.load(tmp_path / "run")
    assert run.algorithm.loss_fn is huber
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["query_loss"] >= 0 for r in rows if "query_loss" in r)
