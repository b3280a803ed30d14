"""2D navigation (Finn, Abbeel & Levine, "Model-agnostic meta-learning", ICML 2017, §5.3).

A point starts at the origin and must reach a goal ``g ~ U[-0.5, 0.5]²`` it does not observe: the
observation is its position, the velocity is ``0.1 · clip(a, -1, 1)`` per coordinate for an action
``a`` (actions are normalised to ``[-1, 1]``, as rllab's ``normalize`` wrapper feeds them to the
released code's environment, whose velocities are clipped to ``[-0.1, 0.1]``), and the reward is the
negative distance to the goal after the move, ``-‖x_{t+1} - g‖``. As the released code runs it, an
episode ends when the point is within 0.01 of the goal in both coordinates, or after 100 steps. The
paper's text describes the negative *squared* distance: the preset ``reward: squared``.
The policy that knows the goal moves straight to it at full speed (an oracle computed by rolling that
policy out, :meth:`Navigation.oracle_return`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from metadapt.envs.base import EnvBatch, EnvFamily, State
from metadapt.options import option
from metadapt.registry import register


@dataclass(frozen=True)
class Navigation(EnvBatch):
    """``goals [T, 2]``; ``squared`` chooses the paper text's reward."""

    observation_shape: ClassVar[tuple[int, ...]] = (2,)
    action_dim: ClassVar[int] = 2
    action_bound: ClassVar[float] = 1.0
    noise_size: ClassVar[int] = 0
    max_speed: ClassVar[float] = 0.1

    goals: torch.Tensor = None
    squared: bool = False
    tolerance: float = 0.01

    @property
    def observation_bounds(self):
        reach = self.max_speed * self.horizon  # the farthest the point can go
        return -reach, reach

    def reset(self, copies, generator):
        x = torch.zeros(self.num_tasks, copies, 2, dtype=self.goals.dtype, device=self.device)
        return {"x": x}, x

    def step(self, state: State, action, noise):
        x = state["x"] + self.max_speed * action.clamp(-self.action_bound, self.action_bound)
        offset = x - self.goals[:, None, :]
        squared = (offset ** 2).sum(-1)
        reward = -squared if self.squared else -squared.sqrt()
        done = (offset.abs() < self.tolerance).all(-1)
        return {"x": x}, x, reward, done

    def oracle_return(self):
        """``[T]`` return of moving straight at the goal at full speed (per coordinate clipped as the
        actions are, then stopping on it)."""
        state, _ = self.reset(1, None)
        total = torch.zeros(self.num_tasks, 1, dtype=self.goals.dtype, device=self.device)
        alive = torch.ones_like(total, dtype=torch.bool)
        for _ in range(self.horizon):
            toward = (self.goals[:, None, :] - state["x"]) / self.max_speed
            state, _, reward, done = self.step(state, toward, None)
            total += reward * alive
            alive &= ~done
        return total[:, 0]


@dataclass
class NavigationOptions:
    goal_low: float = option(-0.5, help="goals ~ U[goal_low, goal_high]² (the paper: ±0.5)")
    goal_high: float = option(0.5, help="upper end of the goal square")
    horizon: int = option(100, positive=True, high=100_000, help="steps per episode")
    reward: str = option("distance", choices=("distance", "squared"),
                         help="negative distance (released code) or squared distance (paper text)")


@register("task", "navigation-2d")
class NavigationFamily(EnvFamily):
    """Point navigation to an unobserved goal in the plane (MAML §5.3)."""

    Options = NavigationOptions

    def sample(self, num_tasks, generator):
        o = self.options
        goals = o.goal_low + (o.goal_high - o.goal_low) * torch.rand(num_tasks, 2, generator=generator)
        return Navigation(horizon=o.horizon, goals=goals, squared=o.reward == "squared")

    def describe(self):
        o = self.options
        what = "negative squared distance" if o.reward == "squared" else "negative distance"
        return [f"- Tasks: 2D navigation, goals ~ U[{o.goal_low}, {o.goal_high}]², actions in [-1, 1] moving "
                f"the point by up to 0.1 per coordinate, reward the {what} to the goal, episodes of at most "
                f"{o.horizon} steps (Finn et al. 2017, §5.3)."]
