"""The command line: happy paths, and every bad input refused in one line with exit status 2."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metadapt.cli import main

ROOT = Path(__file__).parent.parent
TINY = ["train.iterations=40", "train.meta_batch_size=5", "train.val_every=20", "train.val_tasks=10",
        "train.checkpoint_every=20", "eval.tasks=12", "eval.shots=[5]", "eval.queries=10", "eval.steps=3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "maml"
    assert main(["train", str(ROOT / "configs/sinusoid/maml.yaml"), *TINY, "--run-dir", str(path),
                 "--no-progress"]) == 0
    return path


def run_cli(*args, cwd=None):
    """Run the real executable: exit status, and stderr without a traceback."""
    proc = subprocess.run([sys.executable, "-m", "metadapt", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_train_eval_adapt_happy_path(run_dir, tmp_path, capsys):
    assert main(["eval", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5-shot (12 tasks)" in out and "scratch" in out and (run_dir / "report.md").is_file()
    assert main(["eval", str(run_dir), "--no-progress", "--no-scratch"]) == 0
    out = capsys.readouterr().out
    assert "5-shot (12 tasks)" in out and "scratch" not in out

    support = write(tmp_path / "support.csv",
                    "x,y\n" + "".join(f"{x},{2 * torch.sin(torch.tensor(x - 1.0)).item()}\n"
                                      for x in (-4, -2, 0, 1, 3)))
    query = write(tmp_path / "query.csv", "x\n-1\n0.5\n2\n")
    out_csv = tmp_path / "pred.csv"
    assert main(["adapt", str(run_dir), "--support", str(support), "--query", str(query), "--steps", "5",
                 "--output", str(out_csv)]) == 0
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "x,prediction" and len(lines) == 4
    assert "3 predictions written" in capsys.readouterr().out
    assert main(["adapt", str(run_dir), "--support", str(support), "--query", str(support)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("x,y,prediction\n")  # the user's columns, then the predictions
    assert "query MSE:" in captured.err


def test_train_resume_extends_a_run(run_dir, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", "--run-dir", str(copy), "train.iterations=60", "--no-progress"]) == 0
    assert torch.load(copy / "checkpoints/last.pt", weights_only=True)["step"] == 60


def test_errors_from_the_real_executable_are_one_line_with_exit_2(tmp_path):
    for args, message in [
        (["train", str(tmp_path / "nope.yaml")], "not found"),
        (["eval", str(tmp_path / "missing")], "does not exist"),
    ]:
        code, _, err = run_cli(*args, cwd=tmp_path)
        assert code == 2 and message in err, err
        assert "Traceback" not in err and err.strip().count("\n") == 0, err


def test_debug_flag_shows_the_traceback(tmp_path):
    code, _, err = run_cli("--debug", "eval", str(tmp_path / "missing"))
    assert code != 0 and "Traceback" in err
