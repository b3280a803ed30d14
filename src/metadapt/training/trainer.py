"""The meta-training loop: one readable function.

Each iteration asks the outer step (``steps.py``) for one meta-update, which draws its
meta-batch from the run's own seeded generator; all processes agree on the outcome; the update
is applied or, if anything was non-finite, dropped. Every ``val_every`` iterations the
meta-parameters are adapted to a fixed set of held-out tasks and the best are kept. The
checkpoint holds the meta-parameters, whatever state the outer step keeps (the optimizer's),
the generator state, step and best score, so
``resume=True`` continues to the same parameters, bit for bit, as a run never interrupted.
The same loop runs under ``torchrun`` (see ``distributed.py``); only rank 0 writes files.
SIGINT / SIGTERM finish the current step, save a checkpoint and raise :class:`Interrupted`.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch import nn

from metadapt.algorithms import Algorithm
from metadapt.allocator import keep_freed_memory
from metadapt.build import build_algorithm, build_family
from metadapt.config import Config, Section
from metadapt.errors import UserError
from metadapt.files import atomic_write_text, strict_json
from metadapt.loggers import check_loggers, open_loggers
from metadapt.progress import progress as progress_bar
from metadapt.registry import import_path, lookup
from metadapt.resources import refuse_unless_fits
from metadapt.tasks import GivenTasks, TaskBatch, TaskFamily, TaskSource
from metadapt.tasks.family import GivenOptions
from metadapt.training import distributed, rundir
from metadapt.training.checkpoint import check_optimizer_state, load_checkpoint, read_step, save_checkpoint
from metadapt.training.run import (
    check_run_dir,
    checkpoint_path,
    prepare_run_dir,
    read_run_config,
    restore_state,
    truncate_metrics,
)
from metadapt.training.steps import build_optimizer, build_outer_step  # noqa: F401  (build_optimizer: API)

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


@torch.no_grad()
def validation_loss(algorithm: Algorithm, batch: TaskBatch, chunk: int = 100) -> float:
    """Mean query loss on held-out tasks after the algorithm's default adaptation."""
    return validation_metrics(algorithm, batch, chunk)["query_loss"]


def validation_metrics(algorithm: Algorithm, batch: TaskBatch, chunk: int = 100) -> dict[str, float]:
    """Mean query loss (and accuracy, for classification) on held-out tasks after the
    algorithm's default adaptation; an algorithm with a ``validation_metrics(batch)`` method of its
    own (the learned optimizer scores the objective it minimises) is asked instead."""
    own = getattr(algorithm, "validation_metrics", None)
    if own is not None:
        return own(batch)
    total, correct = 0.0, 0.0
    for start in range(0, batch.num_tasks, chunk):
        part = batch[start:start + chunk]
        prediction = algorithm.adapt_tasks(part.support_x, part.support_y).predict(part.query_x)
        total += (float(algorithm.loss_fn(prediction.flatten(0, 1), part.query_y.flatten(0, 1)))
                  * part.num_tasks)
        if not torch.is_floating_point(part.query_y):
            correct += float((prediction.argmax(-1) == part.query_y).float().mean()) * part.num_tasks
    metrics = {"query_loss": total / batch.num_tasks}
    if not torch.is_floating_point(batch.query_y):
        metrics["accuracy"] = correct / batch.num_tasks
    return metrics


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


def record_given(config: Config, family: TaskFamily | None = None, model: nn.Module | None = None,
                 loss: Callable | None = None) -> Config:
    """Name in the config what was given from Python instead of the recipe's, so the run's
    ``config.yaml`` says what it was trained on and ``eval`` rebuilds it or refuses clearly. A
    family that cannot be imported back, or a plain task source (a ``GivenTasks``), is recorded as
    ``given`` with the shapes it produces, so the run's model can be rebuilt without it."""
    if isinstance(family, GivenTasks):
        config.task = Section("task", "given", family.options)
    elif family is not None:
        path = import_path(family)
        if path:
            config.task = Section("task", path, family.options)
        else:
            config.task = Section("task", "given", GivenOptions(
                source=type(family).__qualname__, input_shape=list(family.input_shape),
                outputs=int(family.outputs), classification=bool(family.classification),
                shots=int(getattr(family.options, "shots", 1))))
    if model is not None:
        source = import_path(model) or type(model).__qualname__
        config.model = Section("model", "given", lookup("model", "given").options(source=source))
    if loss is not None:
        config.loss = import_path(loss) or f"given:{getattr(loss, '__qualname__', type(loss).__qualname__)}"
    return config


def train(config: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False,
          progress: bool = True, tasks: TaskFamily | TaskSource | None = None, model: nn.Module | None = None,
          loss: Callable | None = None, resume_from: str | None = None) -> dict:
    """Meta-train ``config`` into ``run_dir``; returns a summary (final losses, throughput).

    ``tasks`` (a task family, or any object with ``sample(n, generator)``), ``model`` (any
    ``nn.Module``) and ``loss`` (any ``loss(prediction, target) -> scalar``) replace the recipe's;
    the run's config records their names. ``resume`` continues from the last checkpoint (or, if it is
    missing, the newest kept one); ``resume_from`` (``best``, ``step-N`` or a path) from that one. A
    resume may change only the settings ``rundir.RESUMABLE`` lists.
    """
    run_dir = Path(run_dir).expanduser()
    resume = resume or resume_from is not None
    if tasks is not None and not isinstance(tasks, TaskFamily):
        tasks = GivenTasks.wrap(tasks)  # a plain task source: its shapes are read once, here
    config = record_given(config, tasks, model, loss)
    context = distributed.from_environment(config.train.device)
    try:
        return _train(config, run_dir, resume, overwrite, progress, context, tasks, model, loss, resume_from)
    finally:
        distributed.shutdown(context)


def _train(config, run_dir, resume, overwrite, progress, context, given_tasks, given_model,
           given_loss, resume_from) -> dict:
    cfg = config.train
    # ---- everything the run needs, built and checked before any file is written -----------------
    family = build_family(config, given_tasks)
    val_tasks, train_tasks = family.tasks("val"), family.tasks("train")
    if not getattr(family, "reinforcement", False):
        family.eval_settings(config.eval)  # refuses now, not after training, what evaluation cannot draw
    recorded = config.to_dict()  # the device as the user wrote it, not this process's
    device = distributed.process_device(cfg.device, context)
    cfg.device = str(device)
    algorithm = build_algorithm(config, family, model=given_model, loss=given_loss)
    outer = build_outer_step(config, algorithm, context, device)
    check_loggers(cfg.loggers)
    estimate = getattr(algorithm, "memory_estimate", None)
    if estimate is not None:  # tasks differentiated at once: one shard of the meta-batch (see distributed.py)
        at_once = math.ceil(cfg.meta_batch_size / max(cfg.grad_shards, context.world_size, 1))
        refuse_unless_fits(estimate(at_once), device, f"a meta-step of {config.algorithm.name}",
                           "set train.grad_shards to differentiate the meta-batch in slices (the same "
                           "numbers), or lower algorithm.inner_steps or train.meta_batch_size")

    # ---- the run directory: checked, locked, then (re)written — never before all of the above ------
    with ExitStack() as stack:
        refusal = None
        try:
            if context.is_main:
                check_run_dir(run_dir, resume, overwrite)
            start_from = _resume_point(run_dir, config, recorded, resume_from) if resume else None
            if context.is_main:
                stack.enter_context(rundir.locked(run_dir, "train"))
        except UserError as err:
            refusal = err
        # every process learns of a refusal (checked by rank 0 alone) before any waits for the others
        if distributed.agree(context, {"refused": refusal is not None})["refused"] > 0:
            raise refusal or UserError("refused by the main process")
        if cfg.deterministic:
            stack.enter_context(deterministic_kernels())
        return _train_locked(config, run_dir, recorded, resume, overwrite, progress, context, val_tasks,
                             train_tasks, device, algorithm, outer, start_from)


@contextmanager
def deterministic_kernels():
    """``train.deterministic``: PyTorch's deterministic kernels for the run, its setting restored after.
    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` before its first use in the process; it is set here where
    the user has not, which is in time when training is the process's first GPU work (the CLI)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = benchmark


def _resume_point(run_dir: Path, config: Config, recorded: dict, resume_from: str | None) -> Path | None:
    """The checkpoint a resume continues from, after refusing a config change a resume cannot make;
    None for a run killed before its first checkpoint (it starts again from step 0)."""
    saved = read_run_config(run_dir)
    rundir.check_resume_changes(saved.to_dict(), recorded, config.algorithm.entry.target.resume_fixed(config))
    if resume_from is not None:
        return rundir.checkpoint_choice(run_dir, resume_from)
    last = checkpoint_path(run_dir, "last")
    if last.is_file():
        return last
    kept = rundir.step_checkpoints(run_dir)
    newest = kept[-1][1] if kept else None
    best = checkpoint_path(run_dir, "best")
    if best.is_file() and (newest is None or (read_step(best) or 0) > kept[-1][0]):
        newest = best
    if newest is not None and os.environ.get("RANK", "0") == "0":
        print(f"metadapt: {run_dir}/checkpoints has no last.pt; resuming from {newest.name}", file=sys.stderr)
    return newest


def _train_locked(config, run_dir, recorded, resume, overwrite, progress, context, val_tasks, train_tasks,
                  device, algorithm, outer, start_from) -> dict:
    cfg = config.train
    metrics_path = run_dir / "metrics.jsonl"
    generator = torch.Generator().manual_seed(cfg.seed)
    step, best, skipped, resumed_seconds = 0, math.inf, 0, 0.0
    if start_from is not None:
        step, best, resumed_seconds = _restore(run_dir, start_from, algorithm, outer, generator)
    distributed.barrier(context)
    if context.is_main:
        prepare_run_dir(run_dir, recorded, resume, overwrite)
        if start_from is not None:
            moved = rundir.supersede(run_dir, step, start_from)
            if moved is not None:
                print(f"metadapt: resuming from step {step}; the later checkpoints and metrics were moved "
                      f"to {moved}", file=sys.stderr)
        if resume:
            truncate_metrics(metrics_path, step)
    distributed.barrier(context)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.keep_freed_memory:
        keep_freed_memory()

    # ---- validation tasks: their own stream, never the training one --------------------------------
    val_generator = torch.Generator().manual_seed(cfg.seed + VAL_SEED_OFFSET)
    val_batch = val_tasks.sample(cfg.val_tasks, val_generator).to(device) if context.is_main else None
    saved_at = step if start_from is not None else None  # the last checkpoint's step, for messages

    def checkpoint(which: str) -> None:
        """``best``, or ``last``: a kept step checkpoint that ``last.pt`` then links to."""
        if context.is_main:
            seconds = (time.perf_counter() - started + resumed_seconds if step > started_step
                       else resumed_seconds)
            payload = {
                "state": algorithm.state_dict(), **outer.state_dict(), "generator": generator.get_state(),
                "step": step, "best": best, "seconds": seconds, "algorithm": config.algorithm.name,
            }
            if which == "best":
                save_checkpoint(checkpoint_path(run_dir, "best"), payload)
                return
            path = checkpoint_path(run_dir, "last").with_name(rundir.step_name(step))
            save_checkpoint(path, payload)
            rundir.link_last(run_dir, path)
            rundir.prune(run_dir, cfg.keep_checkpoints)

    # ---- the loop -----------------------------------------------------------------------------------
    total = cfg.iterations
    bar = progress_bar(total, initial=step, desc=f"meta-train {config.algorithm.name}", unit="it",
                       enabled=progress and context.is_main)
    started, started_step = time.perf_counter(), step
    running, last_val = None, None
    log = open(metrics_path, "a") if context.is_main else None
    loggers = open_loggers(cfg.loggers, run_dir, recorded) if context.is_main else []

    def record(row: dict) -> None:
        """One line of metrics.jsonl, and the same values to every optional logger."""
        log.write(strict_json(row) + "\n")
        values = {k: v for k, v in row.items() if k not in ("step", "split")}
        for logger in loggers:
            logger.log(row["split"], values, row["step"])

    try:
        with _stop_on_signals() as signals:
            while step < total:
                # one meta-update: each process computes its share of the meta-batch
                result = outer.step(train_tasks, generator)

                # every process agrees on faults, signals, the time limit and the logged metrics
                time_up = (context.is_main and cfg.time_limit_s > 0
                           and time.perf_counter() - started >= cfg.time_limit_s)
                flags = distributed.agree(context, {
                    "fault": not result.finite, "signal": bool(signals), "time_up": time_up,
                    "loss": result.loss, **{f"metric:{k}": v for k, v in result.metrics.items()}})
                metrics = {k[len("metric:"):]: v for k, v in flags.items() if k.startswith("metric:")}
                fault, interrupted = flags["fault"] > 0, flags["signal"] > 0
                if flags["time_up"] > 0:
                    total = step + 1  # this is the last step: validate, log and checkpoint as at the end

                # apply the update, or follow the non-finite policy
                if fault and cfg.on_nonfinite == "stop":
                    distributed.barrier(context)
                    kept = f"step {saved_at}" if saved_at is not None else "none was written yet"
                    raise NonFiniteError(
                        f"non-finite meta-loss or meta-gradient at step {step + 1} (loss {flags['loss']}); "
                        f"stopped; the last good checkpoint is kept ({kept}). "
                        "Resume with train.on_nonfinite=skip to skip such steps, or start a new run "
                        "(--overwrite or another --run-dir) with a lower train.meta_lr or algorithm.inner_lr")
                if fault:
                    skipped += 1
                    outer.discard()
                else:
                    outer.commit()
                    query_loss = metrics["query_loss"]
                    running = query_loss if running is None else 0.98 * running + 0.02 * query_loss
                step += 1
                bar.update(1)

                # validation and logging (the main process writes)
                if context.is_main:
                    if fault:
                        record({"step": step, "split": "train", "skipped": "non-finite"})
                    if step % cfg.val_every == 0 or step == total:
                        val_metrics = validation_metrics(algorithm, val_batch)
                        last_val = val_metrics["query_loss"]
                        if last_val < best:
                            best = last_val
                            checkpoint("best")
                        record({"step": step, "split": "val", **val_metrics,
                                "seconds": time.perf_counter() - started + resumed_seconds})
                    if step % cfg.log_every == 0 or step == total:
                        elapsed = time.perf_counter() - started
                        record({"step": step, "split": "train", **metrics,
                                "iterations_per_second": (step - started_step) / max(elapsed, 1e-9)})
                        log.flush()
                        bar.set_postfix(loss=f"{running:.3f}" if running is not None else "-",
                                        val=f"{last_val:.3f}" if last_val is not None else "-")

                # checkpoints, and a clean stop on a signal
                if step % cfg.checkpoint_every == 0 or step == total or interrupted:
                    if log:
                        log.flush()
                    saved_at = step
                    distributed.check_in_step(algorithm, context)
                    checkpoint("last")
                if interrupted:
                    distributed.barrier(context)
                    raise Interrupted(step, run_dir, signals[0] if signals else signal.SIGTERM)
    finally:
        bar.close()
        if log:
            log.close()
        for logger in loggers:
            logger.close()

    # ---- summary ------------------------------------------------------------------------------------
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
        atomic_write_text(run_dir / "summary.json", strict_json(summary, indent=1))
    distributed.barrier(context)  # no process tears down its connections while another still uses them
    if skipped and skipped == step - started_step:
        raise NonFiniteError(f"every one of the {skipped} steps was non-finite and skipped "
                             "(train.on_nonfinite=skip): the run learned nothing. Lower train.meta_lr or "
                             "algorithm.inner_lr and start it again with --overwrite")
    return summary


def _restore(run_dir: Path, path: Path, algorithm: Algorithm, outer,
             generator: torch.Generator) -> tuple[int, float, float]:
    """Load checkpoint ``path`` into the algorithm, the outer step and the generator, each checked
    before use; returns the step, the best validation loss and the training seconds before it."""
    try:
        payload = load_checkpoint(path)
        restore_state(algorithm, payload, path)
        try:
            outer.load_state_dict(payload)
            for optimizer in (v for v in vars(outer).values() if isinstance(v, torch.optim.Optimizer)):
                check_optimizer_state(optimizer, path)
            generator.set_state(payload["generator"])
            step, best = int(payload["step"]), float(payload["best"])
            seconds = float(payload.get("seconds", 0))
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as err:
            raise UserError(f"checkpoint {str(path)!r} is incomplete or does not match this run "
                            f"({type(err).__name__}: {str(err)[:100]})") from None
        if step < 0 or not math.isfinite(seconds):
            raise UserError(f"checkpoint {str(path)!r} records an impossible step {step}")
        return step, best, seconds
    except UserError as err:
        others = [n for n in rundir.kept_names(run_dir)  # only those that load: the advice must work
                  if not (run_dir / "checkpoints" / f"{n}.pt").samefile(path)
                  and read_step(run_dir / "checkpoints" / f"{n}.pt") is not None]
        advice = (f"resume from another kept checkpoint: metadapt train --resume-from {others[0]} "
                  f"--run-dir {run_dir} (kept: {', '.join(others)})" if others
                  else "no other checkpoint is kept; start the run again with --overwrite")
        raise UserError(f"{err}; {advice}") from None
