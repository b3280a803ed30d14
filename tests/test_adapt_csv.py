"""`metadapt adapt` reads CSV tasks as users write them: header names in any order, several input
and output columns, the user's columns written beside the predictions, the evaluation's steps."""
from pathlib import Path

import pytest
import torch

import metadapt
from metadapt.cli import main
from metadapt.config import build_config
from metadapt.tasks import TaskBatch

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
TINY = ["train.iterations=20", "train.meta_batch_size=4", "train.val_every=10", "train.val_tasks=8",
        "train.checkpoint_every=10", "model.hidden=[8]", "eval.steps=3"]


class Planes:
    """Tasks y = W x + b with x ∈ R², y ∈ R³ (W, b per task)."""

    def sample(self, n, generator):
        w = torch.randn(n, 3, 2, generator=generator)
        b = torch.randn(n, 1, 3, generator=generator)
        x = torch.randn(n, 12, 2, generator=generator)
        y = x @ w.transpose(1, 2) + b
        return TaskBatch(x[:, :6], y[:, :6], x[:, 6:], y[:, 6:])


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("adapt") / "sine"
    assert main(["train", RECIPE, *TINY, "--run-dir", str(run), "--no-progress"]) == 0
    return run


def write(path, text):
    path.write_text(text)
    return str(path)


def predictions(capsys):
    lines = capsys.readouterr().out.splitlines()
    return lines[0].split(","), [[float(c) for c in line.split(",")] for line in lines[1:]]


def test_header_names_in_any_order_are_honoured(sine_run, tmp_path, capsys):
    rows = [(-2.0, 0.5), (-1.0, 1.5), (0.5, -0.3), (2.0, 0.8)]
    xy = write(tmp_path / "xy.csv", "x,y\n" + "".join(f"{x},{y}\n" for x, y in rows))
    yx = write(tmp_path / "yx.csv", "y,x\n" + "".join(f"{y},{x}\n" for x, y in rows))
    query = write(tmp_path / "q.csv", "x\n0\n1\n")
    assert main(["adapt", str(sine_run), "--support", xy, "--query", query]) == 0
    expected = predictions(capsys)
    assert main(["adapt", str(sine_run), "--support", yx, "--query", query]) == 0
    assert predictions(capsys) == expected


def test_the_users_columns_are_kept_and_steps_default_to_evaluations(sine_run, tmp_path, capsys):
    support = write(tmp_path / "s.csv", "x,y\n-2,0.5\n-1,1.5\n0.5,-0.3\n2,0.8\n")
    query = write(tmp_path / "q.csv", "id,x,y\n7,0,0.1\n8,1,0.9\n")
    assert main(["adapt", str(sine_run), "--support", support, "--query", query]) == 0
    out = capsys.readouterr()
    header, rows = out.out.splitlines()[0].split(","), out.out.splitlines()[1:]
    assert header == ["id", "x", "y", "prediction"] and rows[0].startswith("7,0,0.1,")
    assert "query MSE" in out.err
    run = metadapt.load(sine_run)
    x, y = torch.tensor([[-2.0], [-1.0], [0.5], [2.0]]), torch.tensor([[0.5], [1.5], [-0.3], [0.8]])
    adapted = run.adapt(x, y, steps=3)  # the run's eval.steps
    assert abs(adapted.predict(torch.tensor([[0.0]])).item() - float(rows[0].split(",")[-1])) < 1e-5


def test_several_inputs_and_outputs(tmp_path, capsys):
    config = build_config(None, ["train.iterations=10", "train.meta_batch_size=4", "train.val_tasks=4",
                                 "train.val_every=5", "model.hidden=[8]", "eval.steps=2"])
    metadapt.train(config, tmp_path / "run", progress=False, tasks=Planes())
    support = write(tmp_path / "s.csv", "y3,x1,y1,x2,y2\n" + "".join(
        f"{i},{i * 0.1},{-i},{i * 0.2},{2 * i}\n" for i in range(6)))
    query = write(tmp_path / "q.csv", "x1,x2\n0.1,0.2\n0.3,-0.4\n")
    assert main(["adapt", str(tmp_path / "run"), "--support", support, "--query", query]) == 0
    header, rows = predictions(capsys)
    assert header == ["x1", "x2", "prediction1", "prediction2", "prediction3"] and len(rows) == 2
    assert main(["adapt", str(tmp_path / "run"), "--support", support, "--query",
                 write(tmp_path / "bad.csv", "x1,x3\n1,2\n")]) == 2
    assert "it needs x1, x2 (this run takes 2 input(s) and predicts 3 value(s))" in capsys.readouterr().err
