"""PEARL's outer step (Rakelly et al. 2019, Algorithm 1, as its code runs it): one meta-iteration is
data collection in a few training tasks, then ``gradient_steps`` updates of the encoder and the soft
actor-critic on meta-batches of tasks. Everything PEARL keeps between iterations is this step's
state, saved in every checkpoint: the training tasks, the RL and encoder replay buffers of each, and
the five optimizers (policy, twin Q-functions, value, encoder); the target value network is part of
the algorithm's parameters. So checkpoints, exact resume, signals and the non-finite policy come from
the trainer as for every other method.

Collection, for each of ``tasks_per_iteration`` tasks drawn from the training set (all at once):
the task's encoder buffer is emptied; ``prior_steps`` steps with ``z`` from the prior go to both
buffers; ``posterior_steps`` and ``extra_posterior_steps`` steps with ``z`` from the posterior of
context drawn from the (refilled) encoder buffer go to both, or to the RL buffer only. Before the
first iteration every training task gets ``initial_steps`` steps with ``z`` from the prior. Each
episode of a phase acts with its own draw of ``z`` (oyster resamples after every trajectory).
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch

from metadapt.errors import UserError
from metadapt.experience.replay import TaskReplay
from metadapt.training.steps import OuterStep, StepResult


class PEARLStep(OuterStep):
    def __init__(self, algorithm, context, meta_batch_size: int, device: torch.device):
        if context.world_size > 1:
            raise UserError("algorithm.name=pearl trains in one process (its replay buffers live in it); "
                            "run it without torchrun")
        self.algorithm, self.meta_batch_size, self.device = algorithm, meta_batch_size, device
        net, o = algorithm.networks, algorithm.options
        adam = lambda params, lr: torch.optim.Adam(list(params), lr=lr)  # noqa: E731
        self.optimizer_policy = adam([*net.policy_body.parameters(), *net.policy_mean.parameters(),
                                      *net.policy_log_std.parameters()], o.policy_lr)
        self.optimizer_q = adam([*net.qf1.parameters(), *net.qf2.parameters()], o.q_lr)
        self.optimizer_v = adam(net.vf.parameters(), o.v_lr)
        self.optimizer_context = adam(net.encoder.parameters(), o.context_lr)
        width = 2 * net.observation_size + net.action_size + 2   # (s, a, r, s', the encoder's r)
        self.rl = TaskReplay(o.train_tasks, o.buffer_capacity, width, device)
        self.encoder = TaskReplay(o.train_tasks, o.buffer_capacity, width, device)
        self.tasks = None       # the training tasks, drawn at the first step
        self._saved_tasks = None
        self.iterations = 0
        self.env_steps = 0
        self.last_return = 0.0
        self._before = None

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.optimizer_policy, "q": self.optimizer_q, "v": self.optimizer_v,
                "context": self.optimizer_context}

    # ----- collection ---------------------------------------------------------------------------------
    def _episodes(self, steps: int, horizon: int) -> int:
        return math.ceil(steps / horizon)

    def _collect(self, index: torch.Tensor, steps: int, posterior: bool, to_encoder: bool,
                 generator: torch.Generator) -> None:
        a, env = self.algorithm, self.tasks[index]
        copies = self._episodes(steps, env.horizon)
        if copies == 0:
            return
        latent = a.networks.latent_size
        with torch.no_grad():
            if posterior:
                rows = self.encoder.sample(index.repeat_interleave(copies), a.options.context_size, generator)
                mean, variance = a.networks.posterior(a.context_of(rows))
            else:
                mean = torch.zeros(len(index) * copies, latent, device=self.device,
                                   dtype=next(a.networks.parameters()).dtype)
                variance = torch.ones_like(mean)
            z = a.sample_z(mean, variance, generator).reshape(len(index), copies, latent)
            traj = a.collect(env, copies, z, generator)
        rows = a.transitions(traj, env)
        self.rl.add(index, rows)
        if to_encoder:
            self.encoder.add(index, rows)
        self.env_steps += traj.steps()
        self.last_return = float(traj.episode_returns.mean())

    def _draw_tasks(self, tasks, generator) -> None:
        o = self.algorithm.options
        self.tasks = tasks.sample(o.train_tasks, generator).to(self.device)
        everyone = torch.arange(o.train_tasks)
        self._collect(everyone, o.initial_steps, posterior=False, to_encoder=True, generator=generator)

    # ----- one meta-iteration -------------------------------------------------------------------------
    def step(self, tasks, generator) -> StepResult:
        a, o = self.algorithm, self.algorithm.options
        self._before = (copy.deepcopy(a.state_dict()), {k: copy.deepcopy(v.state_dict())
                                                         for k, v in self.optimizers.items()})
        steps_before = self.env_steps
        if self.tasks is None and self._saved_tasks is not None:  # a resumed run: the checkpoint's tasks
            template = tasks.sample(1, torch.Generator().manual_seed(0))
            self.tasks = replace(template, **{k: v.to(self.device) for k, v in self._saved_tasks.items()})
        elif self.tasks is None:
            self._draw_tasks(tasks, generator)
        chosen = torch.randperm(o.train_tasks, generator=generator)[:o.tasks_per_iteration]
        self.encoder.clear(chosen)
        self._collect(chosen, o.prior_steps, posterior=False, to_encoder=True, generator=generator)
        self._collect(chosen, o.posterior_steps, posterior=True, to_encoder=True, generator=generator)
        self._collect(chosen, o.extra_posterior_steps, posterior=True, to_encoder=False, generator=generator)
        if int(self.encoder.size.min()) == 0:
            raise UserError("a training task has no context to infer z from: raise algorithm.initial_steps "
                            "or algorithm.prior_steps")

        totals = {"critic_loss": 0.0, "value_loss": 0.0, "policy_loss": 0.0, "kl_divergence": 0.0,
                  "log_pi": 0.0, "q": 0.0}
        finite = True
        for _ in range(o.gradient_steps):
            index = torch.randint(o.train_tasks, (self.meta_batch_size,), generator=generator)
            stats = self.update(index, generator)
            if not all(math.isfinite(v) for v in stats.values()):
                finite = False
                break
            for k in totals:
                totals[k] += stats[k]
        self.iterations += 1
        metrics = {k: v / o.gradient_steps for k, v in totals.items()}
        metrics.update({"env_steps": float(self.env_steps - steps_before),
                        "env_steps_total": float(self.env_steps), "return": self.last_return,
                        "query_loss": -self.last_return})  # the return of this iteration's last collection
        return StepResult(metrics["query_loss"], metrics, finite)

    def update(self, index: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """One gradient step on the tasks ``index`` (in this order: encoder and Q-functions on the
        critic and KL losses; the value function; the target; the policy — as PEARL's code does)."""
        a, o, opt = self.algorithm, self.algorithm.options, self.optimizers
        rows = self.rl.sample(index, o.batch_size, generator)
        context = a.context_of(self.context_rows(index, generator))
        parts = a.losses(rows, context, generator)
        opt["q"].zero_grad(set_to_none=True)
        opt["context"].zero_grad(set_to_none=True)
        (parts["critic"] + parts["kl"]).backward()
        opt["q"].step()
        opt["context"].step()
        actor = a.actor_losses(parts["obs"], parts["z"], generator)
        opt["v"].zero_grad(set_to_none=True)
        actor["value"].backward(retain_graph=True)
        opt["v"].step()
        a.networks.update_target(o.tau)
        opt["policy"].zero_grad(set_to_none=True)
        actor["policy"].backward()
        opt["policy"].step()
        return {"critic_loss": float(parts["critic"].detach()), "value_loss": float(actor["value"].detach()),
                "policy_loss": float(actor["policy"].detach()),
                "kl_divergence": float(parts["kl_divergence"].detach()),
                "log_pi": float(actor["log_pi"].mean()), "q": float(actor["min_q"].mean())}

    def context_rows(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The encoder's context for one gradient step: ``context_size`` transitions of each task, or, with
        ``context_episodes = k``, the whole transitions of ``j`` episodes, ``j`` uniform in 1 … k (on a
        ``context_episodes_share`` of the steps; ``context_size`` transitions on the others)."""
        o = self.algorithm.options
        whole = bool(o.context_episodes)
        if whole and o.context_episodes_share < 1:
            whole = float(torch.rand((), generator=generator)) < o.context_episodes_share
        if not whole:
            return self.encoder.sample(index, o.context_size, generator)
        episodes = int(torch.randint(1, o.context_episodes + 1, (), generator=generator))
        return self.encoder.sample_episodes(index, episodes, self.tasks.horizon, generator)

    def commit(self) -> None:
        pass  # the updates happened inside step

    def discard(self) -> None:
        if self._before is not None:
            self.algorithm.load_state_dict(self._before[0])
            for k, v in self.optimizers.items():
                v.load_state_dict(self._before[1][k])

    # ----- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {f"optimizer_{k}": v.state_dict() for k, v in self.optimizers.items()}
        state["pearl"] = {"rl": self.rl.state_dict(), "encoder": self.encoder.state_dict(),
                          "iterations": self.iterations, "env_steps": self.env_steps,
                          "tasks": None if self.tasks is None else self.tasks._tensors()}
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in self.optimizers.items():
            v.load_state_dict(state[f"optimizer_{k}"])
        saved = state["pearl"]
        self.rl.load_state_dict(saved["rl"])
        self.encoder.load_state_dict(saved["encoder"])
        self.iterations, self.env_steps = int(saved["iterations"]), int(saved["env_steps"])
        self._saved_tasks = saved["tasks"]
        self.tasks = None
