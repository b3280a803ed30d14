"""Small synthetic image trees and benchmark files, built by the tests (nothing is downloaded)."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def picture(cls: int, k: int, size: int = 12, mode: str = "RGB") -> Image.Image:
    """A class-specific colour and stripe pattern with per-image noise: classes are separable."""
    rng = np.random.default_rng(1000 * cls + k)
    colour = np.array([(37 * cls) % 256, (91 * cls + 50) % 256, (53 * cls + 120) % 256], dtype=float)
    image = np.tile(colour, (size, size, 1))
    image[:, (cls % size)::max(2, cls % 5 + 2)] = 255 - colour
    image += rng.normal(0, 12, image.shape)
    return Image.fromarray(image.clip(0, 255).astype(np.uint8)).convert(mode)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def class_tree(root: Path, classes: int = 8, per_class: int = 6, size: int = 12) -> Path:
    """``root/classNN/imgK.{png,jpg}``; sizes, modes and formats vary as users' files do."""
    for c in range(classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            mode = ("RGB", "L", "RGBA")[k % 3]
            fmt, suffix = (("PNG", ".png"), ("JPEG", ".jpg"))[k % 2]
            image = picture(c, k, size + k, mode if fmt == "PNG" else "RGB")
            (folder / f"img{k}{suffix}").write_bytes(encoded(image, fmt))
    return root


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar100_archive(path: Path, fine_names: list[str], per_class: tuple[int, int] = (3, 2)) -> Path:
    """A ``cifar-100-python.tar.gz`` of the published layout: ``train``, ``test``, ``meta`` pickles
    whose ``data`` rows are the R, G and B planes of a 32 × 32 image."""
    with tarfile.open(path, "w:gz") as tar:
        for part, count in zip(("train", "test"), per_class):
            images = [np.asarray(picture(c, k + 10 * (part == "test"), 32)) for c in range(100)
                      for k in range(count)]
            data = np.stack([i.transpose(2, 0, 1).reshape(-1) for i in images]).astype(np.uint8)
            batch = {"data": data, "fine_labels": [c for c in range(100) for _ in range(count)],
                     "filenames": [f"{c}_{k}.png" for c in range(100) for k in range(count)]}
            add_tar_member(tar, f"cifar-100-python/{part}", pickle.dumps(batch, protocol=2))
        meta = pickle.dumps({"fine_label_names": fine_names}, protocol=2)
        add_tar_member(tar, "cifar-100-python/meta", meta)
    return path


def cub_archive(path: Path, species: int = 200, per_class: int = 2) -> Path:
    """A ``CUB_200_2011.tgz`` of the published layout (``CUB_200_2011/images/NNN.Name/*.jpg``)."""
    with tarfile.open(path, "w:gz") as tar:
        add_tar_member(tar, "CUB_200_2011/README", b"synthetic")
        for s in range(species):
            for k in range(per_class):
                add_tar_member(tar, f"CUB_200_2011/images/{s + 1:03d}.Bird_{s}/Bird_{s}_{k}.jpg",
                               encoded(picture(s, k, 10), "JPEG"))
    return path
