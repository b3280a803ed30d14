"""The meta-training loop: one readable function.

Each iteration draws a meta-batch from the run's own seeded generator, computes the
algorithm's meta-loss, and steps the outer optimizer. Every ``val_every`` iterations the
meta-parameters are adapted to a fixed set of held-out tasks and the best are kept. The
checkpoint holds meta-parameters, optimizer, generator state, step and best score, so
``resume=True`` continues to the same parameters, bit for bit, as a run never interrupted.
The same loop runs under ``torchrun`` (see ``distributed.py``); only rank 0 writes files.
SIGINT / SIGTERM finish the current step, save a checkpoint and raise :class:`Interrupted`.
"""
from __future__ import annotations

import json
import math
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from metadapt.algorithms import Algorithm
from metadapt.allocator import keep_freed_memory
from metadapt.build import build_algorithm, build_tasks
from metadapt.config import Config
from metadapt.errors import UserError
from metadapt.tasks import TaskBatch, TaskSource
from metadapt.training import distributed
from metadapt.training.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from metadapt.training.run import checkpoint_path, config_path, restore_state

VAL_SEED_OFFSET = 10_007  # validation tasks come from their own stream, never the training one


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, step: int, run_dir: Path, signum: int):
        self.step, self.run_dir, self.signum = step, run_dir, signum
        super().__init__(
            f"{signal.Signals(signum).name} received: saved a checkpoint at step {step}; "
            f"resume with: metadapt train --resume --run-dir {run_dir}"
        )


class NonFiniteError(UserError):
    """A non-finite meta-loss or meta-gradient with ``train.on_nonfinite: stop``."""


def _compiled_step(config: Config, algorithm: Algorithm, optimizer, context):
    from metadapt.training.compiled import CompiledMetaStep

    if context.world_size > 1 or config.train.grad_shards > 1:
        raise UserError("train.compile=true runs in one process with train.grad_shards 0 or 1; "
                        "drop train.compile for multi-process or sharded training")
    try:
        return CompiledMetaStep(algorithm, optimizer)
    except ValueError as err:
        raise UserError(f"train.compile=true: {err}; set train.compile=false") from None


def build_optimizer(config: Config, algorithm: Algorithm) -> torch.optim.Optimizer:
    if config.train.optimizer == "adam":
        # the fused kernel updates every tensor in one call: on the sinusoid MLP's six tensors,
        # about a third of the default per-tensor loop's time (benchmarks/allocator.py)
        try:
            return torch.optim.Adam(algorithm.parameters(), lr=config.train.meta_lr, fused=True)
        except RuntimeError:  # a device or dtype the fused kernel does not cover
            return torch.optim.Adam(algorithm.parameters(), lr=config.train.meta_lr)
    return torch.optim.SGD(algorithm.parameters(), lr=config.train.meta_lr)


@torch.no_grad()
def validation_loss(algorithm: Algorithm, batch: TaskBatch, chunk: int = 100) -> float:
    """Mean query loss on held-out tasks after the algorithm's default adaptation."""
    return validation_metrics(algorithm, batch, chunk)["query_loss"]


def validation_metrics(algorithm: Algorithm, batch: TaskBatch, chunk: int = 100) -> dict[str, float]:
    """Mean query loss (and accuracy, for classification) on held-out tasks after the
    algorithm's default adaptation."""
    total, correct = 0.0, 0.0
    for start in range(0, batch.num_tasks, chunk):
        part = batch[start:start + chunk]
        prediction = algorithm.adapt_tasks(part.support_x, part.support_y).predict(part.query_x)
        total += float(algorithm.loss_fn(prediction.flatten(0, 1), part.query_y.flatten(0, 1))) * part.num_tasks
        if not torch.is_floating_point(part.query_y):
            correct += float((prediction.argmax(-1) == part.query_y).float().mean()) * part.num_tasks
    metrics = {"query_loss": total / batch.num_tasks}
    if not torch.is_floating_point(batch.query_y):
        metrics["accuracy"] = correct / batch.num_tasks
    return metrics


def _prepare_run_dir(run_dir: Path, config: Config, resume: bool, overwrite: bool) -> None:
    if resume:
        if not config_path(run_dir).is_file():
            raise UserError(f"cannot resume: {str(run_dir)!r} is not a run; drop --resume to start a new run")
        for torn in checkpoint_path(run_dir).parent.glob(".*.tmp"):  # left by a crash mid-write
            torn.unlink()
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UserError(
                f"run directory {str(run_dir)!r} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --run-dir"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path(run_dir), yaml.safe_dump(config.to_dict(), sort_keys=False))


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metrics logged after the checkpoint so the log matches the state."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line torn by a crash mid-write
    atomic_write_text(path, "".join(line + "\n" for line in kept))


@contextmanager
def _stop_on_signals():
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps."""
    received: list[int] = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(config: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False,
          progress: bool = True, tasks: TaskSource | None = None) -> dict:
    """Meta-train ``config`` into ``run_dir``; returns a summary (final losses, throughput).

    ``tasks`` replaces the recipe's task source (any object with ``sample(n, generator)``).
    """
    run_dir = Path(run_dir)
    context = distributed.from_environment(config.train.device)
    try:
        return _train(config, run_dir, resume, overwrite, progress, tasks, context)
    finally:
        distributed.shutdown(context)


def _train(config, run_dir, resume, overwrite, progress, tasks, context) -> dict:
    val_tasks = tasks if tasks is not None else build_tasks(config, "val")  # bad data fails before any file is written
    tasks = build_tasks(config) if tasks is None else tasks
    if context.is_main:
        _prepare_run_dir(run_dir, config, resume, overwrite)
    distributed.barrier(context)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    if config.train.keep_freed_memory:
        keep_freed_memory()
    device = distributed.process_device(config.train.device, context)
    config.train.device = str(device)

    algorithm = build_algorithm(config)
    parameters = list(algorithm.parameters())
    optimizer = build_optimizer(config, algorithm)
    generator = torch.Generator().manual_seed(config.train.seed)
    val_generator = torch.Generator().manual_seed(config.train.seed + VAL_SEED_OFFSET)
    val_batch = val_tasks.sample(config.train.val_tasks, val_generator).to(device) if context.is_main else None
    step, best, skipped, resumed_seconds = 0, math.inf, 0, 0.0
    metrics_path = run_dir / "metrics.jsonl"

    if resume and not checkpoint_path(run_dir, "last").is_file():
        resume = False  # killed before its first checkpoint: start again from step 0, same result
        if context.is_main:
            _truncate_metrics(metrics_path, 0)
    if resume:
        payload = load_checkpoint(checkpoint_path(run_dir, "last"))
        restore_state(algorithm, payload, checkpoint_path(run_dir, "last"))
        try:
            optimizer.load_state_dict(payload["optimizer"])
            generator.set_state(payload["generator"])
            step, best = int(payload["step"]), float(payload["best"])
            resumed_seconds = float(payload.get("seconds", 0.0))  # training time before this resume
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise UserError(f"checkpoint {str(checkpoint_path(run_dir, 'last'))!r} is incomplete ({err}); "
                            "resume from another checkpoint or retrain") from None
        if context.is_main:
            _truncate_metrics(metrics_path, step)
    distributed.barrier(context)

    saved_at = [step if resume else None]
    fused = _compiled_step(config, algorithm, optimizer, context) if config.train.compile else None

    def checkpoint(which: str) -> None:
        if which == "last":
            saved_at[0] = step
        if context.is_main:
            save_checkpoint(checkpoint_path(run_dir, which), {
                "state": algorithm.state_dict(), "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(), "step": step, "best": best,
                "seconds": time.perf_counter() - started + resumed_seconds if step > started_step else resumed_seconds,
                "algorithm": config.algorithm.name,
            })

    total = config.train.iterations
    bar = tqdm(total=total, initial=step, desc=f"meta-train {config.algorithm.name}",
               disable=not (progress and context.is_main), dynamic_ncols=True, unit="it")
    started, started_step = time.perf_counter(), step
    running, last_val = None, None
    log = open(metrics_path, "a") if context.is_main else None
    try:
        with _stop_on_signals() as signals:
            while step < total:
                batch = tasks.sample(config.train.meta_batch_size, generator).to(device)
                if fused is not None:  # meta-gradient and update in one graph; nothing moves unless finite
                    loss_value, finite_flag = fused(batch)
                    loss_share, finite = loss_value.item(), bool(finite_flag)
                    metrics_share = {"query_loss": loss_share}
                else:
                    optimizer.zero_grad(set_to_none=True)
                    loss_share, metrics_share, finite = distributed.meta_gradient(
                        algorithm, parameters, batch, context, config.train.grad_shards)
                # one all-reduce agrees on the logged metrics, on faults, on signals and on the time limit
                limit = config.train.time_limit_s
                time_up = context.is_main and limit > 0 and time.perf_counter() - started >= limit
                keys = sorted(metrics_share)
                shared = distributed.sum_values(torch.tensor(
                    [float(not finite), float(bool(signals)), loss_share, float(time_up)] + [metrics_share[k] for k in keys],
                    dtype=torch.float64), context)
                any_fault, any_signal = shared[0].item() > 0, shared[1].item() > 0
                metrics = dict(zip(keys, shared[4:].tolist()))
                query_loss = metrics["query_loss"]
                if shared[3].item() > 0:
                    total = step + 1  # this is the last step: validate, log and checkpoint as at the end
                if any_fault:
                    if config.train.on_nonfinite == "stop":
                        distributed.barrier(context)
                        raise NonFiniteError(
                            f"non-finite meta-loss or meta-gradient at step {step + 1} (loss {shared[2].item()}); "
                            f"stopped; the last good checkpoint is kept ({'step ' + str(saved_at[0]) if saved_at[0] is not None else 'none was written yet'}). "
                            "Lower train.meta_lr or algorithm.inner_lr, or set train.on_nonfinite=skip"
                        )
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                elif fused is None:
                    optimizer.step()
                step += 1
                if not any_fault:
                    running = query_loss if running is None else 0.98 * running + 0.02 * query_loss
                bar.update(1)
                if context.is_main:
                    if any_fault:
                        log.write(json.dumps({"step": step, "split": "train", "skipped": "non-finite"}) + "\n")
                    if step % config.train.val_every == 0 or step == total:
                        val_metrics = validation_metrics(algorithm, val_batch)
                        last_val = val_metrics["query_loss"]
                        if last_val < best:
                            best = last_val
                            checkpoint("best")
                        log.write(json.dumps({"step": step, "split": "val", **val_metrics,
                                              "seconds": time.perf_counter() - started + resumed_seconds}) + "\n")
                    if step % config.train.log_every == 0 or step == total:
                        elapsed = time.perf_counter() - started
                        log.write(json.dumps({"step": step, "split": "train", **metrics,
                                              "iterations_per_second": (step - started_step) / max(elapsed, 1e-9)}) + "\n")
                        log.flush()
                        bar.set_postfix(loss=f"{running:.3f}" if running is not None else "-",
                                        val=f"{last_val:.3f}" if last_val is not None else "-")
                if step % config.train.checkpoint_every == 0 or step == total or any_signal:
                    if log:
                        log.flush()
                    checkpoint("last")
                if any_signal:
                    distributed.barrier(context)
                    raise Interrupted(step, run_dir, signals[0] if signals else signal.SIGTERM)
    finally:
        bar.close()
        if log:
            log.close()
    elapsed = time.perf_counter() - started
    summary = {
        "steps": step,
        "train_query_loss": running,
        "best_val_query_loss": best,
        "skipped_steps": skipped,
        "seconds": elapsed,
        "iterations_per_second": (step - started_step) / max(elapsed, 1e-9),
        "processes": context.world_size,
    }
    if context.is_main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
    distributed.barrier(context)  # no process tears down its connections while another still uses them
    return summary
