"""Bernoulli multi-armed bandits (Duan et al., "RL²: Fast reinforcement learning via slow
reinforcement learning", 2016, §3.1).

A task is ``k`` arms with success probabilities ``p_i ~ U[0, 1]``; pulling arm ``i`` pays 1 with
probability ``p_i``, else 0. A trial is ``n`` pulls (one episode of horizon ``n``); the observation
carries nothing (a constant), so everything an agent knows comes from its past actions and rewards.
The best a policy that knows ``p`` can expect is ``n · max_i p_i``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from metadapt.envs.base import EnvBatch, EnvFamily, State
from metadapt.options import option
from metadapt.registry import register


@dataclass(frozen=True)
class Bandits(EnvBatch):
    """``probs [T, k]``: each task's arm probabilities."""

    observation_shape: ClassVar[tuple[int, ...]] = (1,)
    noise_size: ClassVar[int] = 1

    probs: torch.Tensor = None

    @property
    def arms(self) -> int:
        return self.probs.shape[-1]

    @property
    def actions(self) -> int:  # type: ignore[override]
        return self.arms

    def reset(self, copies, generator):
        t = self.num_tasks
        return {"t": torch.zeros(t, copies, dtype=torch.long, device=self.device)}, \
            torch.zeros(t, copies, 1, device=self.device)

    def step(self, state: State, action, noise):
        p = torch.gather(self.probs, 1, action)  # [T, C]: the pulled arms' probabilities
        reward = (noise[..., 0] < p).to(self.probs.dtype)
        t = state["t"] + 1
        return {"t": t}, torch.zeros_like(reward).unsqueeze(-1), reward, torch.zeros_like(t, dtype=torch.bool)

    def oracle_return(self):
        return self.horizon * self.probs.max(-1).values

    def best_arm_share(self, actions: torch.Tensor) -> torch.Tensor:
        """``[n]``: for each pull of a trial, the share of tasks whose pull went to their best arm
        (highest ``p``), from the trial's ``actions [T, n]``."""
        return (actions == self.probs.argmax(-1, keepdim=True)).to(self.probs.dtype).mean(0)


@dataclass
class BanditOptions:
    arms: int = option(5, low=2, high=100_000, help="k: arms per bandit")
    pulls: int = option(10, positive=True, high=100_000, help="n: pulls per trial")


@register("task", "bandits")
class BanditFamily(EnvFamily):
    """Bernoulli bandits with arm probabilities drawn uniformly (RL² §3.1)."""

    Options = BanditOptions
    trial_unit = "pulls"

    def sample(self, num_tasks, generator):
        probs = torch.rand(num_tasks, self.options.arms, generator=generator)
        return Bandits(horizon=self.options.pulls, probs=probs)

    def describe(self):
        o = self.options
        return [f"- Tasks: Bernoulli bandits, k = {o.arms} arms with p ~ U[0, 1], trials of n = {o.pulls} "
                "pulls (Duan et al. 2016, §3.1)."]
