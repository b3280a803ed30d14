"""The command line: happy paths, and every bad input refused in one line with exit status 2."""
import os
import pickle
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
    assert main(["train", str(ROOT / "configs/sinusoid/maml.yaml"), *TINY, "--run-dir", str(path), "--no-progress"]) == 0
    return path


def run_cli(*args, cwd=None):
    """Run the real executable: exit status, and stderr without a traceback."""
    proc = subprocess.run([sys.executable, "-m", "metadapt", *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_train_eval_adapt_happy_path(run_dir, tmp_path, capsys):
    assert main(["eval", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5-shot (12 tasks)" in out and "scratch" in out and (run_dir / "report.md").is_file()

    support = write(tmp_path / "support.csv", "x,y\n" + "".join(f"{x},{2 * torch.sin(torch.tensor(x - 1.0)).item()}\n" for x in (-4, -2, 0, 1, 3)))
    query = write(tmp_path / "query.csv", "x\n-1\n0.5\n2\n")
    out_csv = tmp_path / "pred.csv"
    assert main(["adapt", str(run_dir), "--support", str(support), "--query", str(query), "--steps", "5", "--output", str(out_csv)]) == 0
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "x,prediction" and len(lines) == 4
    assert "3 predictions written" in capsys.readouterr().out
    assert main(["adapt", str(run_dir), "--support", str(support), "--query", str(support)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("x,prediction\n") and "query MSE:" in captured.err


def test_train_resume_extends_a_run(run_dir, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", "--run-dir", str(copy), "train.iterations=60", "--no-progress"]) == 0
    assert torch.load(copy / "checkpoints/last.pt", weights_only=True)["step"] == 60


BAD_CSV = {
    "wrong columns": ("1,2,3\n4,5,6\n", "line 1 has 3 columns; expected 2"),
    "non-numeric": ("x,y\n1,2\n3,abc\n", "line 3 has a non-numeric cell 'abc'"),
    "nan": ("1,2\n3,nan\n", "line 2 has a non-finite value 'nan'"),
    "empty": ("", "is empty"),
    "ragged": ("1,2\n3\n", "line 2 has 1 columns"),
}


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_bad_support_csv(run_dir, tmp_path, case, capsys):
    text, message = BAD_CSV[case]
    support = write(tmp_path / "s.csv", text)
    query = write(tmp_path / "q.csv", "0\n1\n")
    assert main(["adapt", str(run_dir), "--support", str(support), "--query", str(query)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_cli_inputs_each_get_one_line_and_exit_2(run_dir, tmp_path):
    recipe = write(tmp_path / "typo.yaml", "train:\n  iteratons: 10\n")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (corrupt / "checkpoints").mkdir()
    good = (run_dir / "checkpoints/last.pt").read_bytes()
    (corrupt / "checkpoints/last.pt").write_bytes(good[: len(good) // 2])
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    cases = [
        (["train", str(recipe)], "unknown config key 'train.iteratons'; did you mean train.iterations?"),
        (["train", str(ROOT / "configs/sinusoid/maml.yaml"), "algorithm.inner_lr=-1"], "algorithm.inner_lr must be positive"),
        (["train", str(tmp_path / "nope.yaml")], "not found"),
        (["eval", str(tmp_path / "missing")], "does not exist"),
        (["eval", str(not_a_run)], "is not a metadapt run (no config.yaml)"),
        (["eval", str(corrupt)], "is corrupt or truncated"),
        (["adapt", str(run_dir), "--support", str(tmp_path / "none.csv"), "--query", str(recipe)], "support file"),
    ]
    for args, message in cases:
        code, out, err = run_cli(*args, cwd=tmp_path)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert "Traceback" not in err and err.strip().count("\n") == 0, err


def test_debug_flag_shows_the_traceback(tmp_path):
    code, _, err = run_cli("--debug", "eval", str(tmp_path / "missing"))
    assert code != 0 and "Traceback" in err


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = None


def test_malicious_checkpoint_is_refused_without_running_it(run_dir, tmp_path):
    global MARKER
    MARKER = tmp_path / "pwned"
    evil = tmp_path / "evil"
    (evil / "checkpoints").mkdir(parents=True)
    (evil / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    torch.save({"state": Payload()}, evil / "checkpoints/last.pt", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    code, _, err = run_cli("eval", str(evil))
    assert code == 2 and "refusing to load it" in err
    assert not MARKER.exists()


def test_checkpoint_from_another_model_is_refused(run_dir, tmp_path):
    other = tmp_path / "other"
    assert main(["train", str(ROOT / "configs/sinusoid/maml.yaml"), *TINY, "model.hidden=[8]", "--run-dir", str(other), "--no-progress"]) == 0
    (other / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    code, _, err = run_cli("eval", str(other))
    assert code == 2 and "does not match this run's algorithm and model" in err
