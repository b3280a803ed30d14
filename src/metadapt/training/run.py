"""A run directory on disk, and loading a trained run back for adaptation."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from metadapt.algorithms import Adapted, Algorithm
from metadapt.build import build_algorithm, build_family
from metadapt.config import Config, resolve
from metadapt.errors import UserError
from metadapt.files import atomic_write_text
from metadapt.tasks import TaskFamily, TaskSource
from metadapt.training.checkpoint import load_checkpoint


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / "config.yaml"


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def read_run_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist; "
                        "train one with 'metadapt train RECIPE'")
    path = config_path(run_dir)
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a metadapt run (no config.yaml); "
                        "pass the folder 'metadapt train' wrote")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UserError(f"{str(path)!r} is not valid YAML; restore it or retrain the run") from None
    if not isinstance(data, dict):
        raise UserError(f"{str(path)!r} is not a run's config (not a mapping); restore it or retrain the run")
    return resolve(data, legacy=True)


def prepare_run_dir(run_dir: Path, config: dict, resume: bool, overwrite: bool) -> None:
    """Check ``run_dir`` against ``resume`` / ``overwrite`` and record the resolved config
    (``Config.to_dict()``)."""
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
    atomic_write_text(config_path(run_dir), yaml.safe_dump(config, sort_keys=False))


def truncate_metrics(path: Path, step: int) -> None:
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


def restore_state(algorithm: Algorithm, payload: dict, source: Path) -> None:
    written_by = payload.get("algorithm")
    if None not in (written_by, algorithm.name_in_config) and written_by != algorithm.name_in_config:
        raise UserError(
            f"checkpoint {str(source)!r} was written by {written_by}, but this run's recipe says "
            f"{algorithm.name_in_config}; was it copied from another run?"
        )
    try:
        algorithm.load_state_dict(payload["state"])
    except (RuntimeError, KeyError) as err:
        detail = str(err).splitlines()[0][:160]
        raise UserError(
            f"checkpoint {str(source)!r} does not match this run's algorithm and model ({detail}); "
            "was it written by another recipe?"
        ) from None


@dataclass
class Run:
    """A trained run: its directory, resolved config and algorithm (meta-parameters loaded)."""

    path: Path
    config: Config
    algorithm: Algorithm
    family: TaskFamily
    #: a model and loss given from Python in place of the recipe's (the scratch baseline reuses them)
    given: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.algorithm.parameters()).device

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None) -> Adapted:
        """Adapt the meta-learned model to a new task; see :meth:`Algorithm.adapt`."""
        return self.algorithm.adapt(support_x.to(self.device), support_y.to(self.device), steps)

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(run_dir: str | Path, which: str = "best", device: str | None = None, model: nn.Module | None = None,
         loss: Callable | None = None, tasks: TaskFamily | TaskSource | None = None) -> Run:
    """Load a trained run: ``which`` is ``"best"`` (by validation loss) or ``"last"``.

    ``device`` defaults to the run's training device, or the CPU where that is unavailable.
    ``model``, ``loss`` and ``tasks`` are needed again for a run trained with them given from
    Python (its recipe records only their names).
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if device is None:
        device = config.train.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
    config.train.device = device
    path = checkpoint_path(run_dir, which)
    if which == "best" and not path.is_file():
        path = checkpoint_path(run_dir, "last")
    if config.model.name == "given" and model is None:
        raise UserError(f"run {str(run_dir)!r} was trained with a model given from Python "
                        f"({config.model.source}); load it with metadapt.load(RUN, model=...)")
    family = build_family(config, tasks)
    payload = load_checkpoint(path)
    algorithm = build_algorithm(config, family, model=model, loss=loss)
    restore_state(algorithm, payload, path)
    algorithm.eval()
    return Run(run_dir, config, algorithm, family, {"model": model, "loss": loss})
