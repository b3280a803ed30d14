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
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from metadapt.errors import UserError

#: what metadapt writes into a run directory; anything else makes it "not a run"
RUN_ENTRIES = {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "plots", "report.md", "eval",
               "optimizers.md", "optimizers.json", "optimizers.png", "tensorboard", "wandb",
               ".lock"}
#: settings a resume may change; every other change is refused before the run is touched
RESUMABLE = ("train.iterations", "train.time_limit_s", "train.log_every", "train.val_every",
             "train.checkpoint_every", "train.keep_checkpoints", "train.threads", "train.device",
             "train.deterministic", "train.keep_freed_memory", "train.on_nonfinite", "train.loggers",
             "task.data_dir", "task.download", "name", "eval.")
STEP_NAME = re.compile(r"step-(\d{8})\.pt")


#: what metadapt writes inside the folders of a run (anything else there is the user's)
INSIDE = {"checkpoints": re.compile(r"(step-\d{8}|last|best)\.pt|superseded-[\w.+-]+"
                                    r"|\.(step-\d{8}|last|best)\.pt\.\w+\.tmp|\.last\.pt\.\d+\.tmp"),
          "eval": re.compile(r"results\.json|\.results\.json\.\w+\.tmp"),
          "tensorboard": re.compile(r"events\.out\.tfevents\.[\w.-]+"),
          "wandb": re.compile(r".+"),  # W&B's own files: its offline runs, logs, settings
          "plots": re.compile(r"(adaptation_curves|training_curve|example_fits_[\w-]+|example_episodes|"
                              r"trial_curves|adaptation_returns|paths)\.png|\.[\w.-]+\.png\.\w+\.tmp")}
TEMPORARY = re.compile(r"\.(config\.yaml|metrics\.jsonl|summary\.json|report\.md)\.\w+\.tmp")
#: the keys of a resolved config's train section, which a hand-written recipe rarely lists in full
RESOLVED_TRAIN = {"iterations", "meta_batch_size", "meta_lr", "optimizer", "seed", "log_every", "val_every",
                  "val_tasks", "checkpoint_every", "device", "threads"}  # every version has written these


def _link_within(link: Path, folder: Path) -> bool:
    """W&B's own links (``latest-run``, ``debug.log``): links to something inside the same folder."""
    return folder.name == "wandb" and folder.resolve() in link.resolve().parents


def _ours(path: Path) -> bool:
    """Whether ``path`` (an entry of a run directory) is something metadapt writes."""
    name = path.name
    if path.is_symlink():
        return False
    if name.startswith(".eval-"):
        return path.is_dir()
    if TEMPORARY.fullmatch(name):
        return path.is_file()
    if name in INSIDE:
        return path.is_dir() and all(
            INSIDE[name].fullmatch(p.name) and (p.is_dir() or p.is_file())
            and (not p.is_symlink() or _link_within(p, path)) for p in path.iterdir())
    return name in RUN_ENTRIES and path.is_file()


def foreign_entries(run_dir: Path) -> list[str]:
    """Entries of ``run_dir`` that metadapt did not write, or that hold what it did not write
    (empty for a run or an empty folder)."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if not _ours(p))


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.yaml`` that metadapt wrote: a resolved config (all sections, the
    train section in full), not a hand-written recipe that happens to be named so."""
    from metadapt.config import SECTIONS, read_text_file, read_yaml

    if not path.is_file() or path.is_symlink():
        return False
    try:
        data = read_yaml(read_text_file(path, "run config"), "run config")
    except UserError:
        return False
    return (isinstance(data, dict) and {"name", "task", "model", "algorithm", "train", "eval"} <= set(data)
            and set(data) <= set(SECTIONS) and isinstance(data["train"], dict)
            and RESOLVED_TRAIN <= set(data["train"]))


def is_run(run_dir: Path) -> bool:
    """A folder holding only what metadapt writes, with a ``config.yaml`` metadapt wrote."""
    return not foreign_entries(run_dir) and is_run_config(run_dir / "config.yaml")


def check_writable_place(run_dir: Path) -> None:
    """Refuse a ``run_dir`` that is a file, a dangling link, too long a name, under a file, or whose
    nearest existing folder cannot be written."""
    try:
        if run_dir.is_symlink() and not run_dir.exists():
            raise UserError(f"{str(run_dir)!r} is a link to a folder that does not exist; choose another "
                            "--run-dir or create its target")
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"{str(run_dir)!r} is a file, not a run directory; choose another --run-dir")
        probe = run_dir
        while not probe.exists() and not probe.is_symlink():
            probe = probe.parent
        if not probe.is_dir():
            raise UserError(f"cannot make {str(run_dir)!r}: {str(probe)!r} is a file, not a folder; choose "
                            "another --run-dir")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise UserError(f"cannot write in {str(probe)!r} (permission denied); choose another --run-dir "
                            "or fix the folder's permissions")
    except OSError as err:
        raise UserError(f"cannot use {str(run_dir)[:120]!r} as a run directory ({err.strerror}); choose "
                        "another --run-dir") from None


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
    fix = ("copy the run somewhere writable" if what == "eval"
           else "choose another --run-dir or fix the folder's permissions")
    path = run_dir / ".lock"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"{str(path)!r} is a link; a run's lock file must be its own file — delete the "
                            "link (it is not the run's)") from None
        raise UserError(f"cannot write in {str(run_dir)!r} ({err.strerror}); {fix}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{str(path)!r} is not a plain file; delete it (it is not the run's)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {str(path)!r} ({err.strerror}; a file system without locks?); "
                                "use a run directory on a local disk") from None
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

    for name in ("eval", "plots", "report.md"):
        if (run_dir / name).is_symlink():
            raise UserError(f"{str(run_dir / name)!r} is a link; evaluation writes its outputs into the run "
                            "itself — replace the link with a folder")
    for stale in run_dir.glob(".eval-*"):  # left by an evaluation killed outright (the lock is ours now)
        if stale.is_dir() and not stale.is_symlink():
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
    if text not in ("last", "best") and Path(text).expanduser().is_file():
        return Path(text).expanduser()  # a file that exists is read as one, whatever its name
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
    stem = folder / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}-from-step-{step}"
    target, n = stem, 1
    while target.exists():
        n += 1
        target = stem.with_name(f"{stem.name}-{n}")
    target.mkdir(parents=True)
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


def check_resume_changes(saved: dict, wanted: dict, fixed: tuple[str, ...] = ()) -> None:
    """Refuse a resume whose config differs from the run's saved one outside :data:`RESUMABLE`, or in
    one of ``fixed`` (settings the run's algorithm depends on, e.g. MAML++'s schedule length)."""
    old, new = _flatten(saved), _flatten(wanted)
    changed = [k for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k) and (not resumable(k) or k in fixed)]
    if changed:
        shown = "; ".join(f"{k}: {_short(old.get(k))} → {_short(new.get(k))}" for k in changed[:3])
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        allowed = ", ".join(r + ("*" if r.endswith(".") else "") for r in RESUMABLE if r not in fixed)
        why = (f" ({', '.join(k for k in changed if k in fixed)} shapes this algorithm's schedule)"
               if any(k in fixed for k in changed) else "")
        raise UserError(
            f"a resume cannot change {shown}{more}{why}; it may change only {allowed}. Drop those overrides, "
            "or start a new run with them (another --run-dir)")


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
