"""The baselines meta-learning is measured against.

* :class:`Pretrain` — one network trained jointly on every training task (the MAML paper's
  "pretrained" baseline), then fine-tuned on a new task's support set exactly as MAML adapts:
  the same inner learning rate and number of steps. For classification it is a classifier over
  all training classes (episode labels mapped back to global classes); for a new task its head
  is replaced by a zero-initialised head with one output per way, then the network is fine-tuned.
* :class:`Scratch` — a freshly initialised network per task, fine-tuned the same way.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import stack_module_state

from metadapt.algorithms.gradient import GradientLearner, GradientOptions, head_parameter_names
from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.batch import TaskBatch


@dataclass
class PretrainOptions(GradientOptions):
    inner_steps: int = option(1, low=0, high=10_000, help="fine-tuning steps at test time (by default)")


@register("algorithm", "pretrain")
class Pretrain(GradientLearner):
    """Meta-loss: the plain loss of the unadapted model on all examples of all tasks."""

    name = "pretrain"
    Options = PretrainOptions

    @classmethod
    def from_config(cls, options, parts) -> Pretrain:
        """A classification family's model is a classifier over every training class."""
        outputs = parts.family.num_classes("train") if parts.family.classification else None
        model = parts.seeded(lambda: parts.model(outputs) if outputs else parts.model())
        return cls(model, loss=parts.loss, **vars(options))

    def _classifies(self, y: torch.Tensor) -> bool:
        return not torch.is_floating_point(y)

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        x = torch.cat([batch.support_x, batch.query_x], dim=1).flatten(0, 1)
        y = torch.cat([batch.support_y, batch.query_y], dim=1)
        if self._classifies(y):
            if batch.info is None or "classes" not in batch.info:
                raise ValueError("classification pretraining needs each episode's global classes in "
                                 "batch.info['classes']")
            y = batch.info["classes"].to(y.device).gather(1, y)  # episode labels -> training-class indices
        y = y.flatten(0, 1)
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        metrics = {"query_loss": loss.item()}
        if self._classifies(y):
            metrics["accuracy"] = (logits.argmax(-1) == y).float().mean().item()
        return loss, metrics

    def supports(self, batch) -> bool:
        return True  # a classifier gets a fresh head with as many outputs as the episode has ways

    def initial_params(self, support_x: torch.Tensor, support_y: torch.Tensor):
        start = super().initial_params(support_x, support_y)
        if not self._classifies(support_y):
            return start
        ways = int(support_y.max()) + 1
        for name in head_parameter_names(self.model):
            p = start[name]
            start[name] = torch.zeros(p.shape[0], ways, *p.shape[2:], dtype=p.dtype, device=p.device)
        return start


class Scratch(GradientLearner):
    """No meta-training: each task starts from its own fresh initialization.

    ``model_factory`` builds a new module. A task's initialization is drawn in a forked RNG from
    a seed made of ``seed`` and the task's support set, so it is the same however tasks are
    batched, differs between tasks, and leaves the global generator untouched.
    """

    name = "scratch"
    trainable = False

    def __init__(self, model_factory: Callable[[], nn.Module], seed: int = 0, **kwargs):
        super().__init__(model_factory(), **kwargs)
        self.model_factory = model_factory
        self.seed = seed

    def meta_loss(self, batch: TaskBatch):
        raise RuntimeError("the scratch baseline has nothing to meta-train; evaluate it directly")

    def initial_params(self, support_x: torch.Tensor, support_y: torch.Tensor):
        models = []
        for task in support_x:
            task_seed = zlib.crc32(task.detach().cpu().numpy().tobytes(), self.seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(task_seed)
                models.append(self.model_factory())
        params, _ = stack_module_state(models)
        device = next(self.model.parameters()).device
        return {n: p.detach().to(device) for n, p in params.items()}
