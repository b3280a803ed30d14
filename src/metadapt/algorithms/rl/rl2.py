"""RL² (Duan, Schulman, Chen, Bartlett, Sutskever & Abbeel, "RL²: Fast reinforcement learning via
slow reinforcement learning", 2016).

The "fast" learner is the hidden state of a recurrent policy: a GRU reads, at every step, the
observation together with the previous action, reward and termination flag, and its hidden state is
carried across all episodes of a trial — reset only between trials, never between the episodes of
one task, in training and at test time alike. The "slow" learner trains the GRU's weights to
maximise the total reward of a whole trial,

    max_θ  E_{task ~ p} E_{trial ~ π_θ} [ Σ_{t=0}^{n·H−1} r_t ],

here with PPO over whole trials (the paper used TRPO; both are policy-gradient methods with a
learned value baseline and GAE): :class:`metadapt.training.ppo.PPOStep` is its outer step.

``time_input`` adds one input the paper's agent does not have: the share of the trial elapsed,
``t / (n·H)``. A trial's horizon is fixed, so the return still to come — what the value must predict,
and what decides whether one more exploratory pull can pay — depends on the time left, which a GRU
must otherwise count for itself (Pardo, Tavakoli, Levdik & Kormushev 2018, "Time limits in
reinforcement learning": time-aware agents for fixed horizons).

``weight_average`` keeps an exponential moving average of the policy's weights,

    θ̄ ← d_k θ̄ + (1 − d_k) θ,   d_k = min(d, (1 + k) / (10 + k))   after the k-th meta-update,

(the warm-up of TensorFlow's ``ExponentialMovingAverage``: a short window while the weights move
fast) and acts with θ̄ at validation and test time, while training still collects its trials with θ:
the iterates of a noisy policy-gradient method scatter around a policy that can score above each of
them (Nikishin, Izmailov, Athiwaratkun, Podoprikhin, Garipov, Shvechikov, Vetrov & Wilson 2018, "Improving
stability in deep reinforcement learning with weight averaging").
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from metadapt.algorithms.base import Algorithm
from metadapt.algorithms.rl.checks import check_rl_recipe
from metadapt.errors import UserError
from metadapt.experience import Trajectories, gae, rollout
from metadapt.options import option
from metadapt.registry import register

VALIDATION_SEED = 4_242  # validation trials' own draws: the same every time, never the training stream


@dataclass
class RL2Options:
    trials: int = option(1, positive=True, high=10_000, help="trials of each task per meta-update")
    gamma: float = option(0.99, low=0, high=1, help="discount across the whole trial")
    gae_lambda: float = option(0.3, low=0, high=1, help="GAE λ (the RL² paper: 0.3)")
    epochs: int = option(4, positive=True, high=1000, help="PPO passes over each batch of trials")
    minibatches: int = option(4, positive=True, help="PPO minibatches of whole trials per pass")
    clip: float = option(0.2, positive=True, help="PPO clip range ε")
    value_coef: float = option(0.5, low=0, help="weight of the value loss")
    entropy_coef: float = option(0.01, low=0, help="weight of the entropy bonus")
    max_grad_norm: float = option(0.5, positive=True, help="gradient clipping of each PPO update")
    reward_scale: float = option(1.0, positive=True,
                                 help="rewards are multiplied by this for learning (values, advantages); "
                                      "returns of ~100 need ~0.1, or the value loss swamps the clipped "
                                      "gradient")
    anneal_lr: bool = option(False, help="lower the meta learning rate linearly from train.meta_lr to 0 over "
                                         "train.iterations, one step per meta-update (CleanRL's anneal_lr)")
    time_input: bool = option(False, help="give policy and value the share of the trial elapsed, t / (n·H), "
                                          "as one more input (time-aware agents, Pardo et al. 2018)")
    weight_average: float = option(0.0, low=0, high=0.9999,
                                   help="decay d of a moving average of the policy's weights, updated after "
                                        "each meta-update, that acts at validation and test time (0: off; "
                                        "Nikishin et al. 2018)")


@register("algorithm", "rl2")
class RL2(Algorithm):
    """A recurrent policy whose hidden state learns within a trial; see the module docstring."""

    name = "rl2"
    reinforcement = True
    Options = RL2Options

    def __init__(self, policy: nn.Module, episodes: int = 1, trials: int = 1, gamma: float = 0.99,
                 gae_lambda: float = 0.3, epochs: int = 4, minibatches: int = 4, clip: float = 0.2,
                 value_coef: float = 0.5, entropy_coef: float = 0.01, max_grad_norm: float = 0.5,
                 reward_scale: float = 1.0, anneal_lr: bool = False, time_input: bool = False,
                 weight_average: float = 0.0):
        super().__init__()
        self.policy = policy
        self.episodes, self.trials = episodes, trials
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.epochs, self.minibatches, self.clip = epochs, minibatches, clip
        self.value_coef, self.entropy_coef, self.max_grad_norm = value_coef, entropy_coef, max_grad_norm
        self.reward_scale, self.anneal_lr, self.time_input = reward_scale, anneal_lr, time_input
        self.weight_average = weight_average
        if weight_average:  # buffers, so checkpoints carry the average and a resumed run continues it
            for i, p in enumerate(policy.parameters()):
                self.register_buffer(f"average_{i}", p.detach().clone())
            self.register_buffer("average_updates", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, options, parts) -> RL2:
        probe = parts.family.probe()
        continuous = not probe.discrete
        if continuous != getattr(parts.config.model.entry.target, "continuous", continuous):
            kind = "continuous" if continuous else "discrete"
            raise UserError(f"task.family={parts.config.task.family} has {kind} actions: use "
                            f"model.name={'recurrent-gaussian-policy' if continuous else 'recurrent-policy'}")
        outputs = probe.action_dim if continuous else probe.actions

        observation_shape = probe.observation_shape
        if options.time_input:
            observation_shape = (math.prod(observation_shape) + 1,)

        def build():
            policy = parts.model_for(observation_shape, outputs)
            if getattr(policy, "reads_task", False):
                policy.know_task(probe.task_features().shape[-1])
            return policy

        return cls(parts.seeded(build), episodes=parts.family.episodes_per_trial, **vars(options))

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        check_rl_recipe(config, ("recurrent-policy", "recurrent-gaussian-policy"), "bandits")
        model = config.model.options
        if getattr(model, "critic_hidden", 0) and getattr(model, "critic", "shared") == "shared":
            raise UserError("model.critic_hidden sizes a critic of its own: set model.critic=separate or "
                            "model.critic=task, or drop model.critic_hidden")

    # ----- acting -----------------------------------------------------------------------------------
    def _task(self, env) -> torch.Tensor | None:
        """``[T, D]`` the tasks' descriptions when the value reads them (``model.critic: task``)."""
        return env.task_features() if getattr(self.policy, "reads_task", False) else None

    def _timed(self, obs: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        """``obs [..., *shape]`` flattened, with ``elapsed [...]`` (the share of the trial gone) appended
        (for ``time_input``)."""
        flat = obs.flatten(elapsed.dim())
        return torch.cat([flat, elapsed[..., None].to(flat.dtype)], -1)

    def actor(self, generator: torch.Generator, greedy: bool = False, task: torch.Tensor | None = None,
              length: int | None = None):
        """The policy as ``rollout`` calls it: the GRU's hidden state is the carry, so it flows through
        every episode of the trial; actions are sampled from ``generator`` (``greedy``: the most
        probable). ``task [T, D]`` reaches only the value (``model.critic: task``); ``length``: the
        trial's steps, ``n·H`` (for ``time_input``)."""
        if self.time_input and not length:
            raise ValueError("time_input needs the trial's length: actor(..., length=n·H)")
        clock = 0

        def act(obs, last, hidden):
            nonlocal clock
            clock = 0 if last is None else clock + 1
            t, c = obs.shape[:2]
            if self.time_input:
                obs = self._timed(obs, torch.full((t, c), clock / length, device=obs.device))
            if last is None:
                zero = torch.zeros(t, c, device=obs.device)
                none = (torch.zeros(t, c, self.policy.actions, device=obs.device) if self.policy.continuous
                        else zero.long())
                x = self.policy.inputs(obs, none, zero, zero, first=torch.ones_like(zero))
            else:
                x = self.policy.inputs(obs, last.action, last.reward, last.done)
            copies = None if task is None else task.repeat_interleave(c, 0)
            head, value, hidden = self.policy.step(x.reshape(t * c, -1), hidden, copies)
            if self.policy.continuous:
                dist = self.policy.distribution(head)
                if greedy:
                    action = head
                else:
                    noise = torch.randn(head.shape, generator=generator, dtype=head.dtype).to(head.device)
                    action = head + self.policy.log_std.exp() * noise
                chosen = dist.log_prob(action)
                action = action.reshape(t, c, -1)
            else:
                log_p = torch.log_softmax(head, -1)
                if greedy:
                    action = log_p.argmax(-1)
                else:
                    action = torch.multinomial(log_p.exp().cpu(), 1, generator=generator)[:, 0].to(obs.device)
                chosen = log_p.gather(-1, action[:, None])[:, 0]
                action = action.reshape(t, c)
            extras = {"log_prob": chosen.reshape(t, c), "value": value.reshape(t, c)}
            return action, extras, hidden

        return act

    # ----- the weight average ---------------------------------------------------------------------
    def averaged_weights(self) -> list[torch.Tensor]:
        """θ̄, one tensor per policy parameter, in ``policy.parameters()`` order (``weight_average``)."""
        return [getattr(self, f"average_{i}") for i in range(len(list(self.policy.parameters())))]

    @torch.no_grad()
    def after_update(self) -> None:
        """Move θ̄ towards the weights of the meta-update just made (see the module docstring)."""
        if not self.weight_average:
            return
        k = int(self.average_updates)
        decay = min(self.weight_average, (1 + k) / (10 + k))
        for average, p in zip(self.averaged_weights(), self.policy.parameters()):
            average.lerp_(p, 1 - decay)
        self.average_updates += 1

    @contextmanager
    def _acting_with_the_average(self):
        """The policy's weights are θ̄ inside, and exactly what they were again afterwards."""
        if not self.weight_average:
            yield
            return
        parameters = list(self.policy.parameters())
        live = [p.detach().clone() for p in parameters]
        with torch.no_grad():
            for p, average in zip(parameters, self.averaged_weights()):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, weights in zip(parameters, live):
                    p.copy_(weights)

    @torch.no_grad()
    def play(self, env, generator: torch.Generator, trials: int | None = None,
             greedy: bool = False, averaged: bool = True) -> Trajectories:
        """``trials`` trials (each ``episodes`` episodes, hidden state carried) of every task of ``env``,
        with the averaged weights θ̄ when ``weight_average`` is on and ``averaged`` (training collects with
        the current weights)."""
        was_training = self.training
        self.eval()
        try:
            with self._acting_with_the_average() if averaged else nullcontext():
                act = self.actor(generator, greedy, self._task(env), self.episodes * env.horizon)
                traj, _ = rollout(env, act, trials or self.trials, self.episodes, generator)
        finally:
            self.train(was_training)
        return traj

    def sequence_inputs(self, trials: Trajectories) -> torch.Tensor:
        """``[B, N, F]`` GRU inputs of whole trials ``[T, C, N, …]`` (flattened to ``B = T·C``), each step
        seeing the previous step's action, reward and termination flag (and, with ``time_input``, the
        share ``t / N`` of the trial elapsed)."""
        obs = trials.observations.flatten(0, 1)
        if self.time_input:
            steps = obs.shape[1]
            elapsed = torch.arange(steps, device=obs.device, dtype=torch.float32) / steps
            obs = self._timed(obs, elapsed.expand(obs.shape[:2]))
        shift = lambda x: torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)  # noqa: E731
        first = torch.zeros(obs.shape[:2], device=obs.device)
        first[:, 0] = 1
        prev = lambda x: shift(x.flatten(0, 1))  # noqa: E731
        return self.policy.inputs(obs, prev(trials.actions), prev(trials.rewards), prev(trials.dones), first)

    # ----- learning --------------------------------------------------------------------------------
    def experience(self, env, generator: torch.Generator) -> dict:
        """One batch of whole trials with what PPO needs: inputs, actions, old log-probabilities and
        values, GAE advantages and returns over the trial (discounted across episodes), the mask.
        Values, advantages and returns are in units of ``reward_scale`` × reward; the policy still
        sees the raw rewards as inputs."""
        traj = self.play(env, generator, averaged=False).trials()
        flat = lambda x: x.flatten(0, 1)  # noqa: E731
        rewards, mask, values = flat(traj.rewards), flat(traj.mask), flat(traj.extras["value"])
        advantages = gae(rewards * self.reward_scale, values, self.gamma, self.gae_lambda, mask)
        per_trial = rewards.sum(-1)
        batch = {"inputs": self.sequence_inputs(traj), "actions": flat(traj.actions),
                 "log_probs": flat(traj.extras["log_prob"]), "values": values, "advantages": advantages,
                 "returns": advantages + values, "mask": mask,
                 "metrics": {"return": float(per_trial.mean()), "env_steps": float(mask.sum())}}
        task = self._task(env)
        if task is not None:
            batch["task"] = task.repeat_interleave(traj.rewards.shape[1], 0)
        return batch

    def evaluate_actions(self, batch: dict, index: torch.Tensor):
        """Log-probabilities of the taken actions, entropies and values of the trials ``index``,
        recomputed over whole trials from a zero hidden state."""
        task = batch["task"][index] if "task" in batch else None
        head, values, _ = self.policy(batch["inputs"][index], task=task)
        dist = self.policy.distribution(head)
        return dist.log_prob(batch["actions"][index]), dist.entropy(), values

    def outer_step(self, config, context, device):
        from metadapt.training.ppo import PPOStep
        from metadapt.training.steps import build_optimizer

        base, iterations = config.train.meta_lr, config.train.iterations
        lr_at = (lambda iteration: base * max(0.0, 1 - iteration / iterations)) if self.anneal_lr else None
        return PPOStep(self, build_optimizer(config, self), context, config.train.meta_batch_size, device,
                       self.epochs, self.minibatches, self.clip, self.value_coef, self.entropy_coef,
                       self.max_grad_norm, lr_at=lr_at)

    @classmethod
    def resume_fixed(cls, config) -> tuple[str, ...]:
        """The annealed rate reaches 0 at ``train.iterations``: extending a run would change its rates."""
        return ("train.iterations",) if config.algorithm.anneal_lr else ()

    @torch.no_grad()
    def validation_metrics(self, env) -> dict[str, float]:
        """Mean total reward of one trial per held-out task (``query_loss`` is its negative), and the
        mean return of its first and its last episode."""
        traj = self.play(env, torch.Generator().manual_seed(VALIDATION_SEED), trials=1)
        total = float(traj.rewards.sum((-1, -2)).mean())
        episodes = traj.rewards.sum(-1).mean((0, 1))
        return {"query_loss": -total, "return": total, "return_first": float(episodes[0]),
                "return_last": float(episodes[-1])}

    def describe(self) -> str:
        return (f"`{self.name_in_config or self.name}`: a recurrent policy whose hidden state is carried "
                f"across the {self.episodes} episode(s) of a trial, trained with PPO over whole trials "
                f"(γ {self.gamma}, GAE λ {self.gae_lambda}, {self.epochs} epochs × {self.minibatches} "
                f"minibatches, clip {self.clip}, entropy {self.entropy_coef}"
                + (f", rewards × {self.reward_scale} for learning" if self.reward_scale != 1 else "")
                + (f", acting at test time with a moving average of its weights (decay {self.weight_average})"
                   if self.weight_average else "") + ")")
