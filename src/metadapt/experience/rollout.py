"""Rollouts of a policy in a batch of environments: every task and copy advances in one step.

``rollout`` runs ``episodes`` consecutive episodes of ``copies`` copies of each of the batch's ``T``
tasks and returns :class:`Trajectories` with axes ``[T, C, E, H, …]`` (tasks, copies, episodes,
horizon). :func:`stream` runs episodes back to back in one environment per task until a budget of
steps, as rllab's samplers do, and returns them packed along time (``[T, 1, 1, L]``, with each step's
index within its episode in ``time``). The policy is a function ``act(observation, last, carry) ->
(action, extras, carry)``: ``last`` is the previous step's :class:`Last` (``None`` at the start of the
trial), ``carry`` is whatever the policy keeps between steps — an RNN's hidden state, which therefore
flows across the episodes of a trial and is never reset between them (RL²) — and ``extras`` are tensors
to keep per step (log-probabilities, values). Every random draw, the policy's and the environment's,
comes from ``generator``.
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
    learners' transitions). Trajectories packed along time by :func:`stream` also have ``time``
    (each step's index within its episode), ``dones`` ending every episode, and ``taken`` (the steps
    the environments took, those of the dropped unfinished episodes included)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    dones: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    next_observations: torch.Tensor | None = None
    time: torch.Tensor | None = None
    taken: int | None = None

    @property
    def packed(self) -> bool:
        """Several episodes one after another along the time axis (:func:`stream`)."""
        return self.time is not None

    @property
    def episode_returns(self) -> torch.Tensor:
        """``[T, C, E]`` undiscounted return of every episode (one episode per row, not packed)."""
        if self.packed:
            raise ValueError("packed trajectories hold several episodes per row: use mean_episode_return()")
        return self.rewards.sum(-1)

    def episode_counts(self) -> torch.Tensor:
        """``[T]`` episodes of every task."""
        return (self.dones * self.mask).sum((1, 2, 3))

    def mean_episode_return(self) -> torch.Tensor:
        """``[T]`` mean undiscounted return of every task's episodes."""
        if not self.packed:
            return self.episode_returns.mean((1, 2))
        return self.rewards.sum((1, 2, 3)) / self.episode_counts().clamp(min=1)

    def episode_index(self) -> torch.Tensor:
        """``[T, C, E, H]``: which episode of its row each step belongs to (0 unless packed)."""
        if not self.packed:
            return torch.zeros_like(self.mask, dtype=torch.long)
        ends = self.dones.long()
        return ends.cumsum(-1) - ends

    def first_episode_observations(self) -> torch.Tensor:
        """``[T, N, *obs]``: every task's first episode (first row), the positions after it ended held
        at its last observation (for drawing paths)."""
        keep = (self.mask[:, 0, 0] > 0) & (self.episode_index()[:, 0, 0] == 0)
        length = int(keep.sum(-1).max())
        obs, keep = self.observations[:, 0, 0, :length], keep[:, :length]
        last = (keep.sum(-1) - 1).clamp(min=0)
        final = obs[torch.arange(obs.shape[0]), last]
        return _where(keep, obs, final[:, None])

    def steps(self) -> int:
        """Environment steps taken (masked steps excluded, unless ``taken`` counts them)."""
        return int(self.mask.sum()) if self.taken is None else self.taken

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


def _where(condition: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where`` with a ``[T, C]`` condition broadcast over the entries' trailing axes."""
    return torch.where(condition.reshape(*condition.shape, *([1] * (b.dim() - 2))), a, b)


@torch.no_grad()
def stream(env: EnvBatch, act: Policy, budget: int, generator: torch.Generator,
           shared: bool = False) -> Trajectories:
    """Episodes of every task run back to back in one environment per task, reset as each ends, until
    a budget of steps, as rllab's samplers collect them (so tasks whose episodes end early get more
    episodes):

    - ``shared=False``: each task stops once its finished episodes reach ``budget`` steps, the
      episode that reaches it kept whole (rllab's ``BatchSampler``, the MAML test script's);
    - ``shared=True``: every task stops at the first step where the batch's finished episodes reach
      ``budget`` steps in all, and the episodes still running are dropped (rllab's
      ``VectorizedSampler`` with one environment per task, MAML's meta-training).

    Returns :class:`Trajectories` packed along time, ``[T, 1, 1, L]`` (``time``: each step's index
    within its episode; ``mask`` 1 on the kept episodes' steps). The policy sees no ``last`` step.
    """
    t_count = env.num_tasks
    state, obs = env.reset(1, generator)
    time = torch.zeros(t_count, 1, dtype=torch.long, device=env.device)
    finished = torch.zeros(t_count, dtype=torch.long, device=env.device)
    stop = torch.full((t_count,), -1, dtype=torch.long, device=env.device)
    limit = (budget if not shared else -(-budget // t_count)) + env.horizon   # every task has stopped by then
    steps: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "act", "rew", "end", "time", "next")}
    extra_steps: dict[str, list[torch.Tensor]] = {}
    carry = None
    for step in range(limit):
        action, extras, carry = act(obs, None, carry)
        state, next_obs, reward, terminated = env.step(state, action, env.noise(1, generator))
        ended = terminated | (time == env.horizon - 1)
        for key, value in (("obs", obs), ("act", action), ("rew", reward), ("end", ended), ("time", time),
                           ("next", next_obs)):
            steps[key].append(value)
        for k, v in extras.items():
            extra_steps.setdefault(k, []).append(v)
        finished += torch.where(ended, time + 1, 0).sum(1)
        reached = finished >= budget if not shared else (finished.sum() >= budget).expand(t_count)
        stop = torch.where((stop < 0) & reached, step, stop)
        if bool((stop >= 0).all()):
            break
        fresh_state, fresh_obs = env.reset(1, generator)
        state = {k: _where(ended, fresh_state[k], v) for k, v in state.items()}
        obs = _where(ended, fresh_obs, next_obs)
        time = torch.where(ended, 0, time + 1)
    else:
        raise RuntimeError(f"stream: the budget of {budget} steps was not reached in {limit} steps")

    def stack(values: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(values, 2)[:, :, None]                  # [T, 1, 1, L, ...]

    ends = stack(steps["end"])
    episode = ends.long().cumsum(-1) - ends.long()
    kept = ends.long().cumsum(-1).gather(-1, stop.reshape(t_count, 1, 1, 1))   # episodes finished by the stop
    mask = (episode < kept).to(stack(steps["rew"]).dtype)
    return Trajectories(stack(steps["obs"]), stack(steps["act"]), stack(steps["rew"]) * mask, mask,
                        ends.to(mask.dtype), {k: stack(v) for k, v in extra_steps.items()},
                        stack(steps["next"]), stack(steps["time"]), int((stop + 1).sum()))
