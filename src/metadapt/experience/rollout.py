"""Rollouts of a policy in a batch of environments: every task and copy advances in one step.

``rollout`` runs ``episodes`` consecutive episodes of ``copies`` copies of each of the batch's ``T``
tasks and returns :class:`Trajectories` with axes ``[T, C, E, H, …]`` (tasks, copies, episodes,
horizon). The policy is a function ``act(observation, last, carry) -> (action, extras, carry)``:
``last`` is the previous step's :class:`Last` (``None`` at the start of the trial), ``carry`` is
whatever the policy keeps between steps — an RNN's hidden state, which therefore flows across the
episodes of a trial and is never reset between them (RL²) — and ``extras`` are tensors to keep per
step (log-probabilities, values). Every random draw, the policy's and the environment's, comes from
``generator``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from metadapt.envs.base import EnvBatch


class Last(NamedTuple):
    """The previous step, as RL²'s policy reads it: action, reward and whether it ended an episode;
    and the observation it led to (before any reset), for strategies that count transitions."""

    action: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor
    observation: torch.Tensor


@dataclass
class Trajectories:
    """``observations [T, C, E, H, *obs]``, ``actions [T, C, E, H(, d)]``, ``rewards`` and ``mask``
    ``[T, C, E, H]`` (mask 1 on steps that happened, 0 after the episode terminated; rewards there are
    0), ``dones [T, C, E, H]`` (1 on the last step of each episode), ``extras`` from the policy and
    ``next_observations`` (the observation each step led to, before any reset; for off-policy
    learners' transitions)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    dones: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    next_observations: torch.Tensor | None = None

    @property
    def episode_returns(self) -> torch.Tensor:
        """``[T, C, E]`` undiscounted return of every episode."""
        return self.rewards.sum(-1)

    def steps(self) -> int:
        """Environment steps that happened (masked steps excluded)."""
        return int(self.mask.sum())

    def trials(self) -> Trajectories:
        """The episodes of each trial joined into one sequence: time axis ``E·H``, shape
        ``[T, C, E·H, …]`` (for RL², whose return and advantages run across a whole trial)."""
        def join(x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2, 3)
        following = None if self.next_observations is None else join(self.next_observations)
        return Trajectories(join(self.observations), join(self.actions), join(self.rewards), join(self.mask),
                            join(self.dones), {k: join(v) for k, v in self.extras.items()}, following)


Policy = Callable[[torch.Tensor, Last | None, Any], tuple[torch.Tensor, dict[str, torch.Tensor], Any]]


@torch.no_grad()
def rollout(env: EnvBatch, act: Policy, copies: int, episodes: int, generator: torch.Generator,
            carry: Any = None) -> tuple[Trajectories, Any]:
    """Run ``episodes`` consecutive episodes of ``copies`` copies of every task of ``env``; returns
    the trajectories and the policy's final ``carry``."""
    obs_steps, act_steps, rew_steps, mask_steps, done_steps, next_steps = [], [], [], [], [], []
    extra_steps: dict[str, list[torch.Tensor]] = {}
    last = None
    for _ in range(episodes):
        state, obs = env.reset(copies, generator)
        alive = torch.ones(env.num_tasks, copies, dtype=torch.bool, device=env.device)
        for t in range(env.horizon):
            action, extras, carry = act(obs, last, carry)
            state, next_obs, reward, terminated = env.step(state, action, env.noise(copies, generator))
            reward = reward * alive
            ended = ~alive | terminated if t < env.horizon - 1 else torch.ones_like(alive)
            obs_steps.append(obs)
            next_steps.append(next_obs)
            act_steps.append(action)
            rew_steps.append(reward)
            mask_steps.append(alive.to(reward.dtype))
            done_steps.append(ended.to(reward.dtype))
            for k, v in extras.items():
                extra_steps.setdefault(k, []).append(v)
            last = Last(action, reward, ended.to(reward.dtype), next_obs)
            alive = alive & ~terminated
            obs = next_obs
    t, c, e, h = env.num_tasks, copies, episodes, env.horizon

    def stack(steps: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(steps, 2)                      # [T, C, E·H, ...]
        return x.reshape(t, c, e, h, *x.shape[3:])

    return Trajectories(stack(obs_steps), stack(act_steps), stack(rew_steps), stack(mask_steps),
                        stack(done_steps), {k: stack(v) for k, v in extra_steps.items()},
                        stack(next_steps)), carry
