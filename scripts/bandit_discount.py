"""What RL²'s discount costs on Bernoulli bandits: index policies for a discount γ, scored undiscounted.

    python scripts/bandit_discount.py [--tasks 20000] [--arms 5] [--pulls 100] [--gammas 0.99 0.995]

RL² (Duan et al. 2016) maximises the *discounted* return of a trial (γ = 0.99 in its recipes), while
the benchmark scores the undiscounted total reward of its n pulls. Could that mismatch alone cap it
below the Gittins strategy? The classic Gittins index for discount γ is the Bayes-optimal policy of
the infinite-horizon discounted problem (Gittins 1979), so playing it and scoring the undiscounted
total shows what optimising a γ-discounted objective gives up against the finite-horizon index that
is optimal for the undiscounted n-pull trial. The policies are the library's strategies played as
``metadapt eval`` plays them (:class:`~metadapt.algorithms.rl.bandit_strategies.Gittins`,
:class:`~metadapt.algorithms.rl.bandit_strategies.Greedy`), on the same tasks (``p_i ~ U[0, 1]``) from
the same seed; ties are broken at random. Prints each policy's mean total reward per trial with a 95%
interval.
"""
from __future__ import annotations

import argparse

import torch

from metadapt.algorithms.rl.bandit_strategies import Gittins, Greedy
from metadapt.algorithms.rl.gittins import discounted_gittins, finite_horizon_gittins
from metadapt.envs import BanditFamily
from metadapt.envs.bandits import BanditOptions
from metadapt.evaluation.rl import trial_rewards
from metadapt.evaluation.stats import mean_ci

TASK_SEED, PLAY_SEED = 0, 1


def discounted_table(pulls: int, gamma: float) -> torch.Tensor:
    """``[a, b, m]``: the γ-discounted index of Beta(a, b), the same for every number ``m`` of pulls
    left — the table :class:`Gittins` reads, for a policy that ignores the horizon."""
    depth = max(400, int(5 / (1 - gamma)))  # γ^depth < e^-5 beyond the truncation
    return discounted_gittins(pulls + 3, gamma, depth=depth)[..., None].expand(-1, -1, pulls + 1)


def policies(arms: int, pulls: int, gammas) -> dict:
    """``{name: make(generator) -> strategy}``: the finite-horizon index, one discounted index per γ,
    and greedy."""
    finite = finite_horizon_gittins(pulls)
    out = {"finite-horizon Gittins (optimal, undiscounted)": lambda g: Gittins(arms, g, finite)}
    for gamma in gammas:
        table = discounted_table(pulls, gamma)
        out[f"Gittins for γ = {gamma}"] = lambda g, table=table: Gittins(arms, g, table)
    out["greedy (posterior mean)"] = lambda g: Greedy(arms, g)
    return out


def totals(make, tasks: int, arms: int, pulls: int) -> torch.Tensor:
    """``[tasks]`` total reward of one trial of the strategy ``make`` builds, on the script's tasks."""
    family = BanditFamily(BanditOptions(arms=arms, pulls=pulls))
    env = family.sample(tasks, torch.Generator().manual_seed(TASK_SEED))
    g = torch.Generator().manual_seed(PLAY_SEED)
    return trial_rewards(make(g).act, env, 1, g).sum((1, 2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--pulls", type=int, default=100)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.99, 0.995])
    args = parser.parse_args(argv)
    for name, make in policies(args.arms, args.pulls, args.gammas).items():
        mean, half = mean_ci(totals(make, args.tasks, args.arms, args.pulls))
        print(f"{name:48s} {float(mean):6.2f} ± {float(half):.2f}")


if __name__ == "__main__":
    main()
