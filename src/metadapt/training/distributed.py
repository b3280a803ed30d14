"""Data-parallel meta-training over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Started by ``torchrun``, every process draws the *whole* meta-batch from the same seeded
generator and keeps its own slice, so the tasks a run sees do not depend on the number of
processes. Each process weights its mean loss by its share of the tasks; summing the gradients
with ``all_reduce`` then gives exactly the gradient of the mean over the full meta-batch, and
every process applies the same optimizer step to the same parameters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metadapt.errors import UserError
from metadapt.tasks import TaskBatch


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(device: str) -> Context:
    """Join the process group torchrun describes in the environment (no-op when single)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def process_device(device: str, context: Context) -> torch.device:
    """One GPU per process under torchrun (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("train.device=cuda but no CUDA device is available; use train.device=cpu")
        if context.enabled and device == "cuda":
            return torch.device("cuda", context.local_rank)
    return torch.device(device)


def shard(batch: TaskBatch, context: Context) -> tuple[TaskBatch, float]:
    """This process's slice of the meta-batch and its share of the tasks."""
    if not context.enabled:
        return batch, 1.0
    if batch.num_tasks < context.world_size:
        raise UserError(
            f"train.meta_batch_size ({batch.num_tasks}) must be at least the number of processes "
            f"({context.world_size}); raise it or start fewer processes"
        )
    bounds = torch.linspace(0, batch.num_tasks, context.world_size + 1).round().long().tolist()
    lo, hi = bounds[context.rank], bounds[context.rank + 1]
    return batch[lo:hi], (hi - lo) / batch.num_tasks


def sum_gradients(parameters: list[torch.nn.Parameter], context: Context) -> None:
    """Sum every parameter's gradient over the processes, in one flattened all-reduce."""
    if not context.enabled:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(parameters, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def sum_values(values: torch.Tensor, context: Context) -> torch.Tensor:
    if context.enabled:
        dist.all_reduce(values)
    return values


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
