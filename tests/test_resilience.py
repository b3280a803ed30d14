"""Killed, interrupted, numerically faulty and multi-process runs end where they should."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metadapt.config import build_config
from metadapt.training import load, train
from metadapt.training.trainer import NonFiniteError

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
SETTINGS = ["train.iterations=400", "train.meta_batch_size=6", "train.val_every=50", "train.val_tasks=10",
            "train.checkpoint_every=50", "train.log_every=10", "model.hidden=[16, 16]", "train.threads=1"]


def final_state(run_dir):
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True)


def same(a, b):
    return a["step"] == b["step"] and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "run"
    train(build_config(build_config().to_dict() | {}, SETTINGS), path, progress=False)
    return final_state(path)


def logged_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(l)["step"] for l in lines if l.strip()), default=0)
    except (FileNotFoundError, ValueError):
        return 0


def start(run_dir, env=None, script=None):
    cmd = [sys.executable, script or "-m", *([] if script else ["metadapt"]), "train", RECIPE, *SETTINGS,
           "--run-dir", str(run_dir), "--no-progress"]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def resume(run_dir):
    proc = subprocess.run([sys.executable, "-m", "metadapt", "train", "--resume", "--run-dir", str(run_dir),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kill_after_step", [0, 120, 330])
def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path, reference, kill_after_step):
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    deadline = time.time() + 120
    while logged_step(run_dir) < kill_after_step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if kill_after_step == 0:
        while not (run_dir / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert logged_step(run_dir) < 400, "the run finished before it could be killed"
    resume(run_dir)
    assert same(final_state(run_dir), reference)


@pytest.mark.parametrize("kill_at_save", [1, 4])
def test_sigkill_during_a_checkpoint_write_keeps_the_last_good_one(tmp_path, reference, kill_at_save):
    run_dir = tmp_path / "run"
    proc = start(run_dir, env={"KILL_AT_SAVE": str(kill_at_save)},
                 script=str(ROOT / "tests/killable_train.py"))
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert list((run_dir / "checkpoints").glob(".*.tmp")), "the torn temporary file should be there"
    if (run_dir / "checkpoints/last.pt").exists():
        torch.load(run_dir / "checkpoints/last.pt", weights_only=True)  # never torn
    resume(run_dir)
    assert same(final_state(run_dir), reference)
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_and_say_how_to_resume(tmp_path, reference, signum):
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    while logged_step(run_dir) < 100 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    step = final_state(run_dir)["step"]
    assert 100 <= step < 400
    assert f"{signal.Signals(signum).name} received: saved a checkpoint at step {step}; " \
           f"resume with: metadapt train --resume --run-dir {run_dir}" in err
    resume(run_dir)
    assert same(final_state(run_dir), reference)


class PoisonedTasks:
    """The recipe's sinusoids, with a NaN in the meta-batch of one chosen step."""

    def __init__(self, inner, poisoned_call):
        self.inner, self.calls, self.poisoned_call = inner, 0, poisoned_call

    def sample(self, n, generator):
        batch = self.inner.sample(n, generator)
        if n == 6:  # training meta-batches, not the validation set
            self.calls += 1
            if self.calls == self.poisoned_call:
                batch.support_y[0, 0, 0] = float("nan")
        return batch


def test_nan_stops_the_run_and_the_last_good_checkpoint_loads(tmp_path):
    from metadapt.tasks import SinusoidTasks
    config = build_config(None, SETTINGS)
    with pytest.raises(NonFiniteError, match=r"non-finite meta-loss or meta-gradient at step 73 "
                                             r".*last good checkpoint is kept \(step 50\)"):
        train(config, tmp_path / "run", progress=False, tasks=PoisonedTasks(SinusoidTasks(), 73))
    state = final_state(tmp_path / "run")
    assert state["step"] == 50 and all(torch.isfinite(v).all() for v in state["state"].values())
    load(tmp_path / "run", "last")


def test_nan_step_is_skipped_when_asked(tmp_path):
    from metadapt.tasks import SinusoidTasks
    config = build_config(None, SETTINGS + ["train.iterations=100", "train.on_nonfinite=skip"])
    summary = train(config, tmp_path / "run", progress=False, tasks=PoisonedTasks(SinusoidTasks(), 30))
    assert summary["skipped_steps"] == 1 and summary["steps"] == 100
    assert all(torch.isfinite(v).all() for v in final_state(tmp_path / "run")["state"].values())
    logged = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert {"step": 30, "split": "train", "skipped": "non-finite"} in logged


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_two_processes_under_torchrun_match_one(tmp_path, algorithm):
    settings = ([s for s in SETTINGS if not s.startswith("train.iterations")]
                + ["train.iterations=20", f"algorithm.name={algorithm}"])
    one = tmp_path / "one"
    train(build_config(None, settings), one, progress=False)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "metadapt", "train", RECIPE, *settings, "--run-dir", str(two), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = final_state(one), final_state(two)
    assert a["step"] == b["step"] == 20
    diff = max((a["state"][k] - b["state"][k]).abs().max().item() for k in a["state"])
    assert diff <= 1e-6
    # rank 0 alone reports
    assert proc.stdout.count("trained maml") + proc.stdout.count("trained reptile") == 1


@pytest.mark.parametrize("algorithm", ["protonet", "maml"])
def test_gradient_shards_make_two_processes_bit_identical_to_one(tmp_path, algorithm):
    # With train.grad_shards fixed, the meta-gradient is the same sum in the same order whatever
    # the number of processes, so even Adam (which magnifies roundoff on parameters whose true
    # gradient is zero, e.g. a BatchNorm shift that ProtoNet's distances ignore) ends bit-identical.
    script = str(ROOT / "tests/train_synthetic_episodes.py")
    settings = (["train.iterations=6", "train.meta_batch_size=4", "train.val_every=3",
                 "train.checkpoint_every=3", f"algorithm.name={algorithm}", "train.grad_shards=2"]
                + (["algorithm.inner_lr=0.4"] if algorithm == "maml" else []))
    one = subprocess.run([sys.executable, script, str(tmp_path / "one"), *settings], capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          script, str(tmp_path / "two"), *settings],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


RL_SMALL = {
    "rl2": [str(ROOT / "configs/rl/rl2-bandits-n10-k5.yaml"), "task.pulls=6", "model.hidden=16",
            "algorithm.minibatches=2"],
    "maml-rl": [str(ROOT / "configs/rl/maml-rl-navigation.yaml"), "task.horizon=10", "model.hidden=[8, 8]",
                "algorithm.trajectories=3"],
    "maml-rl-ppo": [str(ROOT / "configs/rl/maml-rl-navigation.yaml"), "task.horizon=10",
                    "model.hidden=[8, 8]", "algorithm.trajectories=3", "algorithm.outer=ppo",
                    "algorithm.ppo_epochs=2"],
}


@pytest.mark.parametrize("variant", list(RL_SMALL))
def test_rl_outer_steps_are_data_parallel_under_torchrun(tmp_path, variant):
    # each process plays its slice of the meta-batch; the processes must hold the same parameters at
    # every checkpoint (the trainer checks it and stops otherwise), and a rerun is the same run
    settings = RL_SMALL[variant] + ["train.iterations=4", "train.meta_batch_size=6", "train.val_every=2",
                                    "train.val_tasks=4", "train.checkpoint_every=2", "train.log_every=1",
                                    "train.threads=1"]
    runs = ["a", "b"] if variant == "rl2" else ["a"]
    for name in runs:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node=2", "-m", "metadapt", "train", *settings,
                               "--run-dir", str(tmp_path / name), "--no-progress"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # a native abort shows where
        # on failure, say how far the run got: a crash after summary.json is in the processes' teardown
        finished = (tmp_path / name / "summary.json").exists()
        assert proc.returncode == 0, (f"summary.json written: {finished}\n{proc.stdout[-1500:]}\n"
                                      f"{proc.stderr[-3000:]}")
    a = final_state(tmp_path / "a")
    assert a["step"] == 4
    logged = [json.loads(line) for line in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in logged if row["split"] == "train"]
    assert len(train_rows) == 4 and all(math.isfinite(row["return"]) for row in train_rows)
    if variant == "rl2":  # env steps are the sum over both processes: 6 trials of 6 pulls
        assert train_rows[0]["env_steps"] == 36
        b = final_state(tmp_path / "b")
        assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
