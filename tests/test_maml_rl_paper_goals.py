"""scripts/maml_rl_paper_goals.py: the paper's 40 goals are the ones its per-goal returns were measured
on, the paired comparison is right on a case worked by hand, and a run is compared end to end."""
import json
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import torch

from metadapt.config import build_config
from metadapt.training import train

SCRIPT = str(Path(__file__).parent.parent / "scripts/maml_rl_paper_goals.py")
spec = spec_from_file_location("maml_rl_paper_goals", SCRIPT)
paper = module_from_spec(spec)
spec.loader.exec_module(paper)


def test_the_seeded_goals_are_the_goals_of_the_published_returns():
    goals, returns = paper.paper_goals(), paper.paper_returns()
    assert goals.shape == (40, 2) and returns.shape == (5, 40)
    published = torch.tensor([-40.41, -11.68, -3.33, -3.23], dtype=torch.float64)
    assert torch.allclose(returns.mean(1)[:4], published, atol=0.005)
    distance = goals.double().norm(dim=1)
    before = returns[0]
    correlation = torch.corrcoef(torch.stack([distance, before]))[0, 1]
    assert correlation < -0.999          # before adaptation the return is set by the goal's distance
    shuffled = torch.corrcoef(torch.stack([distance.flip(0), before]))[0, 1]
    assert shuffled > -0.5               # other goals would not line up


def test_paired_comparison_by_hand():
    ours = torch.tensor([[-1.0, -2.0], [-3.0, -2.0], [-5.0, -5.0]])
    theirs = torch.tensor([[-2.0, -3.0, -4.0], [-2.0, -1.0, -6.0]], dtype=torch.float64)
    rows = paper.compare(ours, theirs)
    assert [r["steps"] for r in rows] == [0, 1]
    assert abs(rows[0]["difference"] - (1 + 0 - 1) / 3) < 1e-12 and abs(rows[0]["paper"] + 3) < 1e-12
    assert abs(rows[1]["difference"] - (0 - 1 + 1) / 3) < 1e-12 and abs(rows[1]["ours"] + 3) < 1e-12
    d = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    assert abs(rows[0]["difference_ci95"] - 4.302653 * d.std() / 3 ** 0.5) < 1e-5   # t_2 at 97.5%


def test_a_run_is_compared_end_to_end_and_other_tasks_are_refused(tmp_path):
    small = ["task.family=navigation-2d", "model.name=gaussian-policy", "model.hidden=[8]",
             "algorithm.name=maml-rl", "algorithm.trajectories=2", "algorithm.eval_trajectories=2",
             "algorithm.eval_steps=1", "train.meta_batch_size=2", "train.val_tasks=2", "train.iterations=1"]
    train(build_config(None, small), tmp_path / "nav", progress=False)
    out = tmp_path / "paper.json"
    args = [str(tmp_path / "nav"), "--repeats", "2", "--out", str(out)]
    done = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    rows = written["rows"]
    assert len(written["per_goal"]) == 40 and len(written["per_goal"][0]) == 2
    assert [r["steps"] for r in rows] == [0, 1] and abs(rows[0]["paper"] + 40.407) < 0.001
    assert all(r["ours"] < 0 and r["difference_ci95"] > 0 for r in rows)
    train(build_config(None, small + ["task.horizon=20"]), tmp_path / "short", progress=False)
    done = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "short")], capture_output=True, text=True)
    assert done.returncode == 2 and "the paper's task" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
