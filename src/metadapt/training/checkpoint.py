"""Checkpoints written atomically and loaded without executing pickled code."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from metadapt.errors import UserError
from metadapt.files import atomic_write_bytes


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
