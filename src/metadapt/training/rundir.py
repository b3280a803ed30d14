"""Run directories that metadapt owns: what counts as a run, one writer at a time, overwriting only
runs, the checkpoints that are kept, and which settings a resume may change.

A *run* is a directory holding a ``config.yaml`` that is a mapping and nothing but what metadapt
writes (:data:`RUN_ENTRIES`). ``--overwrite`` replaces only such a directory; a folder with
anything else in it is refused, naming what metadapt did not write. A writer (``train``, ``eval``)
holds an exclusive ``flock`` on ``RUN/.lock`` for as long as it writes, so a second writer is
refused with the holder's pid and command rather than interleaving its files with the first's.

Checkpoints: ``checkpoints/last.pt`` (a hard link to the newest ``step-NNNNNNNN.pt``), the newest
``train.keep_checkpoints`` step checkpoints and ``best.pt``; each holds the full training state, so
a run resumes bit for bit from any of them (``metadapt train --resume-from step-…|best``).
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from metadapt.errors import UserError

#: what metadapt writes into a run directory; anything else makes it "not a run"
RUN_ENTRIES = {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "plots", "report.md", "eval",
               "optimizers.md", ".lock"}
#: settings a resume may change; every other change is refused before the run is touched
RESUMABLE = ("train.iterations", "train.time_limit_s", "train.log_every", "train.val_every",
             "train.checkpoint_every", "train.keep_checkpoints", "train.threads", "train.device",
             "train.keep_freed_memory", "train.on_nonfinite", "name", "eval.")
STEP_NAME = re.compile(r"step-(\d{8})\.pt")


def _transient(name: str) -> bool:
    """Temporary files of an interrupted atomic write or evaluation."""
    return name.startswith(".") and (name.endswith(".tmp") or name.startswith(".eval-"))


def foreign_entries(run_dir: Path) -> list[str]:
    """Entries of ``run_dir`` that metadapt did not write (empty for a run or an empty folder)."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir()
                  if p.name not in RUN_ENTRIES and not _transient(p.name))


def is_run(run_dir: Path) -> bool:
    path = run_dir / "config.yaml"
    if not path.is_file() or foreign_entries(run_dir):
        return False
    try:
        return isinstance(yaml.safe_load(path.read_text()), dict)
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return False


def check_writable_place(run_dir: Path) -> None:
    """Refuse a ``run_dir`` that is a file, or whose nearest existing folder cannot be written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{str(run_dir)!r} is a file, not a run directory; choose another --run-dir")
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in {str(probe)!r} (permission denied); choose another --run-dir or "
                        "fix the folder's permissions")


def refuse_unless_run(run_dir: Path) -> None:
    """``--overwrite`` deletes only what metadapt wrote: refuse any other folder, naming what it holds."""
    foreign = foreign_entries(run_dir)
    if foreign or not is_run(run_dir):
        what = (", ".join(foreign[:4]) + (" …" if len(foreign) > 4 else "")) if foreign else "no valid config"
        raise UserError(f"--overwrite replaces only a metadapt run, and {str(run_dir)!r} is not one "
                        f"({what}); move those files away or choose another --run-dir")


def clear_for_overwrite(run_dir: Path) -> None:
    """Empty ``run_dir`` for a new run (keeping the lock this process holds), if it is a run."""
    if not run_dir.is_dir() or not any(p.name != ".lock" for p in run_dir.iterdir()):
        return
    refuse_unless_run(run_dir)
    for entry in run_dir.iterdir():
        if entry.name == ".lock":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# ----- one writer at a time --------------------------------------------------------------------------
@contextmanager
def locked(run_dir: Path, what: str):
    """Hold ``run_dir``'s writer lock (creating the folder) for the body, or refuse with the holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise UserError(f"cannot write in {str(run_dir)!r} ({err.strerror}); choose another --run-dir or fix "
                        "the folder's permissions") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"run directory {str(run_dir)!r} is in use by {holder}; wait for it to finish "
                            "(or stop it), or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        command = " ".join(["metadapt", *sys.argv[1:]])[:160] if sys.argv else what
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} ({what}: {command}), since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a run at rest has an empty lock file (a full one names a crashed writer)
    finally:
        os.close(fd)  # releases the lock


# ----- evaluation outputs as one set -----------------------------------------------------------------
@contextmanager
def staged(run_dir: Path):
    """A staging folder inside ``run_dir`` for a set of outputs (made first, so an unwritable run is
    refused before any computing); when the body succeeds, each file in it replaces its namesake in
    ``run_dir`` (``eval/results.json``, ``plots/…``, ``report.md``); the folder is removed either way."""
    import tempfile

    for stale in run_dir.glob(".eval-*"):  # left by an evaluation killed outright (the lock is ours now)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        stage = Path(tempfile.mkdtemp(dir=run_dir, prefix=".eval-"))
    except OSError as err:
        raise UserError(f"cannot write in {str(run_dir)!r} ({err.strerror}); evaluation writes its results "
                        "there — fix the permissions or copy the run somewhere writable") from None
    try:
        yield stage
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = run_dir / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ----- checkpoints kept and chosen --------------------------------------------------------------------
def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The kept ``step-NNNNNNNN.pt`` checkpoints, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_NAME.fullmatch(p.name))]
    return sorted(found)


def step_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints."""
    for _, path in step_checkpoints(run_dir)[:-keep] if keep > 0 else step_checkpoints(run_dir):
        path.unlink(missing_ok=True)


def link_last(run_dir: Path, source: Path) -> None:
    """Make ``checkpoints/last.pt`` the same file as ``source``, atomically (a copy where links fail)."""
    last = run_dir / "checkpoints" / "last.pt"
    tmp = last.with_name(f".last.pt.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, last)


def kept_names(run_dir: Path) -> list[str]:
    names = [p.name[:-3] for _, p in reversed(step_checkpoints(run_dir))]
    if (run_dir / "checkpoints" / "best.pt").is_file():
        names.append("best")
    return names


def checkpoint_choice(run_dir: Path, which: str) -> Path:
    """``which`` (``last``, ``best``, ``step-N`` / ``N``, or a path to a ``.pt`` file) as a path."""
    text = str(which).strip()
    number = re.fullmatch(r"(?:step-?)?(\d{1,12})(?:\.pt)?", text)
    if number:
        text = step_name(int(number.group(1)))[:-3]
    if text in ("last", "best") or STEP_NAME.fullmatch(text + ".pt"):
        path = run_dir / "checkpoints" / f"{text}.pt"
    else:
        path = Path(text).expanduser()
    if not path.is_file():
        kept = ", ".join(kept_names(run_dir)) or "none"
        raise UserError(f"checkpoint {which!r} not found in {str(run_dir)!r}; kept checkpoints: {kept}")
    return path


def supersede(run_dir: Path, step: int, source: Path) -> Path | None:
    """Resuming from an older checkpoint starts a new branch at ``step``: checkpoints written after it
    (and the metrics after it) move to ``checkpoints/superseded-<time>/`` rather than being lost or
    silently overwritten by the new branch. Returns that folder, if anything moved."""
    from metadapt.training.checkpoint import read_step

    folder = run_dir / "checkpoints"
    later = [p for s, p in step_checkpoints(run_dir) if s > step]
    for name in ("last.pt", "best.pt"):
        path = folder / name
        if path.is_file() and not path.samefile(source):
            written_at = read_step(path)  # an unreadable one is moved aside too, never deleted
            if written_at is None or written_at > step:
                later.append(path)
    metrics = run_dir / "metrics.jsonl"
    last = folder / "last.pt"
    if not later:
        if not (last.is_file() and last.samefile(source)):
            link_last(run_dir, source)
        return None
    target = folder / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}-from-step-{step}"
    target.mkdir(parents=True, exist_ok=False)
    for path in later:
        os.replace(path, target / path.name)
    if metrics.is_file():
        shutil.copyfile(metrics, target / "metrics.jsonl")
    if not (last.is_file() and last.samefile(source)):
        link_last(run_dir, source)  # "last" is where the run now stands
    return target


# ----- what a resume may change ---------------------------------------------------------------------
def _flatten(data, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)


def check_resume_changes(saved: dict, wanted: dict) -> None:
    """Refuse a resume whose config differs from the run's saved one outside :data:`RESUMABLE`."""
    old, new = _flatten(saved), _flatten(wanted)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and not resumable(k)]
    if changed:
        shown = "; ".join(f"{k}: {_short(old.get(k))} → {_short(new.get(k))}" for k in changed[:3])
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise UserError(
            f"a resume cannot change {shown}{more}; it may change only train.iterations, time_limit_s, "
            "log_every, val_every, checkpoint_every, keep_checkpoints, threads, device, on_nonfinite and "
            "eval.*. Drop those overrides, or start a new run with them (another --run-dir)")


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
