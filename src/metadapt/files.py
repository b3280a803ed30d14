"""Files written atomically: a temporary file beside the target, fsynced, then renamed over it, so
a crash or a full disk leaves either the old file or the new one, never a torn one. New files get
the permissions the user's umask gives (as ``open`` would), not ``mkstemp``'s private 0600.

JSON written here is strict (RFC 8259): a non-finite number is written as ``null``; JSON read here
tolerates what a crash leaves (a torn last line of a ``.jsonl`` log, a corrupt summary)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import: setting it briefly is not thread-safe


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:  # a replaced file keeps its permissions; a new one gets the umask's
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o666 & ~UMASK
        os.fchmod(fd, mode)
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


def finite(value):
    """``value`` with every non-finite float (NaN, ±inf) inside dicts and lists replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def strict_json(value, indent: int | None = None) -> str:
    """JSON that strict readers accept: non-finite numbers become ``null``."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a ``.jsonl`` log; lines that do not parse as a JSON object (one torn by a crash
    or a full disk) are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().decode(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None if it is missing or does not parse as one."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
