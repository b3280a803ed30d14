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


def read_table(path: str | Path, allowed_columns: tuple[int, ...] | None,
               role: str) -> tuple[torch.Tensor, list[str] | None]:
    """Numeric rows of a CSV file (an optional header row is kept apart).

    Every row must have as many cells as the first (one of ``allowed_columns``, unless None), all
    finite numbers; a header must name every column.
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
    width = len(rows[0])
    expected = " or ".join(map(str, allowed_columns)) if allowed_columns else str(width)
    if header is not None and len(header) != width:
        raise UserError(f"{role} file {str(path)!r} has {len(header)} header names for {width} columns")
    for n, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width or (allowed_columns and len(row) not in allowed_columns):
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


def column_names(prefix: str, n: int) -> list[str]:
    """``x`` for one column, ``x1 … xn`` for several."""
    return [prefix] if n == 1 else [f"{prefix}{i + 1}" for i in range(n)]


def split_columns(table: torch.Tensor, header: list[str] | None, inputs: int, outputs: int, path,
                  role: str, targets_required: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs ``[N, inputs]`` and targets ``[N, outputs]`` (or None) of a table, by header names when
    there is a header (``x``/``x1…xd`` and ``y``/``y1…yk``, in any order, other columns ignored), else by
    position (the inputs first, then the targets)."""
    xs, ys = column_names("x", inputs), column_names("y", outputs)
    if header is not None:
        lower = [h.strip().lower() for h in header]
        missing = [n for n in xs if n not in lower]
        if missing:
            wanted = ", ".join(xs) + (" and " + ", ".join(ys) if targets_required else "")
            raise UserError(f"{role} file {str(path)!r} has columns {', '.join(header)}; it needs {wanted} "
                            f"(this run takes {inputs} input(s) and predicts {outputs} value(s))")
        has_y = all(n in lower for n in ys)
        if targets_required and not has_y:
            raise UserError(f"{role} file {str(path)!r} has no column(s) {', '.join(ys)}; name the targets "
                            "so")
        x = table[:, [lower.index(n) for n in xs]]
        y = table[:, [lower.index(n) for n in ys]] if has_y else None
        return x, y
    width = table.shape[1]
    allowed = (inputs + outputs,) if targets_required else (inputs, inputs + outputs)
    if width not in allowed:
        raise UserError(f"{role} file {str(path)!r} has {width} columns; expected "
                        f"{' or '.join(map(str, allowed))} ({inputs} input(s), then {outputs} target(s)), or "
                        "a header naming them")
    return table[:, :inputs], (table[:, inputs:] if width == inputs + outputs else None)


def write_table(path: str | Path | None, header: list[str], rows: torch.Tensor,
                prediction: torch.Tensor) -> str:
    """CSV of the user's query columns as given, then the predictions; written atomically, or returned
    when ``path`` is None."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header + column_names("prediction", prediction.shape[1]))
    for ri, pi in zip(rows.tolist(), prediction.tolist()):
        writer.writerow([f"{v:.6g}" for v in ri + pi])
    text = buffer.getvalue()
    if path is not None:
        atomic_write_text(Path(path).expanduser(), text)
    return text
