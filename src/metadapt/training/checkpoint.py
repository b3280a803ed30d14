"""Checkpoints written atomically, loaded without executing pickled code, and checked in full before
use: every tensor a plain dense array that owns its memory (contiguous, not expanded, not
overlapping another), of a standard dtype; the model's and the optimizer's tensors then of exactly
the shapes and dtypes the run's algorithm has (``restore_state``, ``check_optimizer_state``)."""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import torch

from metadapt.errors import UserError
from metadapt.files import atomic_write_bytes

DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.bool, torch.complex64}


def _tensors(value: Any, key: str = ""):
    """(key, tensor) for every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{key}[{i}]")


def _owned(value: Any) -> Any:
    """``value`` with every tensor a contiguous array of its own (views and expanded tensors copied)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size() and t.storage_offset() == 0
        return t if t.is_contiguous() and whole else t.contiguous().clone()
    if isinstance(value, dict):
        return {k: _owned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_owned(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_owned(v) for v in value)
    return value


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    payload = _owned(payload)
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def check_layout(payload: dict, source: Path) -> None:
    """Refuse any tensor that is not a plain dense array owning its memory: sparse or other layouts,
    unusual dtypes, non-contiguous (transposed, expanded) tensors, storage too small for the tensor,
    or two tensors sharing memory."""
    seen: dict[int, str] = {}
    for key, t in _tensors(payload):
        problem = None
        if t.layout != torch.strided or t.is_quantized:
            problem = f"has layout {t.layout}"
        elif t.dtype not in DTYPES:
            problem = f"has dtype {t.dtype}"
        elif not t.is_contiguous():
            problem = f"is not contiguous (strides {tuple(t.stride())} for shape {tuple(t.shape)})"
        elif (t.storage_offset() + t.numel()) * t.element_size() > t.untyped_storage().nbytes():
            problem = "is larger than its storage"
        elif t.numel() and t.untyped_storage().data_ptr() in seen:
            problem = f"shares memory with {seen[t.untyped_storage().data_ptr()]}"
        if problem:
            raise UserError(f"checkpoint {str(source)!r} is malformed: tensor {key[:80]} {problem}; "
                            "refusing to load it")
        if t.numel():
            seen[t.untyped_storage().data_ptr()] = key[:80]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True`` (tensors and plain containers only, no code runs), then check
    every tensor's layout (:func:`check_layout`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} not found; train the run first (metadapt train)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "disallowed content"
        raise UserError(
            f"checkpoint {str(path)!r} holds objects other than tensors and plain data ({first[:120]}); "
            "refusing to load it, as that could run code"
        ) from None
    except Exception as err:  # damaged bytes reach torch's unpickler as anything, even
        # its own AssertionError ("saved_id must be a tuple"): every failure to read is a corrupt file
        raise UserError(f"checkpoint {str(path)!r} is corrupt or truncated ({type(err).__name__})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state"), dict):
        raise UserError(f"checkpoint {str(path)!r} is not a metadapt checkpoint (no 'state' entry)")
    check_layout(payload, path)
    return payload


def read_step(path: Path) -> int | None:
    """The step a checkpoint was written at, or None if it cannot be read."""
    try:
        step = load_checkpoint(path).get("step")
        return int(step) if isinstance(step, (int, float)) and math.isfinite(step) and step >= 0 else None
    except UserError:
        return None


def check_optimizer_state(optimizer: torch.optim.Optimizer, source: Path) -> None:
    """After ``optimizer.load_state_dict``: every per-parameter state tensor (Adam's moments, SGD's
    momentum) has its parameter's shape; scalars (Adam's step count) are finite."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if value.dim() == 0:
                    ok = bool(torch.isfinite(value.float())) if value.is_floating_point() else True
                else:
                    ok = value.shape == p.shape and value.is_contiguous()
                if not ok:
                    raise UserError(
                        f"checkpoint {str(source)!r} does not match this run: optimizer state {name!r} has "
                        f"shape {tuple(value.shape)} for a parameter of shape {tuple(p.shape)}; was it "
                        "written by another recipe?")
