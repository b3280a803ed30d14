"""Checkpoints written atomically and loaded without executing pickled code."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from metadapt.errors import UserError


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, no code runs."""
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
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise UserError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({type(err).__name__}); "
            "delete it and resume from another checkpoint or retrain"
        ) from None
    if not isinstance(payload, dict) or "state" not in payload:
        raise UserError(f"checkpoint {str(path)!r} is not a metadapt checkpoint (no 'state' entry)")
    return payload
