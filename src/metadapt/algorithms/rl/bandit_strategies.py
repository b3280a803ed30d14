"""Hand-designed strategies for Bernoulli bandits, the baselines of RL² (Duan et al. 2016, §3.1),
each a policy ``act(observation, last, carry)`` for :func:`metadapt.experience.rollout` over a batch
of tasks. The carry holds each arm's pulls ``n_i`` and successes ``s_i``; ties are broken at random.

- ``random``: a uniformly random arm.
- ``greedy``: the highest posterior mean ``(s_i + 1) / (n_i + 2)`` (uniform Beta(1, 1) prior).
- ``epsilon-greedy``: a random arm with probability ε, else greedy.
- ``ucb1`` (Auer, Cesa-Bianchi & Fischer 2002): the highest ``μ_i + c · sqrt(2 ln t / m_i)``; with
  ``pseudo_counts`` (the RL² authors' code) ``μ_i = (s_i + 1) / (n_i + 2)``, ``m_i = n_i + 2`` and
  ``t = 1 +`` pulls so far; without, the textbook form: every arm once, then ``μ_i = s_i / n_i``,
  ``m_i = n_i``. Textbook c = 1; RL² tuned c per setting.
- ``thompson`` (Thompson 1933): the arm with the highest draw from its posterior Beta(s_i + 1, n_i − s_i + 1).
- ``gittins`` (Gittins 1979): the highest finite-horizon Gittins index of its posterior with the
  trial's remaining pulls (:func:`~metadapt.algorithms.rl.gittins.finite_horizon_gittins`).

Posterior draws come from a NumPy generator seeded from the run's torch generator (torch has no
seeded Beta sampler), so every draw is still the run's.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from metadapt.experience import Last


def _argmax_random_ties(score: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    best = score.max(-1, keepdim=True).values
    noise = torch.rand(score.shape, generator=generator).to(score.device)
    return ((score >= best - 1e-12).to(score.dtype) * noise).argmax(-1)


class BanditStrategy:
    """Base: keeps the counts; subclasses choose an arm from them (``choose``)."""

    name = "strategy"

    def __init__(self, arms: int, generator: torch.Generator):
        self.arms, self.generator = arms, generator

    def act(self, obs: torch.Tensor, last: Last | None, carry):
        if last is None:
            shape = (*obs.shape[:2], self.arms)
            zeros = torch.zeros(shape, device=obs.device)
            carry = {"pulls": zeros, "wins": zeros, "t": 0}
        else:
            one_hot = torch.nn.functional.one_hot(last.action, self.arms).to(carry["pulls"].dtype)
            wins = carry["wins"] + one_hot * last.reward[..., None]
            carry = {"pulls": carry["pulls"] + one_hot, "wins": wins, "t": carry["t"] + 1}
        return self.choose(carry["pulls"], carry["wins"], carry["t"]), {}, carry

    def choose(self, pulls: torch.Tensor, wins: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError


class Random(BanditStrategy):
    name = "random"

    def choose(self, pulls, wins, t):
        return torch.randint(self.arms, pulls.shape[:-1], generator=self.generator).to(pulls.device)


class Greedy(BanditStrategy):
    name = "greedy"

    def choose(self, pulls, wins, t):
        return _argmax_random_ties((wins + 1) / (pulls + 2), self.generator)


class EpsilonGreedy(BanditStrategy):
    name = "epsilon-greedy"

    def __init__(self, arms, generator, epsilon: float = 0.1):
        super().__init__(arms, generator)
        self.epsilon = epsilon

    def choose(self, pulls, wins, t):
        greedy = _argmax_random_ties((wins + 1) / (pulls + 2), self.generator)
        explore = torch.rand(pulls.shape[:-1], generator=self.generator).to(pulls.device) < self.epsilon
        other = torch.randint(self.arms, pulls.shape[:-1], generator=self.generator).to(pulls.device)
        return torch.where(explore, other, greedy)


class UCB1(BanditStrategy):
    name = "ucb1"

    def __init__(self, arms, generator, c: float = 1.0, pseudo_counts: bool = True):
        super().__init__(arms, generator)
        self.c, self.pseudo_counts = c, pseudo_counts

    def choose(self, pulls, wins, t):
        if self.pseudo_counts:
            m = pulls + 2
            bonus = self.c * torch.sqrt(2 * torch.log(1 + pulls.sum(-1, keepdim=True)) / m)
            return _argmax_random_ties((wins + 1) / m + bonus, self.generator)
        total = pulls.sum(-1, keepdim=True).clamp(min=1)
        bonus = self.c * torch.sqrt(2 * torch.log(total) / pulls.clamp(min=1))
        untried = torch.full_like(pulls, float("inf"))
        score = torch.where(pulls > 0, wins / pulls.clamp(min=1) + bonus, untried)
        return _argmax_random_ties(score, self.generator)


class Thompson(BanditStrategy):
    name = "thompson"

    def __init__(self, arms, generator):
        super().__init__(arms, generator)
        self.rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,), generator=generator)))

    def choose(self, pulls, wins, t):
        a, b = (wins + 1).cpu().numpy(), (pulls - wins + 1).cpu().numpy()
        draws = torch.as_tensor(self.rng.beta(a, b), dtype=pulls.dtype, device=pulls.device)
        return _argmax_random_ties(draws, self.generator)


class Gittins(BanditStrategy):
    """The arm of highest index ``ν(s_i + 1, n_i − s_i + 1, n − t)`` with ``n − t`` pulls left,
    read from a table ``[a, b, m]`` of :func:`finite_horizon_gittins` for the trial's ``n`` pulls."""

    name = "gittins"

    def __init__(self, arms, generator, table: torch.Tensor):
        super().__init__(arms, generator)
        self.table = table

    def choose(self, pulls, wins, t):
        a, b = (wins + 1).long(), (pulls - wins + 1).long()
        left = self.table.shape[2] - 1 - t
        return _argmax_random_ties(self.table.to(pulls.device)[a, b, left], self.generator)


STRATEGIES: dict[str, Callable[..., BanditStrategy]] = {
    "random": Random, "greedy": Greedy, "epsilon-greedy": EpsilonGreedy, "ucb1": UCB1, "thompson": Thompson,
    "gittins": Gittins}
