"""Data-parallel meta-training over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Started by ``torchrun``, every process draws the *whole* meta-batch from the same seeded
generator and keeps its own slice, so the tasks a run sees do not depend on the number of
processes. Each process weights its mean loss by its share of the tasks; summing the gradients
with ``all_reduce`` then gives exactly the gradient of the mean over the full meta-batch, and
every process applies the same optimizer step to the same parameters.
"""
from __future__ import annotations

import math
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


def check_device(device: str, key: str = "train.device") -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine, or a one-line refusal."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{key}={str(device)[:40]!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{key}={device} but no CUDA device is available; use {key}=cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UserError(f"{key}={device} but this machine has {count} CUDA device(s); use cuda:0 … "
                            f"cuda:{count - 1}")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{key}={device} but MPS is not available here; use {key}=cpu")
    elif parsed.type != "cpu":
        raise UserError(f"{key}={device}: metadapt runs on cpu, cuda or mps")
    return parsed


def process_device(device: str, context: Context) -> torch.device:
    """One GPU per process under torchrun (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    parsed = check_device(device)
    if parsed.type == "cuda" and context.enabled and parsed.index is None:
        return torch.device("cuda", context.local_rank)
    return parsed


def meta_gradient(algorithm, parameters: list[torch.nn.Parameter], batch: TaskBatch, context: Context,
                  shards: int = 0) -> tuple[float, dict[str, float], bool]:
    """Set every parameter's ``.grad`` to the gradient of the meta-loss averaged over the whole
    meta-batch; returns the loss and the metrics of this process's share (each weighted by its
    fraction of the tasks, so they sum to the meta-batch means) and whether all is finite.

    The meta-batch is cut into ``shards`` slices (``0``: one per process); each process computes
    the gradients of its slices, and every process adds all slice gradients in slice order. The
    result is therefore bit-identical for any number of processes that divides ``shards``.
    """
    shards = shards or context.world_size
    if shards % context.world_size:
        raise UserError(f"train.grad_shards ({shards}) must be a multiple of the number of processes "
                        f"({context.world_size}); set it to 0 or to such a multiple")
    if batch.num_tasks < shards:
        raise UserError(f"train.meta_batch_size ({batch.num_tasks}) must be at least the number of gradient "
                        f"shards ({shards}: train.grad_shards, or the number of processes); "
                        "raise it or use fewer")
    bounds = torch.linspace(0, batch.num_tasks, shards + 1).round().long().tolist()
    per_process = shards // context.world_size
    vectors, loss_share, metrics_share = [], 0.0, {}
    for k in range(context.rank * per_process, (context.rank + 1) * per_process):
        part = batch[bounds[k]:bounds[k + 1]]
        share = part.num_tasks / batch.num_tasks
        for p in parameters:
            p.grad = None
        loss, metrics = algorithm.meta_backward(part, share)
        vectors.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                  for p in parameters]))
        loss_share += loss * share
        for key, value in metrics.items():
            metrics_share[key] = metrics_share.get(key, 0.0) + value * share
    rows = torch.stack(vectors)
    if context.enabled:
        gathered = [torch.empty_like(rows) for _ in range(context.world_size)]
        dist.all_gather(gathered, rows)
        rows = torch.cat(gathered)
    total = rows[0].clone()
    for row in rows[1:]:
        total += row
    offset = 0
    for p in parameters:
        p.grad = total[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    finite = math.isfinite(loss_share) and bool(torch.isfinite(total).all())
    return loss_share, metrics_share, finite


def task_slice(num_tasks: int, context: Context) -> slice:
    """This process's tasks of a meta-batch (contiguous; sizes differ by at most one)."""
    if num_tasks < context.world_size:
        raise UserError(f"train.meta_batch_size ({num_tasks}) must be at least the number of processes "
                        f"({context.world_size}); raise it or use fewer")
    bounds = torch.linspace(0, num_tasks, context.world_size + 1).round().long().tolist()
    return slice(bounds[context.rank], bounds[context.rank + 1])


def process_generator(generator: torch.Generator, context: Context) -> torch.Generator:
    """The stream a process samples its own tasks' experience from: in one process the run's
    generator itself; under torchrun a stream per process, seeded by one draw of the run's generator
    (every process makes the same draw, so the run's stream stays in step everywhere) plus the rank."""
    if not context.enabled:
        return generator
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    return torch.Generator().manual_seed(seed + context.rank)


def process_tasks(tasks, num_tasks: int, generator: torch.Generator, context: Context,
                  device: torch.device):
    """Draw a meta-batch of ``num_tasks`` environments from the run's generator and keep this process's
    slice: ``(environments on device, their share of the meta-batch, the stream to play them with)``."""
    env = tasks.sample(num_tasks, generator)
    part = task_slice(env.num_tasks, context)
    if context.enabled:
        env = env[part]
    return env.to(device), (part.stop - part.start) / num_tasks, process_generator(generator, context)


def weighted_sum(value: torch.Tensor, share: float, context: Context) -> torch.Tensor:
    """``Σ_r share_r · value_r`` over the processes, the same on all (the meta-batch mean of values that
    are means over each process's tasks); ``value`` itself in one process."""
    if not context.enabled:
        return value
    total = value.detach() * share
    dist.all_reduce(total)
    return total


def reduce_gradients(parameters: list[torch.nn.Parameter], share: float, context: Context) -> None:
    """Replace every ``.grad`` by the share-weighted sum over the processes (no-op in one process)."""
    if not context.enabled:
        return
    flat = weighted_sum(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                   for p in parameters]), share, context)
    offset = 0
    for p in parameters:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def check_in_step(module: torch.nn.Module, context: Context) -> None:
    """Under torchrun, before a checkpoint: every process must hold the same meta-parameters (they
    take the same updates by construction); a difference is a bug or a faulty machine, and stops the
    run before it is saved."""
    if not context.enabled:
        return
    state = [t for t in module.state_dict().values() if t.is_floating_point()]
    fingerprint = torch.stack([sum(t.double().sum() for t in state),
                               sum(t.double().square().sum() for t in state)])
    high, low = fingerprint.clone(), fingerprint.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    if not torch.equal(high, low):
        raise RuntimeError(f"process {context.rank}: the processes' meta-parameters differ "
                           f"(fingerprints {low.tolist()} … {high.tolist()}); not saving a checkpoint")


def sum_values(values: torch.Tensor, context: Context) -> torch.Tensor:
    if context.enabled:
        dist.all_reduce(values)
    return values


def agree(context: Context, values: dict[str, float]) -> dict[str, float]:
    """The sum over processes of each named value, in one all-reduce (float64): flags (a count of
    the processes that raised them) and shares of meta-batch means alike."""
    names = sorted(values)
    summed = sum_values(torch.tensor([float(values[n]) for n in names], dtype=torch.float64), context)
    return dict(zip(names, summed.tolist()))


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
