"""scripts/pearl_inference_bound.py: exact goal inference from a path's dense rewards — a bent path pins
the goal, a straight one leaves its mirror image equally likely — and a one-line error for other runs."""
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import torch

SCRIPT = Path(__file__).parent.parent / "scripts/pearl_inference_bound.py"
spec = spec_from_file_location("pearl_inference_bound", SCRIPT)
bound = module_from_spec(spec)
spec.loader.exec_module(bound)


def rewards_along(path: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    return -(path - goal).norm(dim=-1)


def test_a_bent_path_pins_the_goal_and_a_straight_one_leaves_its_mirror_image():
    goal = torch.tensor([0.3, 0.5], dtype=torch.float64)
    straight = torch.stack([torch.linspace(-0.8, 0.8, 17), torch.zeros(17)], -1).double()  # along y = 0
    bent = torch.cat([straight[:9], torch.stack([torch.zeros(8), torch.linspace(0.1, 0.8, 8)], -1)])
    mean = bound.goal_posterior_mean(bent[None], rewards_along(bent, goal)[None], noise=0.001)[0]
    assert torch.allclose(mean, goal, atol=0.02)
    mean = bound.goal_posterior_mean(straight[None], rewards_along(straight, goal)[None], noise=0.001)[0]
    assert abs(mean[0] - 0.3) < 0.02 and abs(mean[1]) < 0.02          # halfway between (0.3, ±0.5)


def test_full_speed_return_is_the_point_robots_oracle():
    from metadapt.envs.point_robot import PointRobot

    goals = torch.tensor([[0.5, -0.2], [-0.9, 0.9]], dtype=torch.float64)
    env = PointRobot(horizon=20, goals=goals, random_start=False)
    starts = torch.zeros(2, 2, dtype=torch.float64)
    assert torch.allclose(bound.full_speed_return(env, starts, goals), env.oracle_return())
    random = bound.random_return(env, torch.Generator().manual_seed(0))
    assert bool((random < env.oracle_return()).all())


def test_a_run_that_is_not_pearl_on_the_point_robot_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing")], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "error" in done.stderr
