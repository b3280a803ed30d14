"""scripts/sparse_exploration_bound.py: exact inference on the sparse point robot never rules out the
true goal, a straight episode pays as often as the arc it covers, a paid episode is followed by paid
ones, and a sweep finds more than a straight path."""
import math
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import torch


SCRIPT = Path(__file__).parent.parent / "scripts/sparse_exploration_bound.py"
spec = spec_from_file_location("sparse_exploration_bound", SCRIPT)
bound = module_from_spec(spec)
spec.loader.exec_module(bound)


def test_inference_keeps_the_true_goal_and_rules_out_the_arc_a_path_passed():
    env = bound.sparse_tasks(300)
    candidates = torch.linspace(0, math.pi, bound.GRID, dtype=torch.float64)
    truth = torch.atan2(env.goals[:, 1], env.goals[:, 0])
    nearest = (candidates[None] - truth[:, None]).abs().argmin(1)
    explorer = bound.Explorer(env)
    generator = torch.Generator().manual_seed(1)
    possible = torch.ones(env.num_tasks, bound.GRID, dtype=torch.bool)
    unrewarded = torch.zeros(env.num_tasks, dtype=torch.bool)
    for path in [explorer.prior(generator), explorer.prior(generator), explorer.sweep(possible, unrewarded)]:
        possible &= bound.still_possible(env, path, candidates)
        assert possible[torch.arange(env.num_tasks), nearest].all()
    unpaid = ~env.reached(path)
    end = torch.atan2(path[:, -1, 1], path[:, -1, 0])          # the sweep's last point of the arc
    near_end = (candidates[None] - end[:, None]).abs() < 0.15
    assert unpaid.any() and not (possible & near_end)[unpaid].any()


def test_a_uniform_straight_episode_pays_as_often_as_the_arc_it_covers():
    env = bound.sparse_tasks(4000)
    success = bound.play(env, bound.Explorer(env), "sample", 1, 1, torch.Generator().manual_seed(2))
    w = 2 * math.asin(env.goal_radius / 2)                     # the arc within the radius of the path's end
    expected = (2 * w - w ** 2 / math.pi) / math.pi            # ≈ 12.3%, less at the half-circle's ends
    assert abs(success.double().mean() - expected) < 0.02


def test_once_paid_the_best_straight_path_pays_again_and_a_sweep_finds_more():
    env = bound.sparse_tasks(300)
    explorer = bound.Explorer(env)
    best = bound.play(env, explorer, "best", 4, 0, torch.Generator().manual_seed(3))
    assert (best[:, 1:] >= best[:, :-1]).all()
    sweep = bound.play(env, explorer, "sweep", 2, 0, torch.Generator().manual_seed(3))
    assert sweep[:, 0].double().mean() > 2 * best[:, 0].double().mean()
    assert sweep[:, 1].double().mean() > 0.8


def test_bad_arguments_get_one_line_and_exit_2():
    done = subprocess.run([sys.executable, str(SCRIPT), "--tasks", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--tasks" in done.stderr


def test_plot_writes_the_figure(tmp_path, capsys):
    assert bound.main(["--tasks", "20", "--episodes", "2", "--prior-episodes", "1",
                       "--plot", str(tmp_path / "bound.png")]) == 0
    assert (tmp_path / "bound.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figure:" in capsys.readouterr().out


def test_a_plot_path_in_a_missing_folder_is_refused_before_any_work(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--plot", str(tmp_path / "missing" / "b.png")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--plot" in done.stderr
    assert not (tmp_path / "missing").exists()
