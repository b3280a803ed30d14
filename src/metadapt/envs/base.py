"""Environments with a task distribution, stepped for many tasks at once.

An :class:`EnvFamily` is the reinforcement-learning sibling of a task family: a recipe's ``task:``
section names it, and ``family.tasks(split).sample(n, generator)`` draws ``n`` tasks, returned as an
:class:`EnvBatch` — the tasks' parameters (a bandit's arm probabilities, an MDP's reward means and
transitions, a goal) as tensors with a leading task axis. Stepping is functional and batched:

    state, obs = env.reset(copies, generator)                  # [T, C, ...]: C copies of each task
    state, obs, reward, done = env.step(state, action, noise)  # one tensor computation for all T·C

``noise`` holds the step's random draws, ``[T, C, noise_size]`` standard uniforms
(``env.noise(copies, generator)``): the environment itself is a pure function of its state, action
and noise, so a batched step equals the same step of each single-task environment
(:mod:`metadapt.envs.gym`) given the same draws, and every draw comes from the run's generator.
An episode is ``horizon`` steps; ``done`` marks the step an episode terminates early (2D navigation
reaching its goal), after which the rollout masks the steps that follow (``experience.rollout``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch

from metadapt.tasks.family import TaskFamily

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class EnvBatch:
    """``T`` tasks of one environment family. Subclasses are frozen dataclasses whose tensor fields
    carry a leading task axis, and implement :meth:`reset` and :meth:`step`."""

    #: observation shape of one step, discrete action count (``None`` for continuous actions) and the
    #: continuous action size and bound (actions are clipped to ``[-bound, bound]``)
    observation_shape: ClassVar[tuple[int, ...]] = (1,)
    actions: ClassVar[int | None] = None
    action_dim: ClassVar[int] = 0
    action_bound: ClassVar[float] = 1.0
    #: uniform draws per step of one copy
    noise_size: ClassVar[int] = 0

    horizon: int

    # ----- the task axis ---------------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}

    @property
    def num_tasks(self) -> int:
        return next(iter(self._tensors().values())).shape[0]

    def to(self, device: torch.device | str) -> EnvBatch:
        return replace(self, **{k: v.to(device) for k, v in self._tensors().items()})

    def __getitem__(self, index: slice | int) -> EnvBatch:
        """Select tasks along the task axis (an int keeps the axis, length 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return replace(self, **{k: v[index] for k, v in self._tensors().items()})

    @property
    def device(self) -> torch.device:
        return next(iter(self._tensors().values())).device

    @property
    def observation_bounds(self) -> tuple[float, float]:
        """The range of every observation entry (the single-task environment's observation space)."""
        return 0.0, 1.0

    @property
    def discrete(self) -> bool:
        return self.actions is not None

    def task_features(self) -> torch.Tensor:
        """``[T, D]``: every field that defines a task (an arm's probabilities, a goal, an MDP's reward
        means and transitions), flattened — what a critic that knows the task reads during training
        (``model.critic: task``); a policy never sees it."""
        return torch.cat([v.flatten(1).float() for v in self._tensors().values()], -1)

    # ----- stepping ---------------------------------------------------------------------------------
    def noise(self, copies: int, generator: torch.Generator) -> torch.Tensor:
        """One step's random draws for ``copies`` copies of every task: ``[T, C, noise_size]``."""
        return torch.rand(self.num_tasks, copies, self.noise_size, generator=generator).to(self.device)

    def reset(self, copies: int, generator: torch.Generator) -> tuple[State, torch.Tensor]:
        """Start an episode in ``copies`` copies of every task: the state and the first observation."""
        raise NotImplementedError

    def step(self, state: State, action: torch.Tensor,
             noise: torch.Tensor) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(state, observation, reward [T, C], done [T, C])`` after ``action`` (``[T, C]`` indices,
        or ``[T, C, action_dim]``)."""
        raise NotImplementedError

    def oracle_return(self) -> torch.Tensor | None:
        """``[T]`` expected return of one episode of the policy that knows the task, where it is
        known in closed form (a bandit: ``horizon · max p``), else ``None``."""
        return None


@dataclass(frozen=True)
class EnvSource:
    """``sample(n, generator) -> EnvBatch``: the task distribution of one split of a family."""

    family: EnvFamily
    split: str

    def sample(self, num_tasks: int, generator: torch.Generator) -> EnvBatch:
        return self.family.sample(num_tasks, generator)


class EnvFamily(TaskFamily):
    """Base of the environment families: a task family whose tasks are environments.

    Subclasses set ``Options`` and implement :meth:`sample`; the task distribution is the same
    for training, validation and test (each draws from its own generator stream)."""

    #: policies fit any family; the algorithm builds its own from the family's shapes
    models = None
    default_model = "recurrent-policy"
    reinforcement = True
    #: what one trial is, for the report: "pulls", "episodes"
    trial_unit = "episodes"

    def sample(self, num_tasks: int, generator: torch.Generator) -> EnvBatch:
        raise NotImplementedError

    @property
    def episodes_per_trial(self) -> int:
        """Episodes of one task an agent meets in a trial (bandits: one episode of ``n`` pulls)."""
        return int(getattr(self.options, "episodes", 1))

    def probe(self) -> EnvBatch:
        """One task drawn from a generator of its own, to read shapes from."""
        return self.sample(1, torch.Generator().manual_seed(0))

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> EnvSource:
        return EnvSource(self, split)

    @property
    def metric(self) -> str:
        return "return"

    @classmethod
    def check_config(cls, config) -> None:
        from metadapt.errors import UserError
        from metadapt.registry import lookup

        if not getattr(lookup("algorithm", config.algorithm.name).target, "reinforcement", False):
            raise UserError(f"task.family={config.task.family} is an environment family; it needs a "
                            f"meta-reinforcement-learning algorithm (algorithm.name=rl2 or maml-rl), not "
                            f"{config.algorithm.name}")
