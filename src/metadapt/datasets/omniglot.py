"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015, Science 350:1332) from its official archives.

``images_background.zip`` and ``images_evaluation.zip`` (and, for the default split, the Vinyals
et al. (2016) class lists ``splits/vinyals/{train,val,test,trainval}.txt``) are read from a data
folder. Each archive is checked against the official md5 or the sha256 of the copies we know,
every entry name is checked to stay inside the archive's folder, and every image is decoded
(105×105, black strokes on white), resized to 28×28 and inverted (strokes bright) once; the
result is cached as an array keyed by the archives' checksums, so later runs start in seconds.

Splits:
* ``vinyals`` (default): classes are ``Alphabet/characterNN/rotDDD``, each character rotated by
  0/90/180/270° as separate classes; ``train`` 4,112, ``val`` 688, ``trainval`` 4,800 and
  ``test`` 1,692 classes (423 characters).
* ``background``: ``train`` is ``images_background`` (964 characters), ``test`` is
  ``images_evaluation`` (659), no rotations.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metadapt.datasets.archives import (default_cache_dir, default_data_dir, download, open_zip,
                                        verify_checksum)
from metadapt.errors import UserError

ARCHIVES = {
    "images_background.zip": [
        {"md5": "68d2efa1b9178cc56df9314c21c6e718"},
        {"sha256": "1c403bc8872b71955ed4b4a859e856d935b125795d07769f7cd4a21030c62d1d"},
    ],
    "images_evaluation.zip": [
        {"md5": "6b91aef0f799c5bb55b94e3f2daec811"},
        {"sha256": "89527409270651d592bc4a24e3f06c56bd5b086e51c1a05e99a0b5e585550edd"},
    ],
}
ARCHIVE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}"
SPLIT_URL = "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/splits/vinyals/{name}"
VINYALS_SUBSETS = ("train", "val", "test", "trainval")
#: Lake et al.'s split: meta-train on the background alphabets, test on the evaluation ones; the last
#: sixth of the background alphabets (sorted by name: 5 of 30) are held out as validation classes
#: ("val"), so that no choice (best.pt) is ever made on test classes; "trainval" is all of them
BACKGROUND_SUBSETS = ("train", "val", "trainval", "test")
ROTATIONS = {"rot000": 0, "rot090": 1, "rot180": 2, "rot270": 3}


def _fetch(path: Path, url: str, allow_download: bool, what: str) -> None:
    if path.is_file():
        return
    if allow_download and download(url, path):
        return
    raise UserError(
        f"Omniglot {what} {path.name!r} not found in {str(path.parent)!r}"
        + (" and it could not be downloaded" if allow_download else "")
        + f"; put the file there (from {url}) or pass task.data_dir=FOLDER that holds it"
    )


MAX_IMAGE_PIXELS = 1024 * 1024  # Omniglot's images are 105 × 105


def _decode(data: bytes, name: str, archive: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise UserError(f"image {name!r} in {str(archive)!r} is {image.width}×{image.height} pixels; "
                                "Omniglot's are 105×105: the archive is not Omniglot's or is damaged")
            image = image.convert("L").resize((size, size), Image.LANCZOS)
            return 255 - np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise UserError(f"image {name!r} in {str(archive)!r} claims more pixels than Pillow will decode (a "
                        "decompression bomb); Omniglot's are 105×105: the archive is not Omniglot's"
                        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(f"image {name!r} in {str(archive)!r} does not decode ({type(err).__name__}); "
                        "the archive is damaged: delete it and download it again") from None


def _build_cache(archives: dict[str, Path], cache: Path, size: int, progress: bool) -> None:
    images, labels, names = [], [], []
    for archive_name, path in archives.items():
        with open_zip(path) as zf:
            entries = sorted(i.filename for i in zf.infolist() if i.filename.lower().endswith(".png"))
            for entry in tqdm(entries, desc=f"decode {archive_name}", disable=None if progress else True,
                              unit="img"):
                parts = entry.split("/")
                if len(parts) < 3:
                    raise UserError(f"archive {str(path)!r} entry {entry!r} is not "
                                    "Alphabet/characterNN/image.png")
                character = f"{parts[-3]}/{parts[-2]}"
                if not names or names[-1] != character:
                    if character in names:
                        raise UserError(f"archive {str(path)!r}: character {character!r} appears twice")
                    names.append(character)
                labels.append(len(names) - 1)
                images.append(_decode(zf.read(entry), entry, path, size))
    if not images:
        raise UserError(f"no PNG images found in {[str(p) for p in archives.values()]}; "
                        "are these the Omniglot archives?")
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=np.stack(images), labels=np.asarray(labels, np.int32), names=np.asarray(names))
        os.replace(tmp, cache)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_characters(data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                    allow_download: bool = True, image_size: int = 28, progress: bool = True,
                    checksums: dict[str, list[dict[str, str]]] | None = None) -> dict[str, torch.Tensor]:
    """Every character of both archives: ``"Alphabet/characterNN" -> uint8 [20, size, size]``.

    ``checksums`` replaces the accepted digests (for archives built by tests).
    """
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir("omniglot")
    archives, digests = {}, []
    for name, accepted in (checksums or ARCHIVES).items():
        path = data_dir / name
        _fetch(path, ARCHIVE_URL.format(name=name), allow_download, "archive")
        digests.append(verify_checksum(path, accepted)["sha256"])  # each archive is read once
        archives[name] = path
    key = "-".join(d[:12] for d in digests)
    cache = Path(cache_dir or default_cache_dir()) / f"omniglot-{image_size}-{key}.npz"
    for attempt in (0, 1):
        if not cache.is_file():
            _build_cache(archives, cache, image_size, progress)
        try:
            with np.load(cache, allow_pickle=False) as data:
                images, labels, names = (torch.from_numpy(data["images"]), torch.from_numpy(data["labels"]),
                                         data["names"].tolist())
            if images.dim() != 3 or len(labels) != len(images) or int(labels.max()) >= len(names):
                raise ValueError("inconsistent arrays")
            break
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            if attempt:
                raise UserError(f"the Omniglot cache {str(cache)!r} cannot be read back after rebuilding it "
                                f"({type(err).__name__}); check the disk, or set METADAPT_CACHE elsewhere"
                                ) from None
            cache.unlink(missing_ok=True)  # torn or damaged (only a cache): decode the archives again
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=len(names)).tolist()
    groups = torch.split(images[order], counts)
    return dict(zip(names, groups))


def read_split(data_dir: Path, subset: str, allow_download: bool) -> list[str]:
    path = data_dir / "splits" / "vinyals" / f"{subset}.txt"
    _fetch(path, SPLIT_URL.format(name=path.name), allow_download, "split file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load_omniglot(subset: str = "train", split: str = "vinyals", data_dir: str | Path | None = None,
                  cache_dir: str | Path | None = None, allow_download: bool = True, image_size: int = 28,
                  progress: bool = True,
                  checksums: dict[str, list[dict[str, str]]] | None = None) -> dict[str, torch.Tensor]:
    """Classes of one subset: ``name -> float32 [n, 1, size, size]`` in [0, 1], strokes bright."""
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir("omniglot")
    characters = load_characters(data_dir, cache_dir, allow_download, image_size, progress, checksums)
    classes: dict[str, torch.Tensor] = {}
    if split == "vinyals":
        if subset not in VINYALS_SUBSETS:
            raise UserError(f"Omniglot vinyals split has subsets {', '.join(VINYALS_SUBSETS)}; "
                            f"got {subset!r}")
        for number, line in enumerate(read_split(data_dir, subset, allow_download), start=1):
            character, _, rotation = line.rpartition("/")
            if character not in characters or rotation not in ROTATIONS:
                raise UserError(f"split file {subset}.txt line {number} {line[:80]!r} is not "
                                "Alphabet/characterNN/rotDDD with a character of the archives and DDD one of "
                                "000, 090, 180, 270; restore the file")
            quarter_turns = ROTATIONS[rotation]
            classes[line] = torch.rot90(characters[character], quarter_turns, dims=(1, 2))
    elif split == "background":
        if subset not in BACKGROUND_SUBSETS:
            raise UserError(f"Omniglot background split has subsets {', '.join(BACKGROUND_SUBSETS)}; "
                            f"got {subset!r}")
        background = _characters_of(data_dir / "images_background.zip")
        alphabets = sorted({name.split("/")[0] for name in background})
        held_out = alphabets[len(alphabets) - max(1, round(len(alphabets) / 6)):]
        pick = {"train": lambda n: n.split("/")[0] not in held_out,
                "val": lambda n: n.split("/")[0] in held_out, "trainval": lambda n: True}
        if subset == "test":
            names = _characters_of(data_dir / "images_evaluation.zip")
        else:
            names = [n for n in background if pick[subset](n)]
        classes = {name: characters[name] for name in names}
    else:
        raise UserError(f"unknown Omniglot split {split!r}; choose vinyals or background")
    return {name: (images.float() / 255.0).unsqueeze(1) for name, images in classes.items()}


def _characters_of(archive: Path) -> list[str]:
    with open_zip(archive) as zf:
        seen = dict.fromkeys(f"{p[-3]}/{p[-2]}"
                             for p in (n.split("/") for n in zf.namelist() if n.lower().endswith(".png")))
    return list(seen)
