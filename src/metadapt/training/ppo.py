"""Proximal policy optimization as an outer step (Schulman et al., "Proximal policy optimization
algorithms", 2017), in the shape of CleanRL's ``ppo.py``.

One meta-update: draw ``tasks_per_step`` tasks from the run's generator, let the algorithm collect
its experience in them (``algorithm.experience(env, generator)``: whole trials with the policy's
log-probabilities, values, advantages and returns), then ``epochs`` passes over that experience in
``minibatches`` random minibatches of whole trials, each an Adam step on

    L = −E[min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â)] + c_v · E[(V − R)²] / 2 − c_e · E[H(π)],   ρ = π / π_old,

with advantages normalised per minibatch and the gradient clipped to a global norm. The updates
happen inside ``step``; ``discard`` (a non-finite loss anywhere) puts the parameters and the
optimizer back as they were before it.

Under ``torchrun`` each process plays its slice of the meta-batch's tasks with a stream of its own
(``distributed.process_generator``), and every minibatch's gradient is the share-weighted sum over the
processes of their minibatches' gradients, so all processes take the same steps. A run is then
reproducible for a given number of processes; unlike the supervised families (whose draws are all
made from the one stream) not across numbers of processes.
"""
from __future__ import annotations

import copy

import torch

from metadapt.errors import UserError
from metadapt.training import distributed
from metadapt.training.steps import OuterStep, StepResult, shared_metrics


def ppo_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
             values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
             clip: float, value_coef: float, entropy_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate, value and entropy terms averaged over the steps where ``mask`` is 1."""
    n = mask.sum().clamp(min=1)
    mean = lambda x: (x * mask).sum() / n  # noqa: E731
    adv_mean = mean(advantages)
    adv_std = (mean((advantages - adv_mean) ** 2) * n / (n - 1).clamp(min=1)).sqrt()
    adv = (advantages - adv_mean) / (adv_std + 1e-8)
    log_ratio = log_probs - old_log_probs
    ratio = log_ratio.exp()
    policy_loss = mean(-torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv))
    value_loss = 0.5 * mean((values - returns) ** 2)
    entropy_mean = mean(entropy)
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy_mean
    with torch.no_grad():
        stats = {"policy_loss": float(policy_loss), "value_loss": float(value_loss),
                 "entropy": float(entropy_mean), "approx_kl": float(mean((ratio - 1) - log_ratio)),
                 "clip_fraction": float(mean(((ratio - 1).abs() > clip).to(ratio.dtype)))}
    return loss, stats


class OptimizerStep(OuterStep):
    """An outer step that updates the algorithm with its own optimizer inside ``step``: it keeps the
    optimizer's state across checkpoints, and ``discard`` puts parameters and optimizer back as they
    were when ``step`` began (``_remember``)."""

    algorithm: torch.nn.Module
    optimizer: torch.optim.Optimizer
    context: distributed.Context
    _before = None

    def _remember(self) -> None:
        self._before = tuple(copy.deepcopy(x.state_dict()) for x in (self.algorithm, self.optimizer))

    def _draw(self, tasks, generator):
        """This process's tasks of the meta-batch, their share of it and the stream to play them with."""
        return distributed.process_tasks(tasks, self.tasks_per_step, generator, self.context, self.device)

    def discard(self) -> None:
        if self._before is not None:
            self.algorithm.load_state_dict(self._before[0])
            self.optimizer.load_state_dict(self._before[1])

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class PPOStep(OptimizerStep):
    """The outer step of RL² (see the module docstring); its state is the optimizer's and the number of
    meta-updates so far, which sets the learning rate ``lr_at(iteration)`` when a schedule is given."""

    def __init__(self, algorithm, optimizer: torch.optim.Optimizer, context, tasks_per_step: int,
                 device: torch.device, epochs: int, minibatches: int, clip: float, value_coef: float,
                 entropy_coef: float, max_grad_norm: float, lr_at=None):
        self.algorithm, self.optimizer, self.device, self.context = algorithm, optimizer, device, context
        self.tasks_per_step, self.epochs, self.minibatches = tasks_per_step, epochs, minibatches
        self.clip, self.value_coef, self.entropy_coef = clip, value_coef, entropy_coef
        self.max_grad_norm, self.lr_at, self.iteration = max_grad_norm, lr_at, 0
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]

    def step(self, tasks, generator) -> StepResult:
        self._remember()
        if self.lr_at is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.iteration)
        self.iteration += 1  # also when the step is discarded, so a schedule never repeats a rate
        env, share, generator = self._draw(tasks, generator)
        batch = self.algorithm.experience(env, generator)
        trials = batch["actions"].shape[0]
        if trials < self.minibatches:
            raise UserError(f"PPO splits {trials} trials into {self.minibatches} minibatches; raise "
                            "train.meta_batch_size or lower algorithm.minibatches")
        totals: dict[str, float] = {}
        finite, updates = True, 0
        for _ in range(self.epochs):
            order = torch.randperm(trials, generator=generator).to(self.device)
            for index in order.chunk(self.minibatches):
                log_probs, entropy, values = self.algorithm.evaluate_actions(batch, index)
                loss, stats = ppo_loss(log_probs, batch["log_probs"][index], batch["advantages"][index],
                                       values, batch["returns"][index], entropy, batch["mask"][index],
                                       self.clip, self.value_coef, self.entropy_coef)
                if not torch.isfinite(loss) and not self.context.enabled:
                    finite = False
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # (under torchrun a non-finite loss reaches every process as its gradient)
                distributed.reduce_gradients(self.parameters, share, self.context)
                norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
                if not torch.isfinite(norm):
                    finite = False
                    break
                self.optimizer.step()
                updates += 1
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
            if not finite:
                break
        if finite and hasattr(self.algorithm, "after_update"):
            self.algorithm.after_update()  # RL²'s weight average follows the weights just updated
        metrics = {k: v / max(updates, 1) for k, v in totals.items()}
        metrics.update(batch["metrics"])
        metrics["query_loss"] = -batch["metrics"]["return"]
        if self.lr_at is not None:
            metrics["meta_lr"] = self.optimizer.param_groups[0]["lr"]
        metrics = shared_metrics(metrics, share)
        return StepResult(metrics["query_loss"], metrics, finite)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state.get("iteration", 0))



class ClippedMetaStep(OptimizerStep):
    """MAML for RL's PPO-style outer step (``algorithm.outer: ppo``): ``epochs`` Adam steps on the
    clipped surrogate of the post-adaptation return, each re-running the adaptation from the current
    meta-parameters (and adding the algorithm's meta-gradient terms, ``with_sampling_term``)."""

    def __init__(self, algorithm, optimizer: torch.optim.Optimizer, context, tasks_per_step: int,
                 device: torch.device, epochs: int, clip: float):
        self.algorithm, self.optimizer, self.device, self.context = algorithm, optimizer, device, context
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.tasks_per_step, self.epochs, self.clip = tasks_per_step, epochs, clip

    def step(self, tasks, generator) -> StepResult:
        a = self.algorithm
        self._remember()
        env, share, generator = self._draw(tasks, generator)
        batch = a.experience(env, generator)
        finite = True
        for _ in range(self.epochs):
            objective = a.surrogate(batch, with_sampling_term=True, clip=self.clip)
            if not torch.isfinite(objective) and not self.context.enabled:
                finite = False
                break
            self.optimizer.zero_grad(set_to_none=True)
            (-objective).backward()
            distributed.reduce_gradients(self.parameters, share, self.context)
            if self.context.enabled and not all(bool(torch.isfinite(p.grad).all()) for p in self.parameters):
                finite = False
                break
            self.optimizer.step()
        metrics = dict(batch["metrics"])
        metrics["query_loss"] = -metrics["return"]
        return StepResult(metrics["query_loss"], shared_metrics(metrics, share), finite)

