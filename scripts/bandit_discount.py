"""What RL²'s discount costs on Bernoulli bandits: index policies for a discount γ, scored undiscounted.

    python scripts/bandit_discount.py [--tasks 20000] [--arms 5] [--pulls 100] [--gammas 0.99 0.995]

RL² (Duan et al. 2016) maximises the *discounted* return of a trial (γ = 0.99 in its recipes), while
the benchmark scores the undiscounted total reward of its n pulls. Could that mismatch alone cap it
below the Gittins strategy? The classic Gittins index for discount γ is the Bayes-optimal policy of
the infinite-horizon discounted problem (Gittins 1979), so playing it and scoring the undiscounted
total shows what optimising a γ-discounted objective gives up against the finite-horizon index that
is optimal for the undiscounted n-pull trial. Every policy plays the same tasks
(``p_i ~ U[0, 1]``) with the same reward draws; ties are broken at random. Prints each policy's mean
total reward per trial with a 95% interval.
"""
from __future__ import annotations

import argparse

import torch

from metadapt.algorithms.rl.gittins import discounted_gittins, finite_horizon_gittins


def play(index, probs: torch.Tensor, pulls: int, seed: int) -> torch.Tensor:
    """``[B]`` total reward of playing the arm of highest ``index(a, b, t)`` (Beta(a, b) posteriors,
    ``t`` pulls so far) for ``pulls`` pulls; the reward draws come from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    tasks, arms = probs.shape
    draws = torch.rand(pulls, tasks, arms, generator=g)
    wins, counts, total = torch.zeros(tasks, arms), torch.zeros(tasks, arms), torch.zeros(tasks)
    rows = torch.arange(tasks)
    for t in range(pulls):
        score = index((wins + 1).long(), (counts - wins + 1).long(), t)
        best = score >= score.max(-1, keepdim=True).values - 1e-12
        arm = (best.float() * torch.rand(tasks, arms, generator=g)).argmax(-1)
        reward = (draws[t, rows, arm] < probs[rows, arm]).float()
        counts[rows, arm] += 1
        wins[rows, arm] += reward
        total += reward
    return total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--pulls", type=int, default=100)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.99, 0.995])
    args = parser.parse_args(argv)
    probs = torch.rand(args.tasks, args.arms, generator=torch.Generator().manual_seed(0))
    n = args.pulls
    finite = finite_horizon_gittins(n)
    policies = {"finite-horizon Gittins (optimal, undiscounted)": lambda a, b, t: finite[a, b, n - t]}
    for gamma in args.gammas:
        depth = max(400, int(5 / (1 - gamma)))  # γ^depth < e^-5 beyond the truncation
        table = discounted_gittins(n + 3, gamma, depth=depth)
        policies[f"Gittins for γ = {gamma}"] = lambda a, b, t, table=table: table[a, b]
    policies["greedy (posterior mean)"] = lambda a, b, t: a.float() / (a + b)
    for name, index in policies.items():
        total = play(index, probs, n, seed=1)
        half = 1.96 * total.std().item() / args.tasks ** 0.5
        print(f"{name:48s} {total.mean().item():6.2f} ± {half:.2f}")


if __name__ == "__main__":
    main()
