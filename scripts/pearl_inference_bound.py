"""How much a PEARL run's exploration episodes tell about the goal, on the point robot.

    python scripts/pearl_inference_bound.py RUN [--tasks 1000] [--noise 0.001 0.01 0.05]

Plays the first episodes of test trials as ``metadapt eval`` does (z from the prior), then infers each
goal exactly from their rewards: on a grid over the square of goals, the posterior is
``p(g | r) ∝ Π_t N(r_t; −‖s'_t − g‖, σ²)`` (uniform prior; σ the ``--noise`` assumed on each reward).
The next episode then moves at full speed toward the posterior mean from a fresh start, as the oracle
moves toward the true goal. Its return, on the scale from random actions (0) to the oracle (1), bounds
what any encoder could reach after the same exploration; the run's own second episode is printed
beside it. ``--episodes 2`` uses the first two episodes (the second with the run's posterior).
"""
from __future__ import annotations

import argparse
import sys

import torch

GRID = 161  # points per side: goals every 0.0125


def goal_posterior_mean(next_positions: torch.Tensor, rewards: torch.Tensor, noise: float,
                        grid_points: int = GRID) -> torch.Tensor:
    """``[T, 2]`` posterior mean of the goal of each task given ``next_positions [T, N, 2]`` and the
    dense rewards ``[T, N]`` there (``r = −‖s' − g‖`` plus Gaussian noise of std ``noise``), over a
    uniform grid prior on ``[−1, 1]²``."""
    line = torch.linspace(-1, 1, grid_points, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(line, line, indexing="ij"), -1).reshape(-1, 2)
    means = []
    for s, r in zip(next_positions.double(), rewards.double()):
        predicted = -(s[:, None, :] - grid[None]).norm(dim=-1)                  # [N, G]
        log_p = -((r[:, None] - predicted) ** 2).sum(0) / (2 * noise ** 2)
        p = torch.softmax(log_p, 0)
        means.append(p @ grid)
    return torch.stack(means)


def full_speed_return(env, starts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[T]`` return in ``env`` of moving from ``starts [T, 2]`` toward ``targets [T, 2]`` at full speed."""
    state = {"x": starts.to(env.goals)[:, None, :]}
    return env.full_speed_return(state, targets.to(env.goals)[:, None, :])[:, 0]


def random_return(env, generator: torch.Generator, copies: int = 100) -> torch.Tensor:
    """``[T]`` mean return of uniformly random actions over ``copies`` episodes of each task."""
    state, _ = env.reset(copies, generator)
    total = torch.zeros(env.num_tasks, copies, dtype=env.goals.dtype, device=env.device)
    for _ in range(env.horizon):
        action = 2 * torch.rand(env.num_tasks, copies, 2, generator=generator, dtype=env.goals.dtype) - 1
        state, _, reward, _ = env.step(state, action.to(env.device), None)
        total += reward
    return total.mean(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a PEARL run on the dense point robot")
    parser.add_argument("--tasks", type=int, default=1000, help="held-out goals (eval's seed)")
    parser.add_argument("--episodes", type=int, default=1, choices=(1, 2), help="exploration episodes read")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.001, 0.01, 0.05],
                        help="reward noise σ the inference assumes")
    args = parser.parse_args(argv)
    from metadapt.errors import UserError
    from metadapt.training.run import load

    try:
        if not 1 <= args.tasks <= 100_000 or min(args.noise) <= 0:
            raise UserError("--tasks must be 1 … 100,000 and every --noise positive")
        run = load(args.run, "best")
        if run.config.algorithm.name != "pearl" or run.config.task.family != "point-robot":
            raise UserError(f"{args.run} is a {run.config.algorithm.name} run on {run.config.task.family}; "
                            "give a PEARL run on the dense point robot (task.family: point-robot)")
    except UserError as err:
        print(f"pearl_inference_bound.py: error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    env = run.family.sample(args.tasks, torch.Generator().manual_seed(run.config.eval.seed)).to(run.device)
    algorithm = run.algorithm
    returns, trajs, _ = algorithm.explore(env, args.episodes + 1, torch.Generator().manual_seed(
        run.config.eval.seed + 1))
    seen = [algorithm.split(algorithm.transitions(t, env)) for t in trajs[:args.episodes]]
    positions = torch.cat([s[3] for s in seen], 1).cpu()
    rewards = torch.cat([s[2] for s in seen], 1).cpu()
    goals = env.goals.cpu()
    starts = trajs[args.episodes].observations[:, 0, 0, 0].cpu()     # the next episode's own starts
    oracle = float(env.oracle_return().mean())
    random = float(random_return(env, torch.Generator().manual_seed(0)).mean())
    scale = lambda v: 100 * (float(v) - random) / (oracle - random)  # noqa: E731
    agent = returns[:, args.episodes].mean()
    print(f"{args.run}: episode {args.episodes + 1} after {args.episodes} exploration episode(s), "
          f"{args.tasks} goals; scored from random actions ({random:.2f}, 0%) to the oracle ({oracle:.2f}, "
          "100%)")
    print(f"  the run's posterior: {float(agent):.2f} ({scale(agent):.1f}%)")
    same = full_speed_return(env, starts, goals).mean()
    print(f"  the oracle from the same starts: {float(same):.2f} ({scale(same):.1f}%)")
    for noise in args.noise:
        target = goal_posterior_mean(positions, rewards, noise)
        value = full_speed_return(env, starts, target).mean()
        print(f"  exact inference, reward noise {noise:g}: {float(value):.2f} ({scale(value):.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
