"""The recurrent actor-critic of RL² (Duan et al. 2016): a GRU over everything a reinforcement-learning
algorithm sees — the observation, the previous action (one-hot), reward and episode-termination
flag — with a categorical policy head and a value head on its hidden state.

The same GRU runs one step at a time while acting (:meth:`RecurrentPolicy.step`) and over whole
trials when training (:meth:`RecurrentPolicy.forward`); both give the same numbers. Heads are
initialised as CleanRL's PPO does: orthogonal weights, gain 0.01 for the policy (a nearly uniform
first policy) and 1 for the value.

``critic: separate`` gives the value its own GRU over the same inputs, so the policy's recurrent
features are shaped by the policy gradient alone (Andrychowicz et al. 2021, "What matters in
on-policy reinforcement learning?", found separate policy and value networks better for PPO); the
carried hidden state is then both GRUs' states side by side, ``[1, B, H + H_c]`` (``critic_hidden``
sets ``H_c``; 0 keeps ``H``).

``critic: task`` is that separate value GRU with the task's own description (:meth:`EnvBatch.task_features
<metadapt.envs.base.EnvBatch.task_features>`: the arms' probabilities, the MDP, the goal) appended to
its inputs at every step — an asymmetric actor-critic (Pinto et al. 2018, "Asymmetric actor critic for
image-based robot learning"). Only training reads the value, so the policy still acts on its history
alone, in training and at test time; what changes is the baseline: ``V(h_t, task)`` no longer has to
average over the tasks the history cannot yet tell apart, which removes that spread from the
advantages of a trial's early, exploratory actions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metadapt.options import option
from metadapt.registry import register


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


CRITIC_HELP = ("shared: one GRU feeds the policy and the value heads; separate: the value has its own GRU "
               "(model.critic_hidden units; as many as the policy's by default, twice the compute); task: "
               "that GRU also reads the task's description (training only: the policy still sees only its "
               "history)")
CRITICS = ("shared", "separate", "task")
CRITIC_HIDDEN_HELP = "units of a separate or task critic's GRU (0: as many as the policy's)"


@dataclass
class RecurrentPolicyOptions:
    hidden: int = option(256, positive=True, high=100_000, help="GRU units (RL²: 256)")
    critic: str = option("shared", choices=CRITICS, help=CRITIC_HELP)
    critic_hidden: int = option(0, low=0, high=100_000, help=CRITIC_HIDDEN_HELP)


@register("model", "recurrent-policy")
class RecurrentPolicy(nn.Module):
    """``observation_size`` inputs per step, ``actions`` discrete actions, a GRU of ``hidden`` units."""

    Options = RecurrentPolicyOptions
    continuous = False

    def __init__(self, observation_size: int, actions: int, hidden: int = 256, critic: str = "shared",
                 critic_hidden: int = 0):
        super().__init__()
        self.actions, self.hidden = actions, hidden
        self.gru = nn.GRU(observation_size + actions + 2, hidden, batch_first=True)
        self.policy = _orthogonal(nn.Linear(hidden, actions), 0.01)
        self.value = _orthogonal(nn.Linear(hidden, 1), 1.0)
        self._add_critic(critic, critic_hidden)

    def _add_critic(self, critic: str, critic_hidden: int = 0) -> None:
        """The value's own GRU when ``critic`` is ``separate`` (drawn after every other weight, so the
        shared model's initialization is the same with either); with ``task`` it is drawn by
        :meth:`know_task`, once the task description's size is known."""
        if critic not in CRITICS:
            raise ValueError(f"critic must be one of {', '.join(CRITICS)}, not {critic!r}")
        self.critic = critic
        self.critic_hidden = self.hidden if critic == "shared" or not critic_hidden else critic_hidden
        self.critic_gru = None
        if critic == "separate":
            self._critic_gru(self.gru.input_size)

    def _critic_gru(self, input_size: int) -> None:
        self.critic_gru = nn.GRU(input_size, self.critic_hidden, batch_first=True)
        if self.critic_hidden != self.hidden:  # the value head reads the critic's GRU
            self.value = _orthogonal(nn.Linear(self.critic_hidden, 1), 1.0)

    def know_task(self, task_size: int) -> None:
        """Give a ``critic: task`` model its value GRU, reading the step inputs and ``task_size`` more."""
        if self.critic != "task":
            raise ValueError("know_task is for critic: task")
        self._critic_gru(self.gru.input_size + task_size)

    @property
    def reads_task(self) -> bool:
        """Whether the value needs the task's description (``task=`` of :meth:`forward`)."""
        return self.critic == "task"

    @classmethod
    def from_options(cls, options: RecurrentPolicyOptions, input_shape: tuple[int, ...],
                     outputs: int) -> RecurrentPolicy:
        """``input_shape``: one observation's shape; ``outputs``: the number of actions."""
        size = 1
        for d in input_shape:
            size *= int(d)
        return cls(size, outputs, options.hidden, options.critic, options.critic_hidden)

    def describe(self) -> str:
        if self.critic == "separate":
            return (f"a GRU of {self.hidden} units with a policy head, and one of {self.critic_hidden} with "
                    "a value head (RL²)")
        if self.critic == "task":
            return (f"a GRU of {self.hidden} units with a policy head, and one of {self.critic_hidden} that "
                    "also reads the task with a value head (RL² with an asymmetric critic)")
        return f"a GRU of {self.hidden} units with policy and value heads (RL²)"

    def inputs(self, observation: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor,
               prev_done: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., F]``: observation, one-hot previous action, previous reward and termination flag
        (all zero where ``first`` marks the first step of a trial)."""
        one_hot = nn.functional.one_hot(prev_action.long(), self.actions).to(observation.dtype)
        extra = torch.cat([one_hot, prev_reward[..., None], prev_done[..., None]], -1)
        if first is not None:
            extra = extra * (1 - first.to(extra.dtype))[..., None]
        return torch.cat([observation.flatten(prev_action.dim()), extra], -1)

    def distribution(self, logits: torch.Tensor) -> torch.distributions.Distribution:
        """The action distribution at the policy head's output."""
        return torch.distributions.Categorical(logits=logits)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None,
                task: torch.Tensor | None = None):
        """``inputs [B, N, F]`` → logits ``[B, N, A]``, values ``[B, N]``, final hidden ``[1, B, H]``
        (``[1, B, H + H_c]`` with a separate critic: the policy's state, then the value's). ``task [B, D]``:
        each sequence's task description, which a ``critic: task`` model needs."""
        if self.critic == "shared":
            out, hidden = self.gru(inputs, hidden)
            return self.policy(out), self.value(out)[..., 0], hidden
        if self.critic_gru is None:
            raise ValueError("a critic: task model needs know_task(size) before use")
        critic_inputs = inputs
        if self.reads_task:
            if task is None:
                raise ValueError("a critic: task model's value reads the task: pass task=[B, D]")
            critic_inputs = torch.cat([inputs, task[:, None, :].expand(-1, inputs.shape[1], -1)], -1)
        own, critic = (None, None) if hidden is None else hidden.split([self.hidden, self.critic_hidden], -1)
        out, own = self.gru(inputs, own)
        critic_out, critic = self.critic_gru(critic_inputs, critic)
        return self.policy(out), self.value(critic_out)[..., 0], torch.cat([own, critic], -1)

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None,
             task: torch.Tensor | None = None):
        """One step for a batch ``inputs [B, F]``: logits ``[B, A]``, values ``[B]``, hidden."""
        logits, values, hidden = self(inputs[:, None], hidden, task)
        return logits[:, 0], values[:, 0], hidden


@dataclass
class RecurrentGaussianPolicyOptions:
    hidden: int = option(256, positive=True, high=100_000, help="GRU units (RL²: 256)")
    critic: str = option("shared", choices=CRITICS, help=CRITIC_HELP)
    critic_hidden: int = option(0, low=0, high=100_000, help=CRITIC_HIDDEN_HELP)
    init_std: float = option(1.0, positive=True, help="initial standard deviation of every action entry")


@register("model", "recurrent-gaussian-policy")
class RecurrentGaussianPolicy(RecurrentPolicy):
    """RL²'s GRU for continuous actions: the previous action enters as it is (zeros at a trial's start),
    and the policy head gives the mean of a Gaussian whose log standard deviation is a learned
    state-independent vector (``log_std``)."""

    Options = RecurrentGaussianPolicyOptions
    continuous = True

    def __init__(self, observation_size: int, action_size: int, hidden: int = 256, init_std: float = 1.0,
                 critic: str = "shared", critic_hidden: int = 0):
        nn.Module.__init__(self)
        self.actions, self.hidden = action_size, hidden
        self.gru = nn.GRU(observation_size + action_size + 2, hidden, batch_first=True)
        self.policy = _orthogonal(nn.Linear(hidden, action_size), 0.01)
        self.value = _orthogonal(nn.Linear(hidden, 1), 1.0)
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))
        self._add_critic(critic, critic_hidden)

    @classmethod
    def from_options(cls, options: RecurrentGaussianPolicyOptions, input_shape: tuple[int, ...],
                     outputs: int) -> RecurrentGaussianPolicy:
        """``input_shape``: one observation's shape; ``outputs``: the action size."""
        return cls(math.prod(input_shape), outputs, options.hidden, options.init_std, options.critic,
                   options.critic_hidden)

    def describe(self) -> str:
        own = f"a GRU of {self.critic_hidden} units"
        value = {"separate": f"{own} with a value head",
                 "task": f"{own} that also reads the task with a value head"}.get(self.critic, "a value head")
        return (f"a GRU of {self.hidden} units with a Gaussian policy head (learned σ) and {value} "
                "(RL² for continuous actions)")

    def inputs(self, observation: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor,
               prev_done: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., F]``: observation, previous action, reward and termination flag (zero at a trial's
        first step, marked by ``first``)."""
        extra = torch.cat([prev_action.to(observation.dtype), prev_reward[..., None], prev_done[..., None]],
                          -1)
        if first is not None:
            extra = extra * (1 - first.to(extra.dtype))[..., None]
        return torch.cat([observation.flatten(prev_reward.dim()), extra], -1)

    def distribution(self, means: torch.Tensor) -> torch.distributions.Distribution:
        """The action distribution at the policy head's ``means`` (independent entries)."""
        return torch.distributions.Independent(torch.distributions.Normal(means, self.log_std.exp()), 1)
