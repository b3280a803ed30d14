"""scripts/average_checkpoints.py: the averaged checkpoint holds the mean of the kept checkpoints'
weights, evaluates like any other, and bad input is one line with exit 2 and nothing written."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from metadapt.config import build_config
from metadapt.training import load, train
from metadapt.training.checkpoint import load_checkpoint

ROOT = Path(__file__).parent.parent
SCRIPT = str(ROOT / "scripts/average_checkpoints.py")
SMALL = ["task.family=navigation-2d", "task.horizon=15", "model.name=gaussian-policy",
         "model.hidden=[16, 16]", "algorithm.name=maml-rl", "algorithm.trajectories=4",
         "train.meta_batch_size=4", "train.val_tasks=4", "train.val_every=2", "train.checkpoint_every=2",
         "train.keep_checkpoints=5", "train.log_every=1", "train.iterations=6", "eval.tasks=6"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def test_the_average_is_the_mean_of_the_weights_and_evaluates(tmp_path, capsys):
    from metadapt.cli import main

    train(build_config(None, SMALL), tmp_path / "nav", progress=False)
    out = tmp_path / "nav" / "averaged.pt"
    done = run(str(tmp_path / "nav"), "step-2", "step-4", "step-6", "--out", str(out))
    assert done.returncode == 0, done.stderr
    kept = ("step-2", "step-4", "step-6")
    states = [load(tmp_path / "nav", which).algorithm.state_dict() for which in kept]
    averaged = load(tmp_path / "nav", str(out)).algorithm.state_dict()
    moved = 0
    for key, value in averaged.items():
        if value.is_floating_point():
            assert torch.allclose(value, (states[0][key] + states[1][key] + states[2][key]) / 3, atol=1e-6)
            moved += not torch.equal(value, states[2][key])
        else:
            assert torch.equal(value, states[2][key])
    assert moved > 0                          # training moved the weights, so the mean differs from each
    assert load_checkpoint(out)["averaged_from"] == ["step-2", "step-4", "step-6"]
    assert main(["eval", str(tmp_path / "nav"), "--checkpoint", str(out), "--no-progress",
                 "--no-scratch"]) == 0
    results = json.loads((tmp_path / "nav" / "eval" / "results.json").read_text())
    assert len(results["methods"]["maml-rl"]["curve"]) == 4


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    train(build_config(None, SMALL), tmp_path / "nav", progress=False)
    other = SMALL[:3] + ["model.hidden=[8]"] + SMALL[4:]
    train(build_config(None, other), tmp_path / "other", progress=False)
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"keep me")
    foreign = str(tmp_path / "other" / "checkpoints" / "step-00000004.pt")
    cases = (([str(tmp_path / "nav"), "step-2"], "at least two"),
             ([str(tmp_path / "nav"), "step-2", "step-3"], "not found"),
             ([str(tmp_path / "nav"), "step-2", foreign], "does not match"),
             ([str(tmp_path), "step-2", "step-4"], "not a run directory"))
    for args, message in cases:
        done = run(*args, "--out", str(tmp_path / "avg.pt"))
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "avg.pt").exists()
    done = run(str(tmp_path / "nav"), "step-2", "step-4", "--out", str(existing))
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert existing.read_bytes() == b"keep me"


def test_every_checkpoint_must_hold_the_same_state():
    import importlib.util

    import pytest

    from metadapt.errors import UserError

    spec = importlib.util.spec_from_file_location("average_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    payload = lambda **state: {"algorithm": "maml-rl", "state": state}  # noqa: E731
    w = torch.ones(2)
    averaged = module.average_states([payload(w=w), payload(w=3 * w)], ["a", "b"])
    assert torch.equal(averaged["state"]["w"], 2 * w)
    with pytest.raises(UserError, match="'middle' and 'last' hold different state"):
        module.average_states([payload(w=w), payload(w=w, extra=w), payload(w=w)],
                              ["first", "middle", "last"])
