"""The point robots of PEARL (Rakelly et al., "Efficient off-policy meta-reinforcement learning via
probabilistic context variables", ICML 2019, §6.3 and Appendix), as its released code (oyster's
``point_robot.py``) runs them.

A point in the plane moves by ``0.1 · clip(a, -1, 1)`` per coordinate (actions normalised to
``[-1, 1]``, as oyster's ``NormalizedBoxEnv`` feeds its ``±0.1`` action box); episodes are 20 steps
and never end early.

* **Point robot** (``point-robot``): goals ``g ~ U[-1, 1]²``; each episode starts at a point drawn
  uniformly from the same square; the reward is the negative distance to the goal after the move,
  ``-‖x_{t+1} - g‖``.
* **Sparse point robot** (``sparse-point-robot``): goals on the upper half of the unit circle,
  ``g = (cos φ, sin φ)``, ``φ ~ U[0, π]``; episodes start at the origin; the reward is
  ``1 - ‖x_{t+1} - g‖`` within the goal radius 0.2 and 0 outside it. ``reward: dense`` gives the
  dense reward of the same tasks, on which PEARL meta-trains before it is tested on the sparse one.

The oracle is the policy that knows the goal and moves straight to it at full speed
(:meth:`PointRobot.oracle_return`; with random starts, the mean over a fixed set of starts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from metadapt.envs.base import EnvBatch, EnvFamily, State
from metadapt.options import option
from metadapt.registry import register

#: starts the oracle of a random-start task averages over (a fixed stream: the oracle is a number)
ORACLE_STARTS, ORACLE_SEED = 256, 20_190_609


@dataclass(frozen=True)
class PointRobot(EnvBatch):
    """``goals [T, 2]``; ``random_start``: episodes start ``~ U[-1, 1]²`` (else at the origin);
    ``sparse``: the sparse reward within ``goal_radius``."""

    observation_shape: ClassVar[tuple[int, ...]] = (2,)
    action_dim: ClassVar[int] = 2
    action_bound: ClassVar[float] = 1.0
    noise_size: ClassVar[int] = 0
    max_speed: ClassVar[float] = 0.1

    goals: torch.Tensor = None
    random_start: bool = True
    sparse: bool = False
    goal_radius: float = 0.2
    #: the evaluation reports the share of episodes that come within ``goal_radius`` (the sparse robot)
    reports_success: bool = False

    @property
    def observation_bounds(self):
        reach = 1.0 + self.max_speed * self.horizon
        return -reach, reach

    def with_reward(self, sparse: bool) -> PointRobot:
        """The same tasks with the sparse or the dense reward."""
        return type(self)(horizon=self.horizon, goals=self.goals, random_start=self.random_start,
                          sparse=sparse, goal_radius=self.goal_radius, reports_success=self.reports_success)

    def reached(self, positions: torch.Tensor) -> torch.Tensor:
        """Whether a path ``positions [T, …, H, 2]`` comes within ``goal_radius`` of its task's goal
        (``[T, …]``)."""
        goals = self.goals.reshape(len(self.goals), *([1] * (positions.dim() - 2)), 2)
        return ((positions - goals).norm(dim=-1) <= self.goal_radius).any(-1)

    def reset_noise(self, copies: int, generator: torch.Generator) -> torch.Tensor:
        """The draws a reset needs, ``[T, C, 2]`` standard uniforms (unused without random starts)."""
        if not self.random_start:
            return torch.zeros(self.num_tasks, copies, 2, dtype=self.goals.dtype, device=self.device)
        draws = torch.rand(self.num_tasks, copies, 2, generator=generator, dtype=self.goals.dtype)
        return draws.to(self.device)

    def start(self, noise: torch.Tensor) -> tuple[State, torch.Tensor]:
        """Episodes starting at ``2·noise − 1`` (random starts) or the origin."""
        x = 2 * noise - 1 if self.random_start else torch.zeros_like(noise)
        return {"x": x}, x

    def reset(self, copies, generator):
        return self.start(self.reset_noise(copies, generator))

    def reward(self, x: torch.Tensor) -> torch.Tensor:
        distance = (x - self.goals[:, None, :]).norm(dim=-1)
        if not self.sparse:
            return -distance
        return torch.where(distance <= self.goal_radius, 1 - distance, torch.zeros_like(distance))

    def step(self, state: State, action, noise):
        x = state["x"] + self.max_speed * action.clamp(-self.action_bound, self.action_bound)
        return {"x": x}, x, self.reward(x), torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)

    def oracle_return(self):
        """``[T]`` return of moving straight at the goal at full speed (each coordinate's step clipped
        as actions are), averaged over ``ORACLE_STARTS`` starts from a fixed stream."""
        copies = ORACLE_STARTS if self.random_start else 1
        state, _ = self.reset(copies, torch.Generator().manual_seed(ORACLE_SEED))
        return self.full_speed_return(state, self.goals[:, None, :]).mean(1)

    def full_speed_return(self, state: dict, targets: torch.Tensor) -> torch.Tensor:
        """``[T, C]`` return of an episode from ``state`` moving toward ``targets [T, C, 2]`` at full
        speed (each coordinate's step clipped as actions are), scored by this env's reward."""
        total = torch.zeros(state["x"].shape[:2], dtype=self.goals.dtype, device=self.device)
        for reward in self.full_speed_path(state, targets)[1].unbind(-1):
            total += reward  # step by step, as the return has always been summed
        return total

    def full_speed_path(self, state: dict, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions ``[T, C, H, 2]`` after each step and the rewards ``[T, C, H]`` of an episode from
        ``state`` moving toward ``targets [T, C, 2]`` at full speed."""
        positions, rewards = [], []
        for _ in range(self.horizon):
            state, x, reward, _ = self.step(state, (targets - state["x"]) / self.max_speed, None)
            positions.append(x)
            rewards.append(reward)
        return torch.stack(positions, -2), torch.stack(rewards, -1)


@dataclass
class PointRobotOptions:
    horizon: int = option(20, positive=True, high=100_000, help="steps per episode (PEARL: 20)")
    episodes: int = option(1, positive=True, high=10_000,
                           help="episodes of a trial, for agents that learn within one (RL²)")


@register("task", "point-robot")
class PointRobotFamily(EnvFamily):
    """PEARL's point robot: an unobserved goal in the square ``[-1, 1]²``, random starts."""

    Options = PointRobotOptions

    def sample(self, num_tasks, generator):
        goals = 2 * torch.rand(num_tasks, 2, generator=generator) - 1
        return PointRobot(horizon=self.options.horizon, goals=goals)

    def describe(self):
        return [f"- Tasks: point robot, goals ~ U[-1, 1]², starts ~ U[-1, 1]², actions in [-1, 1] moving the "
                f"point by up to 0.1 per coordinate, reward the negative distance to the goal, episodes of "
                f"{self.options.horizon} steps (Rakelly et al. 2019)."]


@dataclass
class SparsePointRobotOptions:
    horizon: int = option(20, positive=True, high=100_000, help="steps per episode (PEARL: 20)")
    episodes: int = option(1, positive=True, high=10_000,
                           help="episodes of a trial, for agents that learn within one (RL²)")
    goal_radius: float = option(0.2, positive=True,
                                help="the reward is paid within this distance of the goal (PEARL: 0.2)")
    reward: str = option("sparse", choices=("sparse", "dense"),
                         help="sparse: 1 − distance within goal_radius, else 0; dense: −distance")


@register("task", "sparse-point-robot")
class SparsePointRobotFamily(EnvFamily):
    """PEARL's sparse point robot: goals on the upper unit half-circle, starts at the origin."""

    Options = SparsePointRobotOptions

    def sample(self, num_tasks, generator):
        angle = math.pi * torch.rand(num_tasks, generator=generator)
        goals = torch.stack([angle.cos(), angle.sin()], -1)
        o = self.options
        return PointRobot(horizon=o.horizon, goals=goals, random_start=False, sparse=o.reward == "sparse",
                          goal_radius=o.goal_radius, reports_success=True)

    def describe(self):
        o = self.options
        return [f"- Tasks: sparse point robot, goals on the unit half-circle, starts at the origin, actions "
                f"in [-1, 1] moving the point by up to 0.1 per coordinate, reward {o.reward} "
                f"(within {o.goal_radius} of the goal: 1 − distance), episodes of {o.horizon} steps "
                "(Rakelly et al. 2019)."]
