"""HalfCheetah-Vel and HalfCheetah-Dir, the locomotion tasks of MAML (Finn et al. 2017, §5.3) and PEARL
(Rakelly et al. 2019, §6.1), simulated by MuJoCo (``pip install 'metadapt[mujoco]'``: the ``mujoco``
package and Gymnasium's ``half_cheetah.xml``, the model both papers' code loads).

Every step holds one action for ``frame_skip = 5`` physics steps of 0.01 s (``dt = 0.05``) and pays

    Vel:  r = −|v − v_goal| − 0.05 ‖a‖²          v_goal ~ U[0, 3] (PEARL; MAML: U[0, 2])
    Dir:  r = d · v − 0.05 ‖a‖²                   d ∈ {−1, +1}, each with probability ½
                                                   (PEARL: the two tasks; MAML: a fair coin)

with ``v = (x_{t+1} − x_t) / dt`` the torso's forward velocity and actions clipped to ``[−1, 1]⁶``.
Episodes are 200 steps (PEARL's ``max_path_length``) and never end early. The observation is the one
of PEARL's and MAML's code (rllab's half-cheetah, oyster's ``half_cheetah.py``): the joint positions
without the forward position, the 9 joint velocities and the torso's position, 20 numbers; Gymnasium's
``HalfCheetah-v5`` observation (17: without the torso) is ``observation: gymnasium``. Episodes start at
the model's initial pose with ``qpos += U[−0.1, 0.1]``, ``qvel += 0.1·N(0, 1)`` per coordinate, drawn
from the run's generator.

All tasks and copies step together through ``mujoco.rollout`` (MuJoCo's batched C rollout, threads
``mujoco_threads``): the state is MuJoCo's full physics state, ``[T, C, 19]`` float64 (time, ``qpos``,
``qvel``); each step starts the constraint solver cold (``qacc_warmstart`` zero), the same in the
batched and the single-task environment.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch

from metadapt.envs.base import EnvBatch, EnvFamily, State
from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import register

FRAME_SKIP = 5
CONTROL_COST = 0.05       # 0.5 · 10⁻¹, as rllab's and oyster's half-cheetah
TORSO_HEIGHT = 0.7        # the torso body's z in half_cheetah.xml; its x and z joints slide it from there
INSTALL = "pip install 'metadapt[mujoco]'"


def _mujoco():
    try:
        import mujoco
        import mujoco.rollout  # noqa: F401
    except ImportError as error:
        raise UserError(f"the half-cheetah tasks need MuJoCo: {INSTALL}") from error
    return mujoco


@lru_cache(maxsize=1)
def _model():
    """MuJoCo's half-cheetah, from Gymnasium's copy of ``half_cheetah.xml``. Its ``settotalmass``
    attribute, deprecated by MuJoCo 3.3, is applied after compiling, as MuJoCo advises (the same
    masses, inertias and trajectories, checked bit for bit)."""
    mujoco = _mujoco()
    try:
        import gymnasium
    except ImportError as error:
        raise UserError(f"the half-cheetah tasks need Gymnasium's model files: {INSTALL}") from error
    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", "half_cheetah.xml")
    if not os.path.exists(path):
        raise UserError(f"Gymnasium has no {path}: {INSTALL}")
    with open(path) as file:
        xml = file.read()
    total = re.search(r'\ssettotalmass="([^"]*)"', xml)
    model = mujoco.MjModel.from_xml_string(xml.replace(total.group(0), "") if total else xml, {})
    if total:
        mujoco.mj_setTotalmass(model, float(total.group(1)))
        mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


_local = threading.local()


def _datas(threads: int) -> list:
    """``threads`` scratch ``MjData`` (one per rollout thread), kept per Python thread."""
    mujoco, model = _mujoco(), _model()
    have = getattr(_local, "datas", [])
    if len(have) < threads:
        have = have + [mujoco.MjData(model) for _ in range(threads - len(have))]
        _local.datas = have
    return have[:threads]


@dataclass(frozen=True)
class HalfCheetah(EnvBatch):
    """``goal_velocity [T]`` (Vel) or ``direction [T]`` of ±1 (Dir): one of them is set."""

    action_dim: ClassVar[int] = 6
    action_bound: ClassVar[float] = 1.0
    noise_size: ClassVar[int] = 0

    goal: torch.Tensor = None
    task_kind: str = "velocity"      # "velocity": goal is v_goal; "direction": goal is d
    torso_in_observation: bool = True
    threads: int = 1

    def __post_init__(self):
        if self.task_kind not in ("velocity", "direction"):
            raise ValueError(f"task_kind must be velocity or direction, not {self.task_kind}")

    @property
    def observation_bounds(self):
        return -float("inf"), float("inf")

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return (20,) if self.torso_in_observation else (17,)

    def _observe(self, physics: torch.Tensor) -> torch.Tensor:
        """``(qpos[1:], qvel[, torso position])`` from the state ``[…, 19]`` (time, qpos, qvel). The
        torso hangs from two slide joints (x, z) and a hinge at its own origin, so its position is
        ``(qpos[0], 0, 0.7 + qpos[1])`` exactly (checked against MuJoCo's kinematics in the tests)."""
        qpos, qvel = physics[..., 1:10], physics[..., 10:19]
        parts = [qpos[..., 1:], qvel]
        if self.torso_in_observation:
            parts.append(torch.stack([qpos[..., 0], torch.zeros_like(qpos[..., 0]),
                                      TORSO_HEIGHT + qpos[..., 1]], -1))
        return torch.cat(parts, -1).to(self.goal.dtype)

    def forward_velocity(self, observations: torch.Tensor) -> torch.Tensor:
        """The torso's forward velocity ``qvel[0]`` of observations ``[…, 17 or 20]``."""
        return observations[..., 8]

    def reset_noise(self, copies: int, generator: torch.Generator) -> torch.Tensor:
        """``[T, C, 18]`` draws of a reset: 9 standard uniforms (positions) and 9 standard normals."""
        shape = (self.num_tasks, copies, 9)
        uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
        normal = torch.randn(shape, generator=generator, dtype=torch.float64)
        return torch.cat([uniform, normal], -1).to(self.device)

    def start(self, noise: torch.Tensor) -> tuple[State, torch.Tensor]:
        model = _model()
        init = torch.as_tensor(model.qpos0, dtype=torch.float64, device=noise.device)
        qpos = init + 0.2 * noise[..., :9] - 0.1
        qvel = 0.1 * noise[..., 9:]
        physics = torch.cat([torch.zeros_like(qpos[..., :1]), qpos, qvel], -1)
        return {"physics": physics}, self._observe(physics)

    def reset(self, copies, generator):
        return self.start(self.reset_noise(copies, generator))

    def simulate(self, physics: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """MuJoCo's state after holding ``action`` for ``FRAME_SKIP`` physics steps, all at once."""
        mujoco = _mujoco()
        shape = physics.shape
        states = physics.reshape(-1, shape[-1]).detach().cpu().numpy().astype(np.float64)
        controls = action.reshape(-1, 1, self.action_dim).detach().cpu().numpy().astype(np.float64)
        controls = np.ascontiguousarray(np.repeat(controls, FRAME_SKIP, axis=1))
        out, _ = mujoco.rollout.rollout(_model(), _datas(self.threads), np.ascontiguousarray(states),
                                        controls)
        return torch.from_numpy(np.ascontiguousarray(out[:, -1])).reshape(shape).to(physics.device)

    def step(self, state: State, action, noise):
        action = action.clamp(-self.action_bound, self.action_bound)
        before = state["physics"]
        after = self.simulate(before, action)
        dt = FRAME_SKIP * _model().opt.timestep
        velocity = ((after[..., 1] - before[..., 1]) / dt).to(self.goal.dtype)
        goal = self.goal[:, None]
        forward = -(velocity - goal).abs() if self.task_kind == "velocity" else goal * velocity
        reward = forward - CONTROL_COST * (action.to(self.goal.dtype) ** 2).sum(-1)
        done = torch.zeros(reward.shape, dtype=torch.bool, device=reward.device)
        return {"physics": after}, self._observe(after), reward, done


@dataclass
class HalfCheetahVelOptions:
    horizon: int = option(200, positive=True, high=100_000, help="steps per episode (PEARL: 200)")
    episodes: int = option(1, positive=True, high=10_000,
                           help="episodes of a trial, for agents that learn within one (RL²)")
    velocity_low: float = option(0.0, help="goal velocities ~ U[velocity_low, velocity_high] (PEARL: 0)")
    velocity_high: float = option(3.0, help="… (PEARL: 3; MAML: 2)")
    observation: str = option("pearl", choices=("pearl", "gymnasium"),
                              help="pearl: qpos[1:], qvel, torso position (20, rllab's and oyster's); "
                                   "gymnasium: without the torso (17, HalfCheetah-v5)")
    mujoco_threads: int = option(1, positive=True, high=256, help="threads of MuJoCo's batched rollout")


@dataclass
class HalfCheetahDirOptions:
    horizon: int = option(200, positive=True, high=100_000, help="steps per episode (PEARL: 200)")
    episodes: int = option(1, positive=True, high=10_000,
                           help="episodes of a trial, for agents that learn within one (RL²)")
    observation: str = option("pearl", choices=("pearl", "gymnasium"),
                              help="pearl: qpos[1:], qvel, torso position (20); gymnasium: without the "
                                   "torso (17)")
    mujoco_threads: int = option(1, positive=True, high=256, help="threads of MuJoCo's batched rollout")


class _CheetahFamily(EnvFamily):
    def _batch(self, goal: torch.Tensor, kind: str) -> HalfCheetah:
        o = self.options
        batch = HalfCheetah(horizon=o.horizon, goal=goal, task_kind=kind,
                            torso_in_observation=o.observation == "pearl", threads=o.mujoco_threads)
        _model()  # refuse now, in one line, where MuJoCo is missing
        return batch

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        _model()


@register("task", "half-cheetah-vel")
class HalfCheetahVelFamily(_CheetahFamily):
    """Run at an unobserved goal velocity ``v_goal ~ U[low, high]``."""

    Options = HalfCheetahVelOptions

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        low, high = config.task.velocity_low, config.task.velocity_high
        if not low < high:
            raise UserError(f"task.velocity_low={low} must be below task.velocity_high={high}")

    def sample(self, num_tasks, generator):
        o = self.options
        u = torch.rand(num_tasks, generator=generator)
        goal = o.velocity_low + (o.velocity_high - o.velocity_low) * u
        return self._batch(goal, "velocity")

    def describe(self):
        o = self.options
        return [f"- Tasks: MuJoCo half-cheetah running at a goal velocity ~ U[{o.velocity_low}, "
                f"{o.velocity_high}], reward −|v − v_goal| − 0.05‖a‖², episodes of {o.horizon} steps "
                "(Finn et al. 2017; Rakelly et al. 2019)."]


@register("task", "half-cheetah-dir")
class HalfCheetahDirFamily(_CheetahFamily):
    """Run forward or backward (``d = ±1``, unobserved)."""

    Options = HalfCheetahDirOptions

    def sample(self, num_tasks, generator):
        """Directions alternating from a first one drawn at random: each task is forward or backward
        with probability ½, and any two consecutive tasks are one of each (PEARL trains on these two)."""
        first = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
        goal = first * (1.0 - 2.0 * (torch.arange(num_tasks) % 2)).float()
        return self._batch(goal, "direction")

    def describe(self):
        return [f"- Tasks: MuJoCo half-cheetah running forward or backward (d = ±1), reward d·v − 0.05‖a‖², "
                f"episodes of {self.options.horizon} steps (Finn et al. 2017; Rakelly et al. 2019)."]
