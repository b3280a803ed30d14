"""The meta-training loop: one readable function.

Each iteration draws a meta-batch from the run's own seeded generator, computes the
algorithm's meta-loss, and steps the outer optimizer. Every ``val_every`` iterations the
meta-parameters are adapted to a fixed set of held-out tasks and the best are kept. The
checkpoint holds meta-parameters, optimizer, generator state, step and best score, so
``resume=True`` continues exactly where the last checkpoint left off.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from metadapt.algorithms import Algorithm
from metadapt.build import build_algorithm, build_tasks
from metadapt.config import Config
from metadapt.errors import UserError
from metadapt.tasks import TaskBatch
from metadapt.training.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from metadapt.training.run import checkpoint_path, config_path, restore_state

VAL_SEED_OFFSET = 10_007  # validation tasks come from their own stream, never the training one


def build_optimizer(config: Config, algorithm: Algorithm) -> torch.optim.Optimizer:
    if config.train.optimizer == "adam":
        return torch.optim.Adam(algorithm.parameters(), lr=config.train.meta_lr)
    return torch.optim.SGD(algorithm.parameters(), lr=config.train.meta_lr)


@torch.no_grad()
def validation_loss(algorithm: Algorithm, batch: TaskBatch) -> float:
    """Mean query loss on held-out tasks after the algorithm's default adaptation."""
    adapted = algorithm.adapt_tasks(batch.support_x, batch.support_y)
    return float(algorithm.loss_fn(adapted.predict(batch.query_x), batch.query_y))


def _prepare_run_dir(run_dir: Path, config: Config, resume: bool, overwrite: bool) -> None:
    last = checkpoint_path(run_dir, "last")
    if resume:
        if not last.is_file():
            raise UserError(f"cannot resume: {str(last)!r} not found; drop --resume to start a new run")
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
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(config: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> dict:
    """Meta-train ``config`` into ``run_dir``; returns a summary (final losses, throughput)."""
    run_dir = Path(run_dir)
    _prepare_run_dir(run_dir, config, resume, overwrite)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = torch.device(config.train.device)

    algorithm = build_algorithm(config)
    optimizer = build_optimizer(config, algorithm)
    tasks = build_tasks(config)
    generator = torch.Generator().manual_seed(config.train.seed)
    val_batch = tasks.sample(config.train.val_tasks, torch.Generator().manual_seed(config.train.seed + VAL_SEED_OFFSET)).to(device)
    step, best = 0, math.inf
    metrics_path = run_dir / "metrics.jsonl"

    if resume:
        payload = load_checkpoint(checkpoint_path(run_dir, "last"))
        restore_state(algorithm, payload["state"], checkpoint_path(run_dir, "last"))
        optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator"])
        step, best = int(payload["step"]), float(payload["best"])
        _truncate_metrics(metrics_path, step)

    def checkpoint(which: str) -> None:
        save_checkpoint(checkpoint_path(run_dir, which), {
            "state": algorithm.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "step": step, "best": best,
            "algorithm": config.algorithm.name,
        })

    total = config.train.iterations
    bar = tqdm(total=total, initial=step, desc=f"meta-train {config.algorithm.name}", disable=not progress,
               dynamic_ncols=True, unit="it")
    started, started_step = time.perf_counter(), step
    running = None
    last_val = None
    with open(metrics_path, "a") as log:
        while step < total:
            batch = tasks.sample(config.train.meta_batch_size, generator).to(device)
            loss, metrics = algorithm.meta_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running = metrics["query_loss"] if running is None else 0.98 * running + 0.02 * metrics["query_loss"]
            bar.update(1)
            record = None
            if step % config.train.log_every == 0 or step == total:
                elapsed = time.perf_counter() - started
                record = {"step": step, "split": "train", **metrics,
                          "iterations_per_second": (step - started_step) / max(elapsed, 1e-9)}
            if step % config.train.val_every == 0 or step == total:
                last_val = validation_loss(algorithm, val_batch)
                if last_val < best:
                    best = last_val
                    checkpoint("best")
                log.write(json.dumps({"step": step, "split": "val", "query_loss": last_val}) + "\n")
            if record is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{running:.3f}", val=f"{last_val:.3f}" if last_val is not None else "-")
            if step % config.train.checkpoint_every == 0 or step == total:
                log.flush()
                checkpoint("last")
    bar.close()
    elapsed = time.perf_counter() - started
    summary = {
        "steps": step,
        "train_query_loss": running,
        "best_val_query_loss": best,
        "seconds": elapsed,
        "iterations_per_second": (step - started_step) / max(elapsed, 1e-9),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
    return summary
