"""Hand-designed strategies for random tabular MDPs, the baselines of RL² (Duan et al. 2016, §3.2),
each a policy ``act(observation, last, carry)`` for :func:`metadapt.experience.rollout`.

Each keeps the counts of what it saw — visits ``n(s, a)``, reward sums and transition counts
``n(s, a, s')`` — and at the start of every episode plans the whole episode by backward induction
(``plan``) in a model of the MDP:

- ``random``: a uniformly random action.
- ``greedy``: the posterior-mean MDP, rewards ``(μ₀ + Σr) / (1 + n)`` (prior N(1, 1) on the mean,
  unit reward noise: the environment's own prior) and transitions ``(1 + n(s, a, ·)) / (S + n(s, a))``
  (flat Dirichlet prior).
- ``psrl`` (posterior sampling, Osband, Russo & Van Roy 2013): one MDP drawn from that posterior,
  reward means ``~ N((μ₀ + Σr) / (1 + n), 1 / (1 + n))``, transitions ``~ Dirichlet(1 + n(s, a, ·))``.

Posterior draws come from a NumPy generator seeded from the run's torch generator (torch has no
seeded Gamma sampler), so every draw is still the run's.
"""
from __future__ import annotations

import numpy as np
import torch

from metadapt.experience import Last

PRIOR_MEAN = 1.0  # reward means ~ N(1, 1): the tabular family's prior


def plan(rewards: torch.Tensor, transitions: torch.Tensor, horizon: int) -> torch.Tensor:
    """``[H, ..., S]`` optimal action at each step-to-go and state of finite-horizon MDPs with reward
    means ``[..., S, A]`` and transitions ``[..., S, A, S]`` (``plan[t]``: the action at step ``t``)."""
    v = torch.zeros(rewards.shape[:-1], dtype=rewards.dtype, device=rewards.device)
    actions = []
    for _ in range(horizon):
        q = rewards + (transitions @ v[..., None, :, None])[..., 0]
        v, a = q.max(-1)
        actions.append(a)
    return torch.stack(actions[::-1])


class MDPStrategy:
    """Base: keeps the counts and replans at the start of every episode (``model``)."""

    name = "strategy"

    def __init__(self, states: int, actions: int, horizon: int, generator: torch.Generator):
        self.states, self.actions, self.horizon, self.generator = states, actions, horizon, generator
        self.rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,), generator=generator)))

    def act(self, obs: torch.Tensor, last: Last | None, carry):
        # the counts and the planning live on the CPU whatever device the environments step on
        s_now = obs.argmax(-1).cpu()
        if last is None:
            shape = (*obs.shape[:2], self.states, self.actions)
            zeros = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
            carry = {"n": zeros(shape), "r": zeros(shape), "next": zeros(*shape, self.states), "t": 0,
                     "s": s_now}
        else:
            t_idx, c_idx = torch.meshgrid(*(torch.arange(d) for d in obs.shape[:2]), indexing="ij")
            s, a, s_next = carry["s"], last.action.cpu(), last.observation.argmax(-1).cpu()
            carry["n"][t_idx, c_idx, s, a] += 1
            carry["r"][t_idx, c_idx, s, a] += last.reward.double().cpu()
            carry["next"][t_idx, c_idx, s, a, s_next] += 1
            carry["t"] += 1
            carry["s"] = s_now
        step = carry["t"] % self.horizon
        if step == 0:
            carry["plan"] = self.model_plan(carry)
        if carry.get("plan") is None:
            action = torch.randint(self.actions, obs.shape[:2], generator=self.generator)
        else:
            action = carry["plan"][step].gather(-1, s_now[..., None])[..., 0]
        return action.to(obs.device), {}, carry

    def model_plan(self, carry) -> torch.Tensor | None:
        return None


class RandomMDP(MDPStrategy):
    name = "random"


class GreedyMDP(MDPStrategy):
    name = "greedy"

    def model_plan(self, carry):
        n = carry["n"]
        rewards = (PRIOR_MEAN + carry["r"]) / (1 + n)
        transitions = (1 + carry["next"]) / (self.states + n[..., None])
        return plan(rewards, transitions, self.horizon)


class PSRL(MDPStrategy):
    name = "psrl"

    def model_plan(self, carry):
        n = carry["n"]
        mean = (PRIOR_MEAN + carry["r"]) / (1 + n)
        rewards = mean + torch.as_tensor(self.rng.standard_normal(mean.shape)) / torch.sqrt(1 + n)
        gamma = torch.as_tensor(self.rng.standard_gamma((1 + carry["next"]).numpy()))
        return plan(rewards, gamma / gamma.sum(-1, keepdim=True), self.horizon)


MDP_STRATEGIES = {"random": RandomMDP, "greedy": GreedyMDP, "psrl": PSRL}
