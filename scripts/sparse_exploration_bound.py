"""How often any agent can find the sparse point robot's goal, given the paths it explores with.

    python scripts/sparse_exploration_bound.py [--tasks 1000] [--episodes 7] [--prior-episodes 5] [--plot PNG]

The sparse point robot (PEARL, Rakelly et al. 2019) hides its goal ``g = (cos φ, sin φ)``,
``φ ~ U[0, π]``, and pays only within 0.2 of it; episodes start at the origin. Each strategy below
plays trials with *exact* Bayesian inference, which no encoder can beat: the environment is
deterministic, so the posterior over φ (a grid of ``GRID`` angles) is uniform over the angles whose
rewards along every path so far match the observed ones — a path without reward rules out the arc it
passed near, a reward pins the goal down.

* PEARL's test: the first ``--prior-episodes`` episodes move straight at full speed to a point of the
  arc drawn uniformly (what an episode with z from the prior does in a trained PEARL run), the later
  ones straight to an angle drawn from the posterior (posterior sampling);
* the same prior episodes, then the *best* straight path: at the arc point whose reach holds the most
  posterior mass (this episode's best chance);
* the best straight path from the first episode on (no prior episodes);
* sweeps: each episode meets the arc just past the lowest angle still possible and follows it
  counter-clockwise at full speed for the rest of its steps — until a reward pins the goal.

Prints, for each strategy, the share of trials whose k-th episode comes within the goal radius
(``--plot``: also draws it against k).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

GRID = 3601           # candidate goal angles on [0, π]: 0.00087 rad apart
TOLERANCE = 2e-3      # distances that differ by less cannot be told apart on the grid
TARGETS = 721         # arc points a straight path may aim at
ENTRY = 0.95          # a sweep meets the arc this many goal radii past the lowest angle still possible


def arc_point(angle: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` points of the unit circle at ``angle [...]``."""
    return torch.stack([angle.cos(), angle.sin()], -1)


def straight_path(env, angle: torch.Tensor) -> torch.Tensor:
    """``[T, H, 2]`` positions of moving from the origin toward the arc point at ``angle [T]`` at full
    speed (each coordinate's step clipped as the robot's actions are)."""
    state, _ = env.reset(1, None)
    return env.full_speed_path(state, arc_point(angle)[:, None, :])[0][:, 0]


def sweep_path(env, angle: torch.Tensor) -> torch.Tensor:
    """``[T, H, 2]`` positions of moving to the arc point at ``angle [T]``, then along the arc
    counter-clockwise, one chord of ``max_speed`` per step, up to angle π."""
    state, _ = env.reset(1, None)
    angle = angle.clone()
    chord = 2 * math.asin(env.max_speed / 2)
    positions = []
    for _ in range(env.horizon):
        on_arc = (state["x"][:, 0] - arc_point(angle)).norm(dim=-1) < 1e-9
        angle = torch.where(on_arc, (angle + chord).clamp(max=math.pi), angle)
        target = arc_point(angle)[:, None, :]
        state, x, _, _ = env.step(state, (target - state["x"]) / env.max_speed, None)
        positions.append(x[:, 0])
    return torch.stack(positions, 1)


def still_possible(env, positions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[T, G]``: whether a goal at each of ``candidates [G]`` (angles) would have paid what the true
    goal paid along ``positions [T, H, 2]`` — the same distance where it paid, none where it did not."""
    observed = (positions - env.goals[:, None, :]).norm(dim=-1)                       # [T, H]
    paid = observed <= env.goal_radius
    goals = arc_point(candidates)                                                    # [G, 2]
    result = []
    for chunk in range(0, len(positions), 50):
        p, d, w = positions[chunk:chunk + 50], observed[chunk:chunk + 50], paid[chunk:chunk + 50]
        distance = (p[:, None, :, :] - goals[None, :, None, :]).norm(dim=-1)          # [t, G, H]
        agrees = torch.where(w[:, None, :], (distance - d[:, None, :]).abs() <= TOLERANCE,
                             distance > env.goal_radius - TOLERANCE)
        result.append(agrees.all(-1))
    return torch.cat(result)


def reach(env, paths: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[P, G]``: whether each of ``paths [P, H, 2]`` comes within the goal radius of a goal at each of
    ``candidates [G]``."""
    goals = arc_point(candidates)
    return torch.cat([((p[:, None, :, :] - goals[None, :, None, :]).norm(dim=-1) <= env.goal_radius).any(-1)
                      for p in paths.split(50)])


class Explorer:
    """The paths of the strategies; straight paths and sweeps start at the origin, so each is a function
    of its target angle alone."""

    def __init__(self, env):
        self.env = env
        self.candidates = torch.linspace(0, math.pi, GRID, dtype=env.goals.dtype)
        self.targets = torch.linspace(0, math.pi, TARGETS, dtype=env.goals.dtype)
        one = type(env)(horizon=env.horizon, goals=env.goals[:1].expand(TARGETS, 2), random_start=False)
        self.target_reach = reach(env, straight_path(one, self.targets), self.candidates).double()

    def best(self, possible: torch.Tensor) -> torch.Tensor:
        """``[T, H, 2]``: the straight path most likely to pay under a uniform posterior on ``possible``."""
        score = possible.double() @ self.target_reach.T
        return straight_path(self.env, self.targets[score.argmax(1)])

    def sample(self, possible: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Posterior sampling: straight at an angle drawn uniformly from those still possible."""
        return straight_path(self.env, self.candidates[torch.multinomial(possible.double(), 1,
                                                                         generator=generator)[:, 0]])

    def prior(self, generator: torch.Generator) -> torch.Tensor:
        """Straight at a uniformly drawn point of the arc."""
        angle = math.pi * torch.rand(self.env.num_tasks, generator=generator, dtype=self.env.goals.dtype)
        return straight_path(self.env, angle)

    def sweep(self, possible: torch.Tensor, rewarded: torch.Tensor) -> torch.Tensor:
        """Along the arc from just past the lowest angle still possible; the best straight path once a
        reward has been seen."""
        lowest = self.candidates[possible.double().argmax(1)]
        path = sweep_path(self.env, (lowest + ENTRY * self.env.goal_radius).clamp(max=math.pi))
        return torch.where(rewarded[:, None, None], self.best(possible), path)


def play(env, explorer: Explorer, strategy: str, episodes: int, prior_episodes: int,
         generator: torch.Generator) -> torch.Tensor:
    """``[T, episodes]`` whether each episode of a trial comes within the goal radius. ``strategy``:
    ``sample`` or ``best`` after ``prior_episodes`` uniform ones, or ``sweep``."""
    possible = torch.ones(env.num_tasks, GRID, dtype=torch.bool)
    rewarded = torch.zeros(env.num_tasks, dtype=torch.bool)
    success = []
    for k in range(episodes):
        if strategy == "sweep":
            path = explorer.sweep(possible, rewarded)
        elif k < prior_episodes:
            path = explorer.prior(generator)
        elif strategy == "sample":
            path = explorer.sample(possible, generator)
        else:
            path = explorer.best(possible)
        reached = env.reached(path)
        success.append(reached)
        rewarded |= reached
        possible &= still_possible(env, path, explorer.candidates)
    return torch.stack(success, 1)


def sparse_tasks(tasks: int, seed: int = 0):
    """``tasks`` goals of the sparse point robot, from the seed, in float64."""
    from metadapt.envs.point_robot import SparsePointRobotFamily, SparsePointRobotOptions

    env = SparsePointRobotFamily(SparsePointRobotOptions()).sample(tasks, torch.Generator().manual_seed(seed))
    return type(env)(horizon=env.horizon, goals=env.goals.double(), random_start=False, sparse=True,
                     goal_radius=env.goal_radius, reports_success=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="goals (trials) per strategy")
    parser.add_argument("--episodes", type=int, default=7, help="episodes per trial (PEARL's test: 7)")
    parser.add_argument("--prior-episodes", type=int, default=5,
                        help="episodes before the posterior in PEARL's protocol (its test: 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, help="also draw the shares against the episode into this PNG")
    args = parser.parse_args(argv)
    if not (1 <= args.tasks <= 100_000 and 1 <= args.episodes <= 100 and 1 <= args.prior_episodes):
        print("sparse_exploration_bound.py: error: --tasks must be 1 … 100,000, --episodes 1 … 100 and "
              "--prior-episodes at least 1", file=sys.stderr)
        return 2
    if args.plot and not args.plot.parent.is_dir():
        print(f"sparse_exploration_bound.py: error: --plot {args.plot}: no folder {args.plot.parent}; "
              "create it or give another path", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    env = sparse_tasks(args.tasks, args.seed)
    p = args.prior_episodes
    strategies = [(f"{p} prior episodes, then posterior sampling (PEARL's test)", "sample", p),
                  (f"{p} prior episodes, then the best straight path", "best", p),
                  ("the best straight path from the first episode", "best", 0),
                  ("sweeps along the arc, the best straight path once paid", "sweep", 0)]
    print(f"share of {args.tasks} trials whose episode k comes within {env.goal_radius} of the goal, "
          "exact inference:")
    print("  " + " " * 58 + "".join(f"{k:>7}" for k in range(1, args.episodes + 1)))
    explorer = Explorer(env)
    curves = {}
    for name, strategy, prior in strategies:
        generator = torch.Generator().manual_seed(args.seed + 1)
        success = play(env, explorer, strategy, args.episodes, prior, generator)
        curves[name] = [float(r) for r in 100 * success.double().mean(0)]
        print(f"  {name:<58}" + "".join(f"{r:6.1f}%" for r in curves[name]))
    if args.plot:
        plot(curves, args.prior_episodes, args.tasks, args.plot)
        print(f"figure: {args.plot}")
    return 0


def plot(curves: dict[str, list[float]], prior_episodes: int, tasks: int, path: Path) -> None:
    """Success per episode of each strategy, PEARL's prior episodes shaded, the issue's 80% dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metadapt.files import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    episodes = range(1, len(next(iter(curves.values()))) + 1)
    ax.axvspan(0.5, prior_episodes + 0.5, color="0.93", label="PEARL's prior episodes")
    ax.axhline(80, color="0.4", linestyle="--", linewidth=1, label="80%")
    for (name, rates), marker in zip(curves.items(), "osD^v"):
        ax.plot(episodes, rates, marker=marker, label=name)
    ax.set(xlabel="episode of the trial", ylabel="trials within the goal radius (%)", ylim=(0, 102),
           xlim=(0.5, len(episodes) + 0.5), xticks=list(episodes),
           title=f"Sparse point robot, exact inference, {tasks:,} goals")
    ax.legend(fontsize=8, loc="lower right")
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
