"""Each environment family as a plain single-task ``gymnasium.Env`` (``pip install 'metadapt[rl]'``).

    import gymnasium, metadapt.envs.gym
    env = gymnasium.make("metadapt/Bandits-v0", arms=5, pulls=10)
    obs, info = env.reset(seed=0)            # the first reset draws a task from the seed
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Reset semantics are explicit: ``reset()`` starts a new episode *of the same task*; the task changes
only with a seed (``reset(seed=s)`` draws the task from ``s``, so a seed fixes everything that
follows), with ``reset(options={"new_task": True})`` (the next draw of the environment's generator) or
``reset(options={"task": batch})`` (a one-task :class:`~metadapt.envs.base.EnvBatch`, e.g.
``family.sample(1, g)``). ``info["task"]`` is the task in force. An episode that reaches the horizon
is *truncated*; one that reaches its goal (2D navigation) is *terminated*. Each step is the batched
environment's own step on a batch of one task and one copy, so both agree step for step given the
same random draws (``step_with_noise``).
"""
from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from metadapt.envs.bandits import BanditFamily
from metadapt.envs.base import EnvBatch, EnvFamily
from metadapt.envs.half_cheetah import HalfCheetahDirFamily, HalfCheetahVelFamily
from metadapt.envs.navigation import NavigationFamily
from metadapt.envs.point_robot import PointRobotFamily, SparsePointRobotFamily
from metadapt.envs.tabular import TabularMDPFamily


class SingleTaskEnv(gymnasium.Env):
    """One task of an :class:`EnvFamily` as a ``gymnasium.Env``; ``options`` are the family's."""

    metadata = {"render_modes": []}
    family_class: type[EnvFamily] = EnvFamily

    def __init__(self, **options: Any):
        self.family = self.family_class(self.family_class.Options(**options))
        self.task: EnvBatch = self.family.sample(1, torch.Generator().manual_seed(0))
        self._generator = torch.Generator().manual_seed(0)
        self._fresh = True  # the first reset draws the task from its seed
        self._state: dict | None = None
        shape = tuple(self.task.observation_shape)
        low, high = self.task.observation_bounds
        self.observation_space = spaces.Box(low, high, shape, dtype=np.float32)
        if self.task.discrete:
            self.action_space = spaces.Discrete(self.task.actions)
        else:
            b = self.task.action_bound
            self.action_space = spaces.Box(-b, b, (self.task.action_dim,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if seed is not None:
            self._generator = torch.Generator().manual_seed(seed)
        if "task" in options:
            task = options["task"]
            if not isinstance(task, type(self.task)) or task.num_tasks != 1:
                raise ValueError(f"options['task'] must be a one-task {type(self.task).__name__}")
            self.task = task
        elif self._fresh or seed is not None or options.get("new_task"):
            self.task = self.family.sample(1, self._generator)
        self._fresh = False
        if "reset_noise" in options:  # the start's draws given (an environment with random starts)
            self._state, obs = self.task.start(torch.as_tensor(options["reset_noise"]).reshape(1, 1, -1))
        else:
            self._state, obs = self.task.reset(1, self._generator)
        self._t = 0
        return obs[0, 0].numpy().astype(np.float32), {"task": self.task}

    def step(self, action):
        return self.step_with_noise(action, self.task.noise(1, self._generator)[0, 0])

    def step_with_noise(self, action, noise: torch.Tensor):
        """``step`` with the given random draws ``[noise_size]`` instead of fresh ones."""
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        if self.task.discrete:
            a = torch.tensor([[int(action)]])
        else:
            a = torch.as_tensor(np.asarray(action), dtype=torch.float32).reshape(1, 1, -1)
        self._state, obs, reward, terminated = self.task.step(self._state, a, noise.reshape(1, 1, -1))
        self._t += 1
        terminated = bool(terminated[0, 0])
        truncated = self._t >= self.task.horizon and not terminated
        return obs[0, 0].numpy().astype(np.float32), float(reward[0, 0]), terminated, truncated, {}


class BanditEnv(SingleTaskEnv):
    """``metadapt/Bandits-v0``: options ``arms``, ``pulls``."""

    family_class = BanditFamily


class TabularMDPEnv(SingleTaskEnv):
    """``metadapt/TabularMDP-v0``: options ``states``, ``actions``, ``horizon``, ``episodes``."""

    family_class = TabularMDPFamily


class Navigation2DEnv(SingleTaskEnv):
    """``metadapt/Navigation2D-v0``: options ``goal_low``, ``goal_high``, ``horizon``, ``reward``."""

    family_class = NavigationFamily


class PointRobotEnv(SingleTaskEnv):
    """``metadapt/PointRobot-v0`` (PEARL's point robot): option ``horizon``; ``reset(options=
    {"reset_noise": u})`` starts at ``2u − 1`` instead of a fresh draw."""

    family_class = PointRobotFamily


class SparsePointRobotEnv(SingleTaskEnv):
    """``metadapt/SparsePointRobot-v0``: options ``horizon``, ``goal_radius``, ``reward``."""

    family_class = SparsePointRobotFamily


class HalfCheetahVelEnv(SingleTaskEnv):
    """``metadapt/HalfCheetahVel-v0`` (needs ``metadapt[mujoco]``): options ``horizon``, ``velocity_low``,
    ``velocity_high``, ``observation``; ``reset(options={"reset_noise": u})`` starts from the 18 given
    draws."""

    family_class = HalfCheetahVelFamily


class HalfCheetahDirEnv(SingleTaskEnv):
    """``metadapt/HalfCheetahDir-v0`` (needs ``metadapt[mujoco]``): options ``horizon``, ``observation``."""

    family_class = HalfCheetahDirFamily


IDS = {"metadapt/Bandits-v0": BanditEnv, "metadapt/TabularMDP-v0": TabularMDPEnv,
       "metadapt/Navigation2D-v0": Navigation2DEnv, "metadapt/PointRobot-v0": PointRobotEnv,
       "metadapt/SparsePointRobot-v0": SparsePointRobotEnv, "metadapt/HalfCheetahVel-v0": HalfCheetahVelEnv,
       "metadapt/HalfCheetahDir-v0": HalfCheetahDirEnv}
for _id, _cls in IDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=f"{__name__}:{_cls.__name__}")
