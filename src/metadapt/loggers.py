"""Optional experiment loggers beside ``metrics.jsonl`` (which stays the source of truth): TensorBoard
through ``torch.utils.tensorboard`` (``pip install 'metadapt[tensorboard]'``) and Weights & Biases
(``pip install 'metadapt[wandb]'``), named in the recipe as ``train.loggers: [tensorboard, wandb]``.

Each receives every line the trainer writes to ``metrics.jsonl``, as ``split/metric`` scalars at its
step. TensorBoard writes into ``RUN/tensorboard/``; W&B into ``RUN/wandb/`` with the run's config, its
run id derived from the run directory so that a resumed run continues the same W&B run
(``WANDB_MODE=offline`` works without a network).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

from metadapt.errors import UserError

LOGGERS = ("tensorboard", "wandb")


def _scalar(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoard:
    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, split: str, metrics: dict, step: int) -> None:
        for key, value in metrics.items():
            if _scalar(value):
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, config: dict):
        import wandb

        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project="metadapt", name=config.get("name"), id=run_id, resume="allow",
                              dir=str(run_dir), config=config, reinit="finish_previous")

    def log(self, split: str, metrics: dict, step: int) -> None:
        self.run.log({f"{split}/{k}": v for k, v in metrics.items() if _scalar(v)}, step=step)

    def close(self) -> None:
        self.run.finish()


def check_loggers(names: list[str]) -> None:
    """Refuse, before training, a logger that is unknown or not installed."""
    import importlib.util

    for name in names:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
        if module is None:
            raise UserError(f"train.loggers: unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        if importlib.util.find_spec(module) is None:
            raise UserError(f"train.loggers names {name}, which is not installed; "
                            f"pip install 'metadapt[{name}]'")


def open_loggers(names: list[str], run_dir: Path, config: dict) -> list:
    check_loggers(names)
    return [{"tensorboard": TensorBoard, "wandb": WandB}[name](run_dir, config) for name in names]
