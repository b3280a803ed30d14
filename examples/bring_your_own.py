"""Bring your own tasks, model and loss: a task family of lines ``y = a·x + b`` meta-trained with
MAML, from the command line and from Python.

From the repository root, the recipe ``examples/lines.yaml`` names the family by import path:

    metadapt train examples/lines.yaml
    metadapt eval runs/lines            # report.md about lines, beside training from scratch

From Python, any model, loss and task family (or plain task source) can be passed directly:

    python examples/bring_your_own.py [meta-iterations]
"""
import sys
from dataclasses import dataclass

import torch
from torch import nn

import metadapt
from metadapt.options import option
from metadapt.tasks import TaskBatch, TaskFamily


class LineTasks:
    """A task source: anything with ``sample(num_tasks, generator) -> TaskBatch``. Every random
    draw comes from the generator the trainer owns, so runs reproduce and resume exactly."""

    def __init__(self, shots: int = 5, queries: int = 20, slope: float = 3.0):
        self.shots, self.queries, self.slope = shots, queries, slope

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        slope = torch.empty(num_tasks, 1, 1).uniform_(-self.slope, self.slope, generator=generator)
        intercept = torch.empty(num_tasks, 1, 1).uniform_(-2, 2, generator=generator)
        x = torch.empty(num_tasks, self.shots + self.queries, 1).uniform_(-1, 1, generator=generator)
        y = slope * x + intercept
        s = self.shots
        return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:])


@dataclass
class LineOptions:
    """The keys of the recipe's ``task:`` section for this family."""

    shots: int = option(5, positive=True, help="support points per task in meta-training")
    queries: int = option(20, positive=True, help="query points per task in meta-training")
    slope: float = option(3.0, positive=True, help="slopes are drawn from U[-slope, slope]")


class LineFamily(TaskFamily):
    """A task family: the train / validation / test sources from its options, and the report's
    lines. Input and output are one number each; the loss is MSE (the family default)."""

    Options = LineOptions
    input_shape, outputs = (1,), 1

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> LineTasks:
        o = self.options
        return LineTasks(shots or o.shots, queries or o.queries, o.slope)

    def describe(self) -> list[str]:
        o = self.options
        return [f"- Tasks: lines y = a·x + b with a ~ U[-{o.slope}, {o.slope}], b ~ U[-2, 2], x ~ U[-1, 1]; "
                f"{o.shots} support + {o.queries} query points per task in training."]


def main(iterations: int = 2000, run_dir: str = "runs/lines-python") -> None:
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))   # any nn.Module
    config = metadapt.build_config({"name": "lines-python", "algorithm": {"name": "maml", "inner_lr": 0.1}}, [
        f"train.iterations={iterations}", "train.meta_batch_size=16",
        f"train.val_every={max(1, iterations // 4)}",
        f"train.checkpoint_every={iterations}", "eval.tasks=200", "eval.shots=[5]", "eval.steps=5"])
    metadapt.train(config, run_dir, overwrite=True, progress=False, model=model, loss=nn.functional.mse_loss,
                   tasks=LineFamily())

    # the model object must be given again (the run recorded its class, not how to build it)
    run = metadapt.load(run_dir, model=nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1)),
                        tasks=LineFamily())
    new_task = LineTasks().sample(1, torch.Generator().manual_seed(123))
    adapted = run.adapt(new_task.support_x[0], new_task.support_y[0], steps=5)
    for k in (0, 1, 5):
        mse = nn.functional.mse_loss(adapted.predict(new_task.query_x[0], step=k), new_task.query_y[0])
        print(f"new task, {k} adaptation step(s): query MSE {mse:.4f}")
    results = metadapt.evaluate_run(run, progress=False)
    curve = results["settings"]["5-shot"]["methods"]
    print("200 test tasks, 5-shot, query MSE after 0 / 1 / 5 steps:")
    for name, m in curve.items():
        print(f"  {name:8s} " + " / ".join(f"{m['mean'][k]:.3f}" for k in (0, 1, 5)))
    print(f"report: {run_dir}/report.md")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
