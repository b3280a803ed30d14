"""Outer steps: one meta-update and the state it keeps between updates.

The trainer owns everything that is the same for every method (the task generator, validation,
logging, checkpoints, signals, the non-finite policy and the time limit); an outer step owns how
the meta-parameters move. Its protocol:

    result = outer.step(tasks, generator)   # draw the meta-batch, compute this process's share
    outer.commit()                           # apply the update (all processes agreed it is finite)
    outer.discard()                          # or drop it
    outer.state_dict() / outer.load_state_dict(d)   # saved in every checkpoint, restored on resume

So a method with several optimizers and a replay buffer, or several epochs per batch, is a new
outer step, and every family gets checkpoints and exact resume from the one trainer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metadapt.algorithms import Algorithm
from metadapt.config import Config
from metadapt.errors import UserError
from metadapt.tasks import TaskSource
from metadapt.training import distributed


@dataclass
class StepResult:
    """This process's share of one meta-update: the meta-loss and the metrics (each weighted by the
    process's fraction of the meta-batch, so the sums over processes are meta-batch means; always
    ``query_loss``), and whether everything it computed is finite."""

    loss: float
    metrics: dict[str, float]
    finite: bool


#: metrics that are counts: each process reports its own, and their sum over processes is the total
COUNTS = ("env_steps",)


def shared_metrics(metrics: dict[str, float], share: float) -> dict[str, float]:
    """A process's metrics as its share of the meta-batch means (counts stay whole)."""
    return {k: v if k in COUNTS else v * share for k, v in metrics.items()}


class OuterStep:
    """Base of the outer steps (see the module's docstring)."""

    def step(self, tasks: TaskSource, generator: torch.Generator) -> StepResult:
        raise NotImplementedError

    def commit(self) -> None:
        pass

    def discard(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def build_optimizer(config: Config, algorithm: Algorithm) -> torch.optim.Optimizer:
    """Adam or SGD over the algorithm's trainable parameters (frozen ones are left out)."""
    parameters = [p for p in algorithm.parameters() if p.requires_grad]
    if config.train.optimizer == "adam":
        # the fused kernel updates every tensor in one call: on the sinusoid MLP's six tensors,
        # about a third of the default per-tensor loop's time (benchmarks/allocator.py)
        try:
            return torch.optim.Adam(parameters, lr=config.train.meta_lr, fused=True)
        except RuntimeError:  # a device or dtype the fused kernel does not cover
            return torch.optim.Adam(parameters, lr=config.train.meta_lr)
    return torch.optim.SGD(parameters, lr=config.train.meta_lr)


class GradientStep(OuterStep):
    """A meta-gradient (``Algorithm.meta_backward``, summed over gradient shards and processes in a
    fixed order, ``distributed.meta_gradient``) followed by one step of the outer optimizer."""

    def __init__(self, algorithm: Algorithm, optimizer: torch.optim.Optimizer, context: distributed.Context,
                 meta_batch_size: int, device: torch.device, shards: int = 0, clip_grad_norm: float = 0.0):
        self.algorithm, self.optimizer, self.context = algorithm, optimizer, context
        self.meta_batch_size, self.device, self.shards = meta_batch_size, device, shards
        self.clip_grad_norm = clip_grad_norm
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]

    def step(self, tasks, generator) -> StepResult:
        batch = tasks.sample(self.meta_batch_size, generator).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss, metrics, finite = distributed.meta_gradient(self.algorithm, self.parameters, batch,
                                                          self.context, self.shards)
        return StepResult(loss, metrics, finite)

    def commit(self) -> None:
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_grad_norm)
        self.optimizer.step()

    def discard(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class ScheduledStep(GradientStep):
    """The gradient step with a schedule of the meta learning rate, ``lr_at(iteration)``, set before
    each step; the iteration is the algorithm's ``iteration`` buffer, which advances after every
    step (committed or discarded) and is saved with the algorithm's state, so a resumed run follows
    the same schedule."""

    def __init__(self, algorithm, optimizer, context, meta_batch_size, device, shards=0, lr_at=None,
                 clip_grad_norm=0.0):
        super().__init__(algorithm, optimizer, context, meta_batch_size, device, shards, clip_grad_norm)
        self.lr_at = lr_at

    def step(self, tasks, generator) -> StepResult:
        lr = self.lr_at(int(self.algorithm.iteration))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        result = super().step(tasks, generator)
        self.algorithm.iteration += 1
        return result


class CompiledStep(GradientStep):
    """The meta-gradient and the optimizer update fused in one ``torch.compile`` graph
    (``compiled.py``); the update happens inside the step, and only when everything is finite."""

    def __init__(self, algorithm, optimizer, context, meta_batch_size, device, shards=0, clip_grad_norm=0.0):
        from metadapt.training.compiled import CompiledMetaStep

        if context.world_size > 1 or shards > 1:
            raise UserError("train.compile=true runs in one process with train.grad_shards 0 or 1; "
                            "drop train.compile for multi-process or sharded training")
        if clip_grad_norm:
            raise UserError("train.compile=true does not clip the meta-gradient; set train.clip_grad_norm=0 "
                            "or train.compile=false")
        super().__init__(algorithm, optimizer, context, meta_batch_size, device, shards)
        try:
            self.fused = CompiledMetaStep(algorithm, optimizer)
        except ValueError as err:
            raise UserError(f"train.compile=true: {err}; set train.compile=false") from None

    def step(self, tasks, generator) -> StepResult:
        batch = tasks.sample(self.meta_batch_size, generator).to(self.device)
        loss, finite = self.fused(batch)
        loss = loss.item()
        return StepResult(loss, {"query_loss": loss}, bool(finite))

    def commit(self) -> None:
        pass  # already applied inside the compiled graph

    def discard(self) -> None:
        pass  # nothing moved: the graph keeps every tensor when anything is non-finite


def build_outer_step(config: Config, algorithm: Algorithm, context: distributed.Context,
                     device: torch.device) -> OuterStep:
    """The algorithm's own outer step (an ``outer_step(config, context, device)`` method), else the
    gradient step, compiled with ``train.compile``."""
    own = getattr(algorithm, "outer_step", None)
    if own is not None:
        return own(config, context, device)
    kind = CompiledStep if config.train.compile else GradientStep
    return kind(algorithm, build_optimizer(config, algorithm), context, config.train.meta_batch_size, device,
                config.train.grad_shards, config.train.clip_grad_norm)
