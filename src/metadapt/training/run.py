"""A run directory on disk, and loading a trained run back for adaptation."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from metadapt.algorithms import Adapted, Algorithm
from metadapt.build import build_algorithm, build_family
from metadapt.config import Config, read_text_file, read_yaml, resolve
from metadapt.errors import UserError
from metadapt.files import atomic_write_text, read_json, read_jsonl
from metadapt.tasks import TaskFamily, TaskSource
from metadapt.training import rundir
from metadapt.training.checkpoint import load_checkpoint
from metadapt.training.distributed import check_device


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / "config.yaml"


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def read_run_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist; "
                        "train one with 'metadapt train RECIPE'")
    path = config_path(run_dir)
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a metadapt run (no config.yaml); "
                        "pass the folder 'metadapt train' wrote")
    what = f"run config {str(path)!r}"
    data = read_yaml(read_text_file(path, what), what)
    if not isinstance(data, dict):
        raise UserError(f"{str(path)!r} is not a run's config (not a mapping); restore it or retrain the run")
    return resolve(data, legacy=True)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Before anything is written: ``run_dir`` can hold this run (a resume needs a run there; a new
    run needs an empty or absent folder, or a *run* with ``overwrite``)."""
    rundir.check_writable_place(run_dir)
    if resume:
        if not config_path(run_dir).is_file():
            what = "does not exist" if not run_dir.exists() else "is not a run (no config.yaml)"
            raise UserError(f"cannot resume: {str(run_dir)!r} {what}; drop --resume to start a new run")
        read_run_config(run_dir)
        if not rundir.is_run_config(config_path(run_dir)):
            raise UserError(f"cannot resume: {str(run_dir)!r} is not a metadapt run (its config.yaml is not "
                            "one metadapt wrote, e.g. a recipe); train into another --run-dir")
        return
    if not run_dir.is_dir() or not any(p.name != ".lock" for p in run_dir.iterdir()):
        return
    if not overwrite:
        raise UserError(f"run directory {str(run_dir)!r} already exists; pass --resume to continue it, "
                        "--overwrite to replace it, or choose another --run-dir")
    rundir.refuse_unless_run(run_dir)


def prepare_run_dir(run_dir: Path, config: dict, resume: bool, overwrite: bool) -> None:
    """With the run's lock held: clear a replaced run (``overwrite``), drop files torn by a crash, and
    record the resolved config (``Config.to_dict()``)."""
    if not resume and overwrite:
        rundir.clear_for_overwrite(run_dir)
    elif not resume and any(p.name != ".lock" for p in run_dir.iterdir()):  # written since check_run_dir
        raise UserError(f"run directory {str(run_dir)!r} was written by another process meanwhile; choose "
                        "another --run-dir")
    for torn in checkpoint_path(run_dir).parent.glob(".*.tmp"):  # left by a crash mid-write
        torn.unlink()
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
    expected = algorithm.state_dict()
    for key, value in payload["state"].items():
        want = expected.get(key)
        if isinstance(want, torch.Tensor) and isinstance(value, torch.Tensor) and (
                value.dtype != want.dtype or value.shape != want.shape):
            raise UserError(
                f"checkpoint {str(source)!r} does not match this run's algorithm and model ({key[:60]} is "
                f"{value.dtype} {tuple(value.shape)}, the model's {want.dtype} {tuple(want.shape)}); was it "
                "written by another recipe?")
    try:
        algorithm.load_state_dict(payload["state"])
    except (RuntimeError, KeyError) as err:
        detail = str(err).splitlines()[0][:160]
        raise UserError(
            f"checkpoint {str(source)!r} does not match this run's algorithm and model ({detail}); "
            "was it written by another recipe?"
        ) from None


MAX_STEPS = 10_000


def check_steps(steps) -> int | None:
    """Adaptation steps as the user gave them: None (the run's default) or an integer 0 … MAX_STEPS."""
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not float(steps).is_integer():
        raise UserError(f"steps must be a whole number, got {steps!r}")
    if not 0 <= int(steps) <= MAX_STEPS:
        raise UserError(f"steps must be between 0 and {MAX_STEPS:,}, got {steps}")
    return int(steps)


@dataclass
class Run:
    """A trained run: its directory, resolved config and algorithm (meta-parameters loaded)."""

    path: Path
    config: Config
    algorithm: Algorithm
    family: TaskFamily
    #: a model and loss given from Python in place of the recipe's (the scratch baseline reuses them)
    given: dict = field(default_factory=dict)
    #: where evaluation writes its results, figures and report while it runs (None: ``path``)
    out: Path | None = None
    #: the runs evaluated beside this one (their configs go into the report's provenance)
    compared: list = field(default_factory=list)

    @property
    def outputs(self) -> Path:
        return self.out or self.path

    @property
    def device(self) -> torch.device:
        return next(self.algorithm.parameters()).device

    def adapt(self, support_x, support_y, steps: int | None = None, keep_steps: bool = True) -> Adapted:
        """Adapt the meta-learned model to a new task given its support set (tensors or NumPy arrays:
        inputs ``[S, *input_shape]``; targets ``[S, outputs]`` or ``[S]`` for regression, class indices
        ``[S]`` for classification); see :meth:`Algorithm.adapt`. Inputs are checked and cast to the
        model's dtype and device. ``keep_steps=False`` keeps only the adapted parameters, not those
        after every step (memory that does not grow with ``steps``)."""
        x, y = self.check_support(support_x, support_y)
        steps = check_steps(steps)
        if keep_steps:
            return self.algorithm.adapt(x, y, steps)
        return self.algorithm.adapt(x, y, steps, keep_steps=False)

    def check_support(self, support_x, support_y) -> tuple[torch.Tensor, torch.Tensor]:
        family, dtype = self.family, next(self.algorithm.parameters()).dtype
        try:
            x, y = torch.as_tensor(support_x), torch.as_tensor(support_y)
        except (TypeError, ValueError, RuntimeError) as err:
            raise UserError(f"the support set must be tensors or arrays of numbers ({err})") from None
        shape = tuple(family.input_shape)
        if x.dim() == len(shape) and shape == (1,) and x.shape[0] > 0:
            x = x[:, None]  # one scalar input per example
        if tuple(x.shape[1:]) != shape or x.shape[0] == 0:
            raise UserError(f"support_x has shape {tuple(x.shape)}; this run takes "
                            f"[S, {', '.join(map(str, shape))}] with S ≥ 1 examples")
        if y.dim() == 0 or len(y) != len(x):
            given = len(y) if y.dim() else "one value"
            raise UserError(f"support_x has {len(x)} examples but support_y {given}")
        integers = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
        for name, t in (("support_x", x), ("support_y", y)):
            if t.is_complex() or not (t.is_floating_point() or t.dtype in integers):
                raise UserError(f"{name} must hold real numbers, got {t.dtype}")
        x = x.to(dtype)
        if not bool(torch.isfinite(x).all()):
            raise UserError("support_x holds NaN or infinite values")
        if family.classification:
            if y.is_floating_point() and not bool((y == y.round()).all()) or y.dim() != 1:
                raise UserError(f"support_y must be class indices of shape [S], got {tuple(y.shape)} "
                                f"{y.dtype}")
            y = y.long()
            if bool((y < 0).any()) or bool((y >= family.outputs).any()):
                raise UserError(f"support_y must be class indices in 0 … {family.outputs - 1}")
        else:
            if y.dim() == 1 and family.outputs == 1:
                y = y[:, None]  # [S] targets of a one-output regression; never broadcast against [S, 1]
            if tuple(y.shape[1:]) != (family.outputs,):
                raise UserError(f"support_y has shape {tuple(y.shape)}; this run predicts {family.outputs} "
                                f"value(s): pass [S, {family.outputs}]")
            y = y.to(dtype)
            if not bool(torch.isfinite(y).all()):
                raise UserError("support_y holds NaN or infinite values (or values beyond float32's range)")
        return x.to(self.device), y.to(self.device)

    def metrics(self) -> list[dict]:
        """The training log's records (a line torn by a crash is skipped)."""
        return read_jsonl(self.path / "metrics.jsonl")

    def summary(self) -> dict | None:
        """The training summary, or None if it is missing or unreadable (a run stopped early)."""
        return read_json(self.path / "summary.json")


def load(run_dir: str | Path, which: str = "best", device: str | None = None, model: nn.Module | None = None,
         loss: Callable | None = None, tasks: TaskFamily | TaskSource | None = None) -> Run:
    """Load a trained run: ``which`` is ``"best"`` (by validation loss), ``"last"``, a kept
    ``"step-N"`` or a checkpoint's path.

    ``device`` defaults to the run's training device, or the CPU where that is unavailable.
    ``model``, ``loss`` and ``tasks`` are needed again for a run trained with them given from
    Python (its recipe records only their names).
    """
    run_dir = Path(run_dir).expanduser()
    config = read_run_config(run_dir)
    if device is None:  # the run's training device where this machine has it, else the CPU
        try:
            device = str(check_device(config.train.device))
        except UserError:
            device = "cpu"
    config.train.device = str(check_device(device, "device"))
    if which == "best" and not checkpoint_path(run_dir, "best").is_file():
        which = "last"
    path = rundir.checkpoint_choice(run_dir, which)
    if config.model.name == "given" and model is None:
        raise UserError(f"run {str(run_dir)!r} was trained with a model given from Python "
                        f"({config.model.source}); load it with metadapt.load(RUN, model=...)")
    family = build_family(config, tasks)
    payload = load_checkpoint(path)
    algorithm = build_algorithm(config, family, model=model, loss=loss)
    restore_state(algorithm, payload, path)
    algorithm.eval()
    return Run(run_dir, config, algorithm, family, {"model": model, "loss": loss})
