"""scripts/maml_rl_step_sizes.py: schedules are ranked by the return after the last step, each
schedule's returns are the run's adaptation_returns with those sizes on the chosen tasks, and the test
tasks' seed and bad schedules are refused with one line and exit 2."""
import json
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import torch

from metadapt.config import build_config
from metadapt.training import load, train

SCRIPT = str(Path(__file__).parent.parent / "scripts/maml_rl_step_sizes.py")
spec = spec_from_file_location("maml_rl_step_sizes", SCRIPT)
module = module_from_spec(spec)
spec.loader.exec_module(module)
SMALL = ["task.family=navigation-2d", "task.horizon=15", "model.name=gaussian-policy", "model.hidden=[8]",
         "algorithm.name=maml-rl", "algorithm.trajectories=3", "algorithm.eval_trajectories=3",
         "train.meta_batch_size=2", "train.val_tasks=2", "train.iterations=2"]


def test_ranking_by_the_mean_return_over_the_adapted_steps_and_runs():
    table = {"a": [[-9.0, -5.0, -3.0]], "b": [[-9.0, -4.0, -3.0]], "c": [[0.0, -4.0, -4.5]]}
    assert module.rank(table) == ["b", "a", "c"]     # −3.5, −4, −4.25: the return before steps counts not
    two_runs = {"a": [[0.0, -2.0], [0.0, -4.0]], "b": [[0.0, -1.0], [0.0, -6.0]]}
    assert module.rank(two_runs) == ["a", "b"]        # the mean over runs decides: −3 against −3.5


def test_returns_are_the_runs_adaptation_with_each_schedule(tmp_path):
    train(build_config(None, SMALL), tmp_path / "nav", progress=False)
    out = tmp_path / "sizes.json"
    done = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "nav"), "--schedules", "0.5,0.25",
                           "0.5,0.1", "--goals", "6", "--seed", "7", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    assert set(written["returns"]) == {"0.5,0.25", "0.5,0.1"} and len(written["ranking"]) == 2
    run = load(tmp_path / "nav")
    env = run.family.sample(6, torch.Generator().manual_seed(7))
    run.algorithm.eval_lrs = [0.5, 0.1]
    returns, _ = run.algorithm.adaptation_returns(env, 2, torch.Generator().manual_seed(module.STREAM))
    assert torch.allclose(returns.mean(0).double(), torch.tensor(written["returns"]["0.5,0.1"][0],
                                                                 dtype=torch.float64), atol=1e-5)
    first = written["returns"]["0.5,0.25"][0]
    assert first[:2] == written["returns"]["0.5,0.1"][0][:2]   # the same stream until the sizes differ


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    train(build_config(None, SMALL), tmp_path / "nav", progress=False)
    eval_seed = load(tmp_path / "nav").config.eval.seed
    cases = ((["--schedules", "0.5,x"], "commas"),
             (["--schedules", "0.5,-1"], "(0, 100)"),
             (["--schedules", "0.5,0.25", "0.5"], "same number"),
             (["--schedules", "0.5", "--seed", str(eval_seed)], "eval.seed"),
             (["--schedules", "0.5", "--goals", "1"], "--goals"))
    for args, message in cases:
        done = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "nav"), *args], capture_output=True,
                              text=True)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
