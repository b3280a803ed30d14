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

``cell: lstm`` puts LSTMs (Hochreiter & Schmidhuber 1997) where the GRUs are, their forget gates'
biases starting at 1 (Jozefowicz et al. 2015). What a bandit's history must keep is a count of
successes and failures per arm; an LSTM's additive cell state can count, where a GRU's state,
interpolated between its old value and a squashed new one, cannot count without bound (Weiss,
Goldberg & Yahav 2018, "On the practical computational power of finite precision RNNs"). The carried
state is then ``[h, c]`` side by side, ``2H`` wide (``2H + 2H_c`` with a critic of its own).
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
HIDDEN_HELP = "units of the policy's GRU or LSTM (RL²: a GRU of 256)"
CRITIC_HIDDEN_HELP = "units of a separate or task critic's GRU or LSTM (0: as many as the policy's)"
CELL_HELP = ("gru: the RL² paper's recurrent cell; lstm: an LSTM (forget-gate bias 1), whose additive cell "
             "state can count a long history's outcomes")
CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def recurrent_core(cell: str, input_size: int, hidden: int) -> nn.RNNBase:
    """A one-layer batch-first ``cell`` ("gru" or "lstm"); an LSTM's forget gates start open (bias 1)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {cell!r}")
    core = CELLS[cell](input_size, hidden, batch_first=True)
    if cell == "lstm":  # gate order: input, forget, cell, output
        with torch.no_grad():
            core.bias_ih_l0[hidden:2 * hidden].fill_(1.0)
            core.bias_hh_l0[hidden:2 * hidden].zero_()
    return core


def run_core(core: nn.RNNBase, inputs: torch.Tensor, state: torch.Tensor | None):
    """``core`` over ``inputs [B, N, F]`` from ``state`` (an LSTM's ``[1, B, 2H]`` is ``[h, c]``):
    outputs ``[B, N, H]`` and the final state in the same layout."""
    if isinstance(core, nn.LSTM):
        pair = None if state is None else tuple(x.contiguous() for x in state.chunk(2, -1))
        out, (h, c) = core(inputs, pair)
        return out, torch.cat([h, c], -1)
    return core(inputs, state)


@dataclass
class RecurrentPolicyOptions:
    hidden: int = option(256, positive=True, high=100_000, help=HIDDEN_HELP)
    critic: str = option("shared", choices=CRITICS, help=CRITIC_HELP)
    critic_hidden: int = option(0, low=0, high=100_000, help=CRITIC_HIDDEN_HELP)
    cell: str = option("gru", choices=tuple(CELLS), help=CELL_HELP)


@register("model", "recurrent-policy")
class RecurrentPolicy(nn.Module):
    """``observation_size`` inputs per step, ``actions`` discrete actions, a GRU (or ``cell: lstm``) of
    ``hidden`` units; the recurrent module is the attribute named after its cell (``gru``, ``lstm``)."""

    Options = RecurrentPolicyOptions
    continuous = False

    def __init__(self, observation_size: int, actions: int, hidden: int = 256, critic: str = "shared",
                 critic_hidden: int = 0, cell: str = "gru"):
        super().__init__()
        self.actions, self.hidden = actions, hidden
        self._add_core(cell, observation_size + actions + 2)
        self.policy = _orthogonal(nn.Linear(hidden, actions), 0.01)
        self.value = _orthogonal(nn.Linear(hidden, 1), 1.0)
        self._add_critic(critic, critic_hidden)

    def _add_core(self, cell: str, input_size: int) -> None:
        self.cell = cell
        setattr(self, cell, recurrent_core(cell, input_size, self.hidden))

    @property
    def core(self) -> nn.RNNBase:
        """The policy's recurrent module (``self.gru`` or ``self.lstm``)."""
        return getattr(self, self.cell)

    @property
    def critic_core(self) -> nn.RNNBase | None:
        """The value's own recurrent module (``critic_gru`` / ``critic_lstm``), ``None`` when shared."""
        return getattr(self, f"critic_{self.cell}", None)

    def _add_critic(self, critic: str, critic_hidden: int = 0) -> None:
        """The value's own GRU when ``critic`` is ``separate`` (drawn after every other weight, so the
        shared model's initialization is the same with either); with ``task`` it is drawn by
        :meth:`know_task`, once the task description's size is known."""
        if critic not in CRITICS:
            raise ValueError(f"critic must be one of {', '.join(CRITICS)}, not {critic!r}")
        self.critic = critic
        self.critic_hidden = self.hidden if critic == "shared" or not critic_hidden else critic_hidden
        if critic == "separate":
            self._critic_core(self.core.input_size)

    def _critic_core(self, input_size: int) -> None:
        setattr(self, f"critic_{self.cell}", recurrent_core(self.cell, input_size, self.critic_hidden))
        if self.critic_hidden != self.hidden:  # the value head reads the critic's GRU
            self.value = _orthogonal(nn.Linear(self.critic_hidden, 1), 1.0)

    def know_task(self, task_size: int) -> None:
        """Give a ``critic: task`` model its value GRU, reading the step inputs and ``task_size`` more."""
        if self.critic != "task":
            raise ValueError("know_task is for critic: task")
        self._critic_core(self.core.input_size + task_size)

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
        return cls(size, outputs, options.hidden, options.critic, options.critic_hidden, options.cell)

    def describe(self) -> str:
        kind = "an LSTM" if self.cell == "lstm" else "a GRU"
        if self.critic == "separate":
            return (f"{kind} of {self.hidden} units with a policy head, and one of {self.critic_hidden} with "
                    "a value head (RL²)")
        if self.critic == "task":
            return (f"{kind} of {self.hidden} units with a policy head, and one of {self.critic_hidden} that "
                    "also reads the task with a value head (RL² with an asymmetric critic)")
        return f"{kind} of {self.hidden} units with policy and value heads (RL²)"

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
        (``[1, B, H + H_c]`` with a separate critic: the policy's state, then the value's; twice each
        width with LSTMs). ``task [B, D]``: each sequence's task description, which a ``critic: task``
        model needs."""
        if self.critic == "shared":
            out, hidden = run_core(self.core, inputs, hidden)
            return self.policy(out), self.value(out)[..., 0], hidden
        if self.critic_core is None:
            raise ValueError("a critic: task model needs know_task(size) before use")
        critic_inputs = inputs
        if self.reads_task:
            if task is None:
                raise ValueError("a critic: task model's value reads the task: pass task=[B, D]")
            critic_inputs = torch.cat([inputs, task[:, None, :].expand(-1, inputs.shape[1], -1)], -1)
        width = 2 if self.cell == "lstm" else 1
        own, critic = ((None, None) if hidden is None
                       else hidden.split([width * self.hidden, width * self.critic_hidden], -1))
        out, own = run_core(self.core, inputs, own)
        critic_out, critic = run_core(self.critic_core, critic_inputs, critic)
        return self.policy(out), self.value(critic_out)[..., 0], torch.cat([own, critic], -1)

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None,
             task: torch.Tensor | None = None):
        """One step for a batch ``inputs [B, F]``: logits ``[B, A]``, values ``[B]``, hidden."""
        logits, values, hidden = self(inputs[:, None], hidden, task)
        return logits[:, 0], values[:, 0], hidden


@dataclass
class RecurrentGaussianPolicyOptions:
    hidden: int = option(256, positive=True, high=100_000, help=HIDDEN_HELP)
    critic: str = option("shared", choices=CRITICS, help=CRITIC_HELP)
    critic_hidden: int = option(0, low=0, high=100_000, help=CRITIC_HIDDEN_HELP)
    init_std: float = option(1.0, positive=True, help="initial standard deviation of every action entry")
    cell: str = option("gru", choices=tuple(CELLS), help=CELL_HELP)


@register("model", "recurrent-gaussian-policy")
class RecurrentGaussianPolicy(RecurrentPolicy):
    """RL²'s GRU for continuous actions: the previous action enters as it is (zeros at a trial's start),
    and the policy head gives the mean of a Gaussian whose log standard deviation is a learned
    state-independent vector (``log_std``)."""

    Options = RecurrentGaussianPolicyOptions
    continuous = True

    def __init__(self, observation_size: int, action_size: int, hidden: int = 256, init_std: float = 1.0,
                 critic: str = "shared", critic_hidden: int = 0, cell: str = "gru"):
        nn.Module.__init__(self)
        self.actions, self.hidden = action_size, hidden
        self._add_core(cell, observation_size + action_size + 2)
        self.policy = _orthogonal(nn.Linear(hidden, action_size), 0.01)
        self.value = _orthogonal(nn.Linear(hidden, 1), 1.0)
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))
        self._add_critic(critic, critic_hidden)

    @classmethod
    def from_options(cls, options: RecurrentGaussianPolicyOptions, input_shape: tuple[int, ...],
                     outputs: int) -> RecurrentGaussianPolicy:
        """``input_shape``: one observation's shape; ``outputs``: the action size."""
        return cls(math.prod(input_shape), outputs, options.hidden, options.init_std, options.critic,
                   options.critic_hidden, options.cell)

    def describe(self) -> str:
        kind = "an LSTM" if self.cell == "lstm" else "a GRU"
        own = f"{kind} of {self.critic_hidden} units"
        value = {"separate": f"{own} with a value head",
                 "task": f"{own} that also reads the task with a value head"}.get(self.critic, "a value head")
        return (f"{kind} of {self.hidden} units with a Gaussian policy head (learned σ) and {value} "
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
