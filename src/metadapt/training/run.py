"""A run directory on disk, and loading a trained run back for adaptation."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from metadapt.algorithms import Adapted, Algorithm
from metadapt.build import build_algorithm
from metadapt.config import Config, build_config
from metadapt.errors import UserError
from metadapt.training.checkpoint import load_checkpoint


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / "config.yaml"


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def read_run_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist; train one with 'metadapt train RECIPE'")
    path = config_path(run_dir)
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a metadapt run (no config.yaml); pass the folder 'metadapt train' wrote")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UserError(f"{str(path)!r} is not valid YAML; restore it or retrain the run") from None
    return build_config(data)


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


def load(run_dir: str | Path, which: str = "best", device: str | None = None) -> Run:
    """Load a trained run: ``which`` is ``"best"`` (by validation loss) or ``"last"``.

    ``device`` defaults to the run's training device, or the CPU where that is unavailable.
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
    payload = load_checkpoint(path)
    algorithm = build_algorithm(config)
    restore_state(algorithm, payload, path)
    algorithm.eval()
    return Run(run_dir, config, algorithm)
