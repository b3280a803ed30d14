"""Reading a user's task from CSV files and writing predictions, with clear refusals."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from metadapt.errors import UserError
from metadapt.files import atomic_write_text

MAX_CSV_BYTES = 100_000_000
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_table(path: str | Path, allowed_columns: tuple[int, ...],
               role: str) -> tuple[torch.Tensor, list[str] | None]:
    """Numeric rows of a CSV file (an optional header row is kept apart).

    Every row must have one of ``allowed_columns`` cells, all finite numbers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{role} file {str(path)!r} not found")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise UserError(f"{role} file {str(path)!r} is larger than {MAX_CSV_BYTES // 1_000_000} MB; a task's "
                        "support or query set is a few thousand rows at most")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError:
        raise UserError(f"{role} file {str(path)!r} is not a UTF-8 text CSV file") from None
    except OSError as err:
        raise UserError(f"cannot read {role} file {str(path)!r} ({err.strerror})") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r and any(c.strip() for c in r)]
    except csv.Error as err:
        raise UserError(f"{role} file {str(path)!r} is not valid CSV ({err})") from None
    if not rows:
        raise UserError(f"{role} file {str(path)!r} is empty; it needs one row per example")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
        if not rows:
            raise UserError(f"{role} file {str(path)!r} has a header but no data rows")
    expected = " or ".join(map(str, allowed_columns))
    width = len(rows[0])
    for n, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width or len(row) not in allowed_columns:
            raise UserError(f"{role} file {str(path)!r} line {n} has {len(row)} columns; expected {expected}")
        for c in row:
            if not _is_number(c):
                raise UserError(f"{role} file {str(path)!r} line {n} has a non-numeric cell {c.strip()!r}")
            if not math.isfinite(float(c)):
                raise UserError(f"{role} file {str(path)!r} line {n} has a non-finite value {c.strip()!r}")
            if abs(float(c)) > FLOAT32_MAX:
                raise UserError(f"{role} file {str(path)!r} line {n} has {c.strip()[:30]!r}, beyond the "
                                "float32 range (±3.4e38) the model computes in; rescale the data")
    return torch.tensor([[float(c) for c in r] for r in rows], dtype=torch.float32), header


def write_predictions(path: str | Path | None, x: torch.Tensor, prediction: torch.Tensor) -> str:
    """CSV of the query inputs and predictions; written atomically, or returned when ``path`` is None."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f"x{i}" if x.shape[1] > 1 else "x" for i in range(x.shape[1])]
                    + [f"prediction{i}" if prediction.shape[1] > 1 else "prediction"
                       for i in range(prediction.shape[1])])
    for xi, pi in zip(x.tolist(), prediction.tolist()):
        writer.writerow([f"{v:.6g}" for v in xi + pi])
    text = buffer.getvalue()
    if path is not None:
        atomic_write_text(Path(path).expanduser(), text)
    return text
