"""One file per new thing: an algorithm, a task family, an update rule, a model and a loss, all
defined here, outside the package, named in a recipe by import path (``test_plugins:…``), and
trained, evaluated and reported through the command line without touching ``src/``."""
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from metadapt import Algorithm, TaskBatch, TaskFamily, UpdateRule
from metadapt.cli import main
from metadapt.options import option
from metadapt.training.checkpoint import load_checkpoint
from metadapt.training.steps import OuterStep, StepResult

TRAIN = {"iterations": 30, "meta_batch_size": 4, "val_every": 15, "val_tasks": 8, "checkpoint_every": 15,
         "log_every": 5, "meta_lr": 0.003}
EVAL = {"tasks": 12, "shots": [5], "queries": 10, "steps": 2, "targets": [1.0]}


# ----- a task family: lines y = a x + b ------------------------------------------------------------
class LineTasks:
    def __init__(self, shots: int, queries: int, slope: float):
        self.shots, self.queries, self.slope = shots, queries, slope

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        a = torch.empty(num_tasks, 1, 1).uniform_(-self.slope, self.slope, generator=generator)
        b = torch.empty(num_tasks, 1, 1).uniform_(-1, 1, generator=generator)
        x = torch.empty(num_tasks, self.shots + self.queries, 1).uniform_(-1, 1, generator=generator)
        y = a * x + b
        return TaskBatch(x[:, :self.shots], y[:, :self.shots], x[:, self.shots:], y[:, self.shots:])


@dataclass
class LineOptions:
    shots: int = option(5, positive=True)
    queries: int = option(10, positive=True)
    slope: float = option(3.0, positive=True)


class LineFamily(TaskFamily):
    """Lines with slope ~ U[-slope, slope] and intercept ~ U[-1, 1]."""

    Options = LineOptions

    def tasks(self, split="train", shots=None, queries=None, ways=None):
        o = self.options
        return LineTasks(shots or o.shots, queries or o.queries, o.slope)

    def describe(self):
        return [f"- Tasks: lines y = a·x + b, |a| ≤ {self.options.slope}, "
                f"{self.options.shots} support points."]


# ----- an update rule: sign-SGD with a learned scale per parameter tensor -----------------------------
class SignSGD(UpdateRule):
    """θ ← θ − exp(s) · sign(g), with one learned log-scale ``s`` per parameter tensor."""

    def __init__(self, params, lr, steps):
        super().__init__(params, lr, steps)
        self.names = list(params)
        self.log_scales = nn.Parameter(torch.full((len(params),), float(torch.tensor(lr).log())))

    def update(self, grads, state, params):
        scales = dict(zip(self.names, self.log_scales.exp()))
        return {n: params[n] - scales[n] * torch.sign(g) for n, g in grads.items()}, state


# ----- an algorithm: kernel regression over a meta-learned embedding ---------------------------------
class KernelMemory:
    steps, batched = 0, True

    def __init__(self, algorithm, support_x, support_y):
        self.algorithm, self.support_x, self.support_y = algorithm, support_x, support_y

    @torch.no_grad()
    def predict(self, x, step=None):
        return self.algorithm.regress(self.support_x, self.support_y, x)


class KernelRegression(Algorithm):
    """Predict a query's target as the softmax(−‖f(x) − f(x_i)‖² / τ)-weighted mean of the support
    targets; the embedding ``f`` is meta-learned."""

    @dataclass
    class Options:
        temperature: float = option(1.0, positive=True)
        embedding: int = option(8, positive=True)

    def __init__(self, model, loss, temperature=1.0):
        super().__init__()
        self.model, self.loss_fn, self.temperature = model, loss, temperature

    @classmethod
    def from_config(cls, options, parts):
        return cls(parts.seeded(lambda: parts.model(options.embedding)), parts.loss, options.temperature)

    def regress(self, support_x, support_y, query_x):
        zs, zq = self.model(support_x), self.model(query_x)
        weights = torch.softmax(-torch.cdist(zq, zs).pow(2) / self.temperature, dim=-1)
        return weights @ support_y

    def meta_loss(self, batch):
        loss = self.loss_fn(self.regress(batch.support_x, batch.support_y, batch.query_x), batch.query_y)
        return loss, {"query_loss": loss.item()}

    def adapt_tasks(self, support_x, support_y, steps=None):
        return KernelMemory(self, support_x, support_y)


# ----- a model and a loss named by import path --------------------------------------------------------
class TinyNet(nn.Sequential):
    def __init__(self, width: int = 16):
        super().__init__(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, 1))


def huber(prediction, target):
    return nn.functional.huber_loss(prediction, target, delta=0.5)


# ----- an environment family: which of two doors pays ------------------------------------------------
from typing import ClassVar  # noqa: E402

from metadapt.envs import EnvBatch, EnvFamily  # noqa: E402


@dataclass(frozen=True)
class Doors(EnvBatch):
    """Two actions; door ``good`` pays 1 with probability 0.9, the other with 0.1."""

    noise_size: ClassVar[int] = 1
    actions: ClassVar[int] = 2
    good: torch.Tensor = None

    def reset(self, copies, generator):
        return {}, torch.zeros(self.num_tasks, copies, 1)

    def step(self, state, action, noise):
        p = torch.where(action == self.good[:, None], 0.9, 0.1)
        reward = (noise[..., 0] < p).float()
        return state, torch.zeros(*action.shape, 1), reward, torch.zeros_like(action, dtype=torch.bool)


@dataclass
class DoorOptions:
    pulls: int = option(6, positive=True, help="doors opened per trial")


class DoorFamily(EnvFamily):
    Options = DoorOptions

    def sample(self, num_tasks, generator):
        return Doors(horizon=self.options.pulls, good=torch.randint(2, (num_tasks,), generator=generator))


# ----- the tests --------------------------------------------------------------------------------------
def recipe(tmp_path: Path, name: str, **sections) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "train": TRAIN, "eval": EVAL, **sections}))
    return str(path)


def train_and_eval(tmp_path, name, capsys, **sections):
    run = tmp_path / name
    assert main(["train", recipe(tmp_path, name, **sections), "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "eval" / "results.json").read_text())
    return run, out, results


def test_a_new_task_family_trains_evaluates_and_reports_through_the_cli(tmp_path, capsys):
    run, out, results = train_and_eval(tmp_path, "lines", capsys,
                                       task={"family": "test_plugins:LineFamily", "slope": 2.0},
                                       algorithm={"name": "maml", "inner_lr": 0.1})
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == {
        "family": "test_plugins:LineFamily", "shots": 5, "queries": 10, "slope": 2.0}
    curve = results["settings"]["5-shot"]["methods"]["maml"]["mean"]
    assert results["metric"] == "mse" and len(curve) == 3 and curve[2] < curve[0]
    report = (run / "report.md").read_text()
    assert "lines y = a·x + b, |a| ≤ 2.0" in report and "sinusoid" not in report
    assert "5-shot (12 tasks)" in out


def test_a_new_update_rule_is_meta_learned_through_the_inner_loop(tmp_path, capsys):
    run, _, results = train_and_eval(tmp_path, "sign", capsys, task={"family": "test_plugins:LineFamily"},
                                     algorithm={"name": "maml", "inner_lr": 0.05, "inner_steps": 2,
                                                "update_rule": "test_plugins:SignSGD"})
    state = load_checkpoint(run / "checkpoints" / "last.pt")["state"]
    scales = state["update_rule.log_scales"]
    assert (scales.shape == (6,)
            and not torch.allclose(scales, torch.full((6,), torch.tensor(0.05).log().item())))
    assert "update rule SignSGD" in (run / "report.md").read_text()
    assert len(results["settings"]["5-shot"]["methods"]["maml"]["mean"]) == 3


def test_a_new_algorithm_trains_evaluates_and_reports_through_the_cli(tmp_path, capsys):
    run, out, results = train_and_eval(tmp_path, "kernel", capsys, task={"family": "test_plugins:LineFamily"},
                                       algorithm={"name": "test_plugins:KernelRegression",
                                                  "temperature": 0.5})
    methods = results["settings"]["5-shot"]["methods"]
    assert list(methods) == ["test_plugins:KernelRegression"]  # no gradient steps, so no scratch baseline
    assert len(methods["test_plugins:KernelRegression"]["mean"]) == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["query_loss"] for r in rows if r["split"] == "val"]
    assert val[-1] < val[0]
    assert "test_plugins:KernelRegression" in (run / "report.md").read_text()


def test_a_new_environment_family_trains_and_evaluates_with_rl2(tmp_path, capsys):
    run = tmp_path / "doors"
    path = recipe(tmp_path, "doors", task={"family": "test_plugins:DoorFamily", "pulls": 6},
                  model={"name": "recurrent-policy", "hidden": 16}, algorithm={"name": "rl2"})
    assert main(["train", path, "train.meta_batch_size=32", "train.iterations=40", "--run-dir", str(run),
                 "--no-progress"]) == 0
    assert main(["eval", str(run), "--tasks", "200", "--no-progress"]) == 0
    results = json.loads((run / "eval" / "results.json").read_text())
    assert list(results["methods"]) == ["rl2"]
    # random play earns 0.5 per door; the learned agent finds the good door and keeps opening it
    assert results["methods"]["rl2"]["mean"] > 6 * 0.5 + 0.5
    assert "test_plugins:DoorFamily" in (run / "config.yaml").read_text()


def test_a_model_and_a_loss_by_import_path(tmp_path, capsys):
    run, _, results = train_and_eval(tmp_path, "tiny", capsys, task={"family": "test_plugins:LineFamily"},
                                     model={"name": "test_plugins:TinyNet", "width": 8},
                                     loss="test_plugins:huber", algorithm={"name": "maml", "inner_lr": 0.1})
    state = load_checkpoint(run / "checkpoints" / "last.pt")["state"]
    assert state["model.0.weight"].shape == (8, 1)
    assert results["metric"] == "loss"
    assert "Loss: `test_plugins:huber`" in (run / "report.md").read_text()


@pytest.mark.parametrize("section, message", [
    ({"algorithm": {"name": "test_plugins:KernelRegression", "temprature": 1}},
     "unknown config key 'algorithm.temprature'; did you mean algorithm.temperature?"),
    ({"model": {"name": "test_plugins:TinyNet", "activation": "relu"}},
     "unknown config key 'model.activation'; test_plugins:TinyNet takes width"),
    ({"algorithm": {"name": "test_plugins:Nothing"}},
     "algorithm 'test_plugins:Nothing': module 'test_plugins' has no 'Nothing'"),
    ({"task": {"family": "no_such_package.tasks:Family"}}, "cannot import module 'no_such_package.tasks'"),
    ({"algorithm": {"name": "maml", "update_rule": "adamax"}},
     "algorithm.update_rule: update_rule 'adamax' is not known; choose one of sgd, metasgd"),
    ({"algorithm": {"name": "maml", "update_rule": "test_plugins:TinyNet"}},
     "algorithm.update_rule=test_plugins:TinyNet is not an update rule"),
    ({"algorithm": {"name": "test_plugins:huber"}},
     "algorithm.name=test_plugins:huber is not an algorithm (a subclass of Algorithm)"),
])
def test_bad_import_paths_are_one_line_errors(tmp_path, capsys, section, message):
    sections = {"task": {"family": "test_plugins:LineFamily"}, **section}
    assert main(["train", recipe(tmp_path, "bad", **sections), "--run-dir", str(tmp_path / "bad"),
                 "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# ----- an outer step: several epochs per meta-batch, with state of its own ----------------------------
class EpochsStep(OuterStep):
    """``epochs`` SGD steps on each meta-batch (as PPO takes several epochs per batch of rollouts),
    counting the updates it has made in a tensor it keeps between steps."""

    def __init__(self, algorithm, lr, epochs, meta_batch_size):
        self.algorithm, self.epochs, self.meta_batch_size = algorithm, epochs, meta_batch_size
        self.optimizer = torch.optim.SGD(algorithm.parameters(), lr=lr, momentum=0.9)
        self.updates = torch.zeros((), dtype=torch.int64)

    def step(self, tasks, generator):
        batch = tasks.sample(self.meta_batch_size, generator)
        losses = []
        for _ in range(self.epochs):
            self.optimizer.zero_grad()
            loss, metrics = self.algorithm.meta_loss(batch)
            loss.backward()
            self.optimizer.step()
            self.updates += 1
            losses.append(metrics["query_loss"])
        return StepResult(losses[-1], {"query_loss": losses[-1], "first_epoch_loss": losses[0]}, True)

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates.clone()}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"].clone()


class EpochsKernelRegression(KernelRegression):
    """Kernel regression meta-trained by :class:`EpochsStep` (its ``outer_step``)."""

    @dataclass
    class Options(KernelRegression.Options):
        epochs: int = option(3, positive=True)

    @classmethod
    def from_config(cls, options, parts):
        algorithm = cls(parts.seeded(lambda: parts.model(options.embedding)), parts.loss, options.temperature)
        algorithm.epochs = options.epochs
        return algorithm

    def outer_step(self, config, context, device):
        return EpochsStep(self, config.train.meta_lr, self.epochs, config.train.meta_batch_size)


def test_a_new_outer_step_is_checkpointed_and_resumes_exactly(tmp_path, capsys):
    sections = {"task": {"family": "test_plugins:LineFamily"},
                "algorithm": {"name": "test_plugins:EpochsKernelRegression", "epochs": 2}}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    path = recipe(tmp_path, "epochs", **sections)
    assert main(["train", path, "--run-dir", str(straight), "--no-progress"]) == 0
    assert main(["train", path, "train.iterations=15", "--run-dir", str(resumed), "--no-progress"]) == 0
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["updates"] == 30
    assert main(["train", "--resume", "--run-dir", str(resumed), "train.iterations=30", "--no-progress"]) == 0
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, resumed))
    assert a["updates"] == b["updates"] == 60
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all("first_epoch_loss" in r for r in rows if r["split"] == "train")
    assert main(["eval", str(resumed), "--no-progress"]) == 0
