"""Checked archives: checksums, entry names that stay inside their folder, downloads."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from metadapt.errors import UserError


def default_data_dir(dataset: str) -> Path:
    """Where a dataset's files are looked for by default: ``$METADAPT_DATA/DATASET``, else
    ``~/.cache/metadapt/data/DATASET``."""
    return Path(os.environ.get("METADAPT_DATA", Path.home() / ".cache" / "metadapt" / "data")) / dataset


def default_cache_dir() -> Path:
    """Where decoded arrays are cached: ``$METADAPT_CACHE``, else ``~/.cache/metadapt/cache``."""
    return Path(os.environ.get("METADAPT_CACHE", Path.home() / ".cache" / "metadapt" / "cache"))


def file_digests(path: Path) -> dict[str, str]:
    """``{"sha256": ..., "md5": ...}`` of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def verify_checksum(path: Path, accepted: list[dict[str, str]],
                    remedy: str = "delete it and download it again") -> dict[str, str]:
    """Accept the file when any known digest matches (e.g. the official md5 or our sha256)."""
    digests = file_digests(path)
    for known in accepted:
        if any(digests.get(kind) == value for kind, value in known.items()):
            return digests
    raise UserError(
        f"{str(path)!r} has the wrong checksum (sha256 {digests['sha256'][:16]}…); it is damaged or not the "
        f"expected file: {remedy}"
    )


def safe_member_name(name: str, archive: Path) -> PurePosixPath:
    """An archive entry's path, refused if it would land outside the extraction folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UserError(f"archive {str(archive)!r} has an entry that would be written outside its folder "
                        f"({name!r}); refusing to use it")
    return path


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip archive whose every entry name is safe; a corrupt file is refused."""
    try:
        archive = zipfile.ZipFile(path)
        bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"archive {str(path)!r} is corrupt or truncated ({err}); delete it and download it "
                        "again") from None
    if bad is not None:
        raise UserError(f"archive {str(path)!r} is corrupt (entry {bad!r} fails its CRC); delete it and "
                        "download it again")
    for info in archive.infolist():
        safe_member_name(info.filename, path)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise UserError(f"archive {str(path)!r} has a symbolic link entry ({info.filename!r}); "
                            "refusing to use it")
    return archive


def safe_extract(path: Path, target: Path) -> None:
    """Extract a zip archive into ``target``; entries that would escape it are refused first."""
    archive = open_zip(path)
    target = Path(target).resolve()
    with archive:
        for info in archive.infolist():
            destination = (target / safe_member_name(info.filename, path)).resolve()
            if target != destination and target not in destination.parents:
                raise UserError(f"archive {str(path)!r} entry {info.filename!r} would land outside "
                                f"{str(target)!r}")
        archive.extractall(target)


def download(url: str, destination: Path, timeout: float = 30.0) -> bool:
    """Fetch ``url`` to ``destination`` atomically; ``False`` when there is no network."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(tmp, destination)
        return True
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        return False


#: the only globals a data pickle may name: NumPy's array and scalar reconstruction and its dtypes
#: (and the codec Python 2 pickles such as CIFAR's use for byte strings); anything else — a
#: function to call, a class to build — is refused before it runs
SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


def safe_unpickle(path: Path, what: str):
    """Read a data pickle (the benchmarks' ``.pkl`` files, CIFAR's batches) without executing code:
    only dicts, lists, strings, numbers and NumPy arrays may be built (the Python documentation's
    "restricting globals"); a pickle naming anything else is refused with its name."""
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in SAFE_PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"it names {module}.{name}")

    try:
        with open(path, "rb") as f:
            return Restricted(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if str(err).startswith("it names "):
            raise UserError(f"{what} {str(path)!r} is not a plain data pickle ({err}); it was not loaded, "
                            "since loading it could run code: use the original file") from None
        raise UserError(f"{what} {str(path)!r} is damaged or truncated ({err}); use the original "
                        "file") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as err:
        raise UserError(f"{what} {str(path)!r} is damaged or truncated ({type(err).__name__}); use the "
                        "original file") from None
