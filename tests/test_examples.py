import importlib
from pathlib import Path

from metadapt.cli import main

ROOT = Path(__file__).parent.parent


def test_bring_your_own_example_runs_and_adapts(capsys, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    module = importlib.import_module("examples.bring_your_own")
    module.main(300, str(tmp_path / "run"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("new task")]
    mse = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert len(mse) == 3 and mse[2] < mse[0]
    assert "lines y = a·x + b" in (tmp_path / "run" / "report.md").read_text()


def test_the_example_family_runs_through_train_and_eval_by_import_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the recipe names examples.bring_your_own:LineFamily, importable from the root
    run = tmp_path / "lines"
    tiny = ["train.iterations=60", "train.val_every=30", "train.checkpoint_every=30", "eval.tasks=20"]
    assert main(["train", "examples/lines.yaml", *tiny, "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5-shot (20 tasks)" in out and "scratch" in out
    report = (run / "report.md").read_text()
    assert report.startswith("# lines: maml on examples.bring_your_own:LineFamily")
    assert "lines y = a·x + b" in report and "sinusoid" not in report
