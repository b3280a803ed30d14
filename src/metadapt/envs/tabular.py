"""Random tabular MDPs (Duan et al., "RL²", 2016, §3.2).

A task is an MDP of ``states`` states and ``actions`` actions: reward means ``R(s, a) ~ N(1, 1)``,
rewards ``r ~ N(R(s, a), 1)``, transitions ``P(· | s, a) ~ Dirichlet(1, …, 1)`` (flat). Each episode
starts in state 0 and lasts ``horizon`` (10) steps; a trial is ``n`` episodes of the same MDP. The
observation is the one-hot state. The best a policy that knows the MDP can expect per episode is
its finite-horizon optimal value at state 0, computed exactly by backward induction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from metadapt.envs.base import EnvBatch, EnvFamily, State
from metadapt.options import option
from metadapt.registry import register

_EPS = 1e-7  # keeps the inverse normal CDF of a uniform draw finite


@dataclass(frozen=True)
class TabularMDPs(EnvBatch):
    """``reward_means [T, S, A]`` and ``transitions [T, S, A, S]`` of each task."""

    noise_size: ClassVar[int] = 2

    reward_means: torch.Tensor = None
    transitions: torch.Tensor = None

    @property
    def states(self) -> int:
        return self.reward_means.shape[1]

    @property
    def actions(self) -> int:  # type: ignore[override]
        return self.reward_means.shape[2]

    @property
    def observation_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.states,)

    def _observe(self, s: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(s, self.states).to(self.reward_means.dtype)

    def reset(self, copies, generator):
        s = torch.zeros(self.num_tasks, copies, dtype=torch.long, device=self.device)
        return {"s": s}, self._observe(s)

    def step(self, state: State, action, noise):
        s = state["s"]
        tasks = torch.arange(self.num_tasks, device=self.device)[:, None]
        mean = self.reward_means[tasks, s, action]                       # [T, C]
        u = noise.clamp(_EPS, 1 - _EPS)
        reward = mean + torch.special.ndtri(u[..., 0])
        cdf = self.transitions[tasks, s, action].cumsum(-1)              # [T, C, S]
        s = (cdf < u[..., 1:2]).sum(-1).clamp(max=self.states - 1)       # inverse-CDF draw of s'
        return {"s": s}, self._observe(s), reward, torch.zeros_like(s, dtype=torch.bool)

    def optimal_values(self) -> torch.Tensor:
        """``[T, S]`` optimal expected return of one ``horizon``-step episode from each state."""
        v = torch.zeros(self.num_tasks, self.states, dtype=self.reward_means.dtype, device=self.device)
        for _ in range(self.horizon):
            v = (self.reward_means + torch.einsum("tsan,tn->tsa", self.transitions, v)).max(-1).values
        return v

    def oracle_return(self):
        return self.optimal_values()[:, 0]


@dataclass
class TabularOptions:
    states: int = option(10, low=2, high=10_000, help="states per MDP")
    actions: int = option(5, low=2, high=10_000, help="actions per state")
    horizon: int = option(10, positive=True, high=100_000, help="steps per episode")
    episodes: int = option(10, positive=True, high=10_000, help="n: episodes per trial")


@register("task", "tabular-mdp")
class TabularMDPFamily(EnvFamily):
    """Random tabular MDPs with Gaussian rewards and flat-Dirichlet transitions (RL² §3.2)."""

    Options = TabularOptions

    def sample(self, num_tasks, generator):
        o = self.options
        means = 1.0 + torch.randn(num_tasks, o.states, o.actions, generator=generator)
        exp = -torch.log1p(-torch.rand(num_tasks, o.states, o.actions, o.states, generator=generator))
        return TabularMDPs(horizon=o.horizon, reward_means=means, transitions=exp / exp.sum(-1, keepdim=True))

    def describe(self):
        o = self.options
        return [f"- Tasks: random tabular MDPs, {o.states} states × {o.actions} actions, reward means "
                f"N(1, 1), unit-variance Gaussian rewards, flat-Dirichlet transitions; episodes of "
                f"{o.horizon} steps from state 0, trials of n = {o.episodes} episodes "
                "(Duan et al. 2016, §3.2)."]
