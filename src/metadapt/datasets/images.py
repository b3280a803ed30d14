"""Few-shot classes of images: decoded and resized once into a cache, then read in memory or lazily.

Any source of labelled images — a ``root/class/image`` tree of files, or one of the standard
benchmarks' archives (``benchmarks.py``) — is turned into one cache: a ``uint8`` array
``[N, size, size, channels]`` (``.npy``) with its classes and their image counts beside it
(``.json``), written atomically and keyed by what it was built from (the files' names, sizes and
times, or the archives' checksums) and by the size and channels, so a changed source builds a new
cache and an unchanged one is never decoded again. A cache larger than ``MEMORY_LIMIT`` (or any,
with ``lazy=True``) is memory-mapped: an episode reads only its own images from disk, so
tieredImageNet's 779,165 images never need to fit in memory.

Images are converted to RGB (or grey, ``channels=1``) and resized to ``size × size`` with Lanczos
resampling, as Ravi & Larochelle's (2017) script makes mini-ImageNet's 84 × 84 images; episodes
get ``float32 [k, channels, size, size]`` in [0, 1].
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from metadapt.datasets.archives import default_cache_dir
from metadapt.errors import UserError
from metadapt.progress import progress as progress_bar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: larger caches are memory-mapped, not read into memory (mini-ImageNet at 84 × 84 is 1.3 GB)
MEMORY_LIMIT = 2 * 1024**3
#: the most pixels one source image may have (Pillow's own bomb limit is about 179 million)
MAX_IMAGE_PIXELS = 50_000_000
CACHE_FORMAT = 1


class ClassImages:
    """The images of one class: ``len()`` and ``images[indices] -> float32 [k, C, H, W]`` in [0, 1]."""

    def __init__(self, array, start: int, count: int):
        self.array, self.start, self.count = array, start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index) -> torch.Tensor:
        rows = self.start + np.asarray(torch.as_tensor(index).reshape(-1), dtype=np.int64)
        if len(rows) and (rows.min() < self.start or rows.max() >= self.start + self.count):
            raise IndexError(f"image index out of range for a class of {self.count} images")
        return to_float(self.array[rows])


def to_float(images: np.ndarray) -> torch.Tensor:
    """``uint8 [k, H, W, C]`` → ``float32 [k, C, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


class ImageClasses(Mapping):
    """``class name -> ClassImages`` over one cache; episodes of many classes are gathered at once
    (:meth:`take`), and a memory-mapped cache is read only where an episode's images lie."""

    def __init__(self, array: np.ndarray, names: list[str], counts: list[int], lazy: bool):
        self.array, self.names, self.lazy = array, list(names), lazy
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.starts, self.counts = starts, np.asarray(counts, dtype=np.int64)
        self._classes = {n: ClassImages(array, int(s), int(c)) for n, s, c in zip(names, starts, counts)}

    def __getitem__(self, name: str) -> ClassImages:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names: Iterable[str]) -> ImageClasses:
        """The same cache restricted to ``names`` (for splits of one tree)."""
        view = ImageClasses.__new__(ImageClasses)
        view.array, view.names, view.lazy = self.array, list(names), self.lazy
        view.starts = np.asarray([self._classes[n].start for n in view.names], dtype=np.int64)
        view.counts = np.asarray([self._classes[n].count for n in view.names], dtype=np.int64)
        view._classes = {n: self._classes[n] for n in view.names}
        return view

    def take(self, classes: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
        """Images ``picks [..., k]`` (within-class indices) of ``classes [...]`` (indices into
        this mapping's order) as ``float32 [..., k, C, H, W]``."""
        counts = self.counts[classes.numpy()][..., None]
        if picks.numel() and (int(picks.min()) < 0 or bool((picks.numpy() >= counts).any())):
            raise IndexError("an image index is beyond its class's images")
        rows = self.starts[classes.numpy()][..., None] + picks.numpy()
        flat = rows.reshape(-1)
        if self.lazy:  # read each image once, in file order
            order = np.argsort(flat, kind="stable")
            images = np.empty((len(flat), *self.array.shape[1:]), dtype=np.uint8)
            images[order] = self.array[flat[order]]
        else:
            images = self.array[flat]
        out = to_float(images)
        return out.reshape(*rows.shape, *out.shape[1:])


def _eight_bit(image):
    """16-bit and 32-bit integer images scaled to 8 bits (Pillow's ``convert`` would clip them at
    255), float images from [0, 1] (or [0, 255]) likewise; other modes are returned as they are."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.round(values * 255.0 / high), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), "L")
    return image


def decode(data: bytes | Path, name: str, size: int, channels: int) -> np.ndarray:
    """One image file (bytes or path) → ``uint8 [size, size, channels]``; a file that is not an
    image, is damaged or is absurdly large is refused with its name."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:  # header only
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise UserError(f"image {name!r} is {image.width}×{image.height} pixels, more than "
                                f"{MAX_IMAGE_PIXELS:,}; shrink it or remove it")
            image = _eight_bit(image).convert("RGB" if channels == 3 else "L")
            image = image.resize((size, size), Image.LANCZOS)
            array = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise UserError(f"image {name!r} claims more pixels than Pillow will decode (a decompression "
                        "bomb); remove it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(f"image {name!r} does not decode ({type(err).__name__}); it is damaged or not an "
                        "image: replace or remove it") from None
    return array.reshape(size, size, channels)


def resize_array(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """An image already decoded (``uint8 [H, W, 3]``, as the benchmarks' pickles hold them) at
    ``size × size``; resized with Lanczos only when its size differs."""
    from PIL import Image

    if image.shape[:2] == (size, size) and (image.shape[-1] if image.ndim == 3 else 1) == channels:
        return image.reshape(size, size, channels)
    picture = Image.fromarray(image).convert("RGB" if channels == 3 else "L")
    picture = picture.resize((size, size), Image.LANCZOS)
    return np.asarray(picture, dtype=np.uint8).reshape(size, size, channels)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_cache(path: Path, names: list[str], counts: list[int], images: Iterable[np.ndarray],
                size: int, channels: int, source: str, progress: bool = True) -> None:
    """Stream ``images`` (class by class, ``counts[i]`` of class ``names[i]``) into the cache
    ``path`` (``.npy``) and its index (``.json``), each written atomically, the index last."""
    total = int(sum(counts))
    if total == 0:
        raise UserError(f"no images found in {source}")

    def write_array(tmp: Path) -> None:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, size, size, channels))
        if hasattr(os, "posix_fallocate"):  # a full disk is an OSError now, not a SIGBUS while writing
            with open(tmp, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
        bar = progress_bar(total, desc=f"decode into cache {path.stem}", unit="img", enabled=progress)
        filled = 0
        try:
            for image in images:
                array[filled] = image
                filled += 1
                bar.update(1)
        finally:
            bar.close()
        if filled != total:
            raise UserError(f"{source} yielded {filled} images where {total} were listed; was it changed "
                            "while the cache was built?")
        array.flush()
        del array

    _atomic(path, write_array)
    index = {"format": CACHE_FORMAT, "names": names, "counts": [int(c) for c in counts], "size": size,
             "channels": channels, "source": source}
    _atomic(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(index)))


def open_cache(path: Path, lazy: bool | None) -> ImageClasses | None:
    """The cache at ``path``, or ``None`` when it is missing, torn or inconsistent (then rebuilt)."""
    index_path = path.with_suffix(".json")
    if not (path.is_file() and index_path.is_file()):
        return None
    try:
        index = json.loads(index_path.read_text())
        names, counts = index["names"], index["counts"]
        if index.get("format") != CACHE_FORMAT or len(names) != len(counts) or min(counts, default=0) < 1:
            return None
        lazy = path.stat().st_size > MEMORY_LIMIT if lazy is None else lazy
        array = np.load(path, mmap_mode="r" if lazy else None, allow_pickle=False)
        if (array.dtype != np.uint8 or array.ndim != 4 or len(array) != sum(counts)
                or array.shape[1:] != (index["size"], index["size"], index["channels"])):
            return None
    except (OSError, ValueError, KeyError, TypeError, EOFError, json.JSONDecodeError):
        return None
    return ImageClasses(array, names, counts, lazy)


def cached(key_parts: Iterable, label: str, size: int, channels: int, cache_dir: str | Path | None,
           lazy: bool | None, build: Callable[[Path], None]) -> ImageClasses:
    """Open the cache keyed by ``key_parts``, building it with ``build(path)`` when it is missing or
    damaged (a cache is only ever a copy: a torn one is decoded again)."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, size, channels, *key_parts]).encode()).hexdigest()
    folder = Path(cache_dir or default_cache_dir()).expanduser()
    path = folder / f"{label}-{size}px-{channels}c-{digest[:16]}.npy"
    classes = open_cache(path, lazy)
    if classes is None:
        build(path)
        classes = open_cache(path, lazy)
        if classes is None:
            raise UserError(f"the image cache {str(path)!r} cannot be read back after building it; check the "
                            "disk, or set METADAPT_CACHE to another folder")
    return classes


def scan_class_folders(root: Path) -> dict[str, list[Path]]:
    """``class name -> sorted image files`` of a ``root/class/image`` tree (hidden entries and
    files that are not images by their suffix are skipped; a class with no image is refused)."""
    if not root.is_dir():
        raise UserError(f"image folder {str(root)!r} does not exist or is not a folder; it should hold one "
                        "folder of images per class (root/class/image.jpg)")
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in folder.iterdir()
                       if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file())
        if not files:
            raise UserError(f"class folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, "
                            "…); add images or remove the folder")
        classes[folder.name] = files
    if not classes:
        raise UserError(f"image folder {str(root)!r} has no class folders; it should hold one folder of "
                        "images per class (root/class/image.jpg)")
    return classes


def load_image_folder(root: str | Path, size: int = 84, channels: int = 3,
                      cache_dir: str | Path | None = None, lazy: bool | None = None,
                      progress: bool = True) -> ImageClasses:
    """Every class of a ``root/class/image`` tree, decoded and resized once into the cache."""
    root = Path(root).expanduser()
    classes = scan_class_folders(root)
    stats = [(name, f.name, st.st_size, st.st_mtime_ns)
             for name, files in classes.items() for f in files for st in (f.stat(),)]
    names = list(classes)
    counts = [len(classes[n]) for n in names]

    def images() -> Iterator[np.ndarray]:
        for name in names:
            for f in classes[name]:
                yield decode(f, str(f), size, channels)

    return cached([str(root.resolve()), stats], root.name or "images", size, channels, cache_dir, lazy,
                  lambda path: build_cache(path, names, counts, images(), size, channels,
                                           f"image folder {str(root)!r}", progress))
