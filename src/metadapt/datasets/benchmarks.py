"""The standard few-shot image benchmarks, from files the user places (nothing is downloaded).

Each benchmark accepts the forms its files are commonly shared in, checks them (the archive's
published checksum where the file is a standard one; the classes and image counts of the split
always), and becomes one image cache per split (``images.py``). When nothing is found, the message
says which files to put where.

* **mini-ImageNet** (Vinyals et al. 2016; the split of Ravi & Larochelle 2017): 64 / 16 / 20
  classes of 600 images. ``train.csv``, ``val.csv``, ``test.csv`` (``filename,label``; checksums
  checked) beside an ``images/`` folder; or the ``mini-imagenet-cache-{train,val,test}.pkl``
  files of Ren et al. (84 × 84 arrays; ``-validation`` as learn2learn names it); or ``train/``,
  ``val/``, ``test/`` class folders.
* **tieredImageNet** (Ren et al. 2018): 351 / 97 / 160 classes (34 ImageNet super-categories:
  20 / 6 / 8). ``train/``, ``val/``, ``test/`` class folders; or the original
  ``{train,val,test}_images_png.pkl`` with ``{train,val,test}_labels.pkl``.
* **CIFAR-FS** (Bertinetto et al. 2019): the 100 classes of CIFAR-100 (Krizhevsky 2009), 600
  32 × 32 images each, split 64 / 16 / 20 by class name. ``cifar-100-python.tar.gz`` as
  published (md5 checked) or its extracted ``cifar-100-python/`` folder.
* **CUB** (Wah et al. 2011, CUB-200-2011; the split of Chen et al. 2019, "A Closer Look at
  Few-shot Classification"): of the 200 species sorted by folder name, the i-th is meta-training
  when i is even, validation when i mod 4 = 1, test when i mod 4 = 3 (100 / 50 / 50).
  ``CUB_200_2011.tgz`` as published (md5 checked) or its extracted ``CUB_200_2011/`` folder.

Pickles are read without executing code (``archives.safe_unpickle``).
"""
from __future__ import annotations

import csv
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from metadapt.datasets.archives import default_data_dir, safe_member_name, safe_unpickle, verify_checksum
from metadapt.datasets.cifar_fs_split import CIFAR_FS_SPLIT
from metadapt.datasets.images import (ImageClasses, build_cache, cached, decode, load_image_folder,
                                      resize_array, scan_class_folders)
from metadapt.errors import UserError

SPLITS = ("train", "val", "test")
#: published archives (md5 from their publishers: CIFAR's page, the Caltech-UCSD Birds page)
#: and the sha256 TensorFlow Datasets records)
CIFAR100_ARCHIVE = ("cifar-100-python.tar.gz", [
    {"md5": "eb9058c3a382ffc7106e4002c42a8d85"},
    {"sha256": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"}])
CUB_ARCHIVE = ("CUB_200_2011.tgz", [
    {"md5": "97eceeb196236b17998738112f37df78"},
    {"sha256": "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081"}])
#: Ravi & Larochelle's split files as twitter/meta-learning-lstm publishes them (byte-identical in
#: the repositories of Ren et al. and TADAM)
MINI_IMAGENET_CSV = {
    "train.csv": [{"md5": "9525e1538f67719f18f1936bf8d0782d"},
                  {"sha256": "498519cd8e49ce97ed26a4a3638966698ae41ab35e9c68538319fc9b46ba7d2f"}],
    "val.csv": [{"md5": "ce315ce99b41fbf84fa6acd69315d918"},
                {"sha256": "5658a59921ca027ee76af92949869c5d6f41d77592ff3b18db325a9d10c893b9"}],
    "test.csv": [{"md5": "5b89df877c6cbe5d291e43118a2a9591"},
                 {"sha256": "2b7cfa78342995761a572a8158e539bc4e0a80f9bbd7d00c1e17a460fbbb93fa"}],
}
#: classes per split, and images per class where every class has the same number
EXPECTED = {"mini-imagenet": ((64, 16, 20), 600), "tiered-imagenet": ((351, 97, 160), None),
            "cifar-fs": ((64, 16, 20), 600), "cub": ((100, 50, 50), None)}
#: the largest archive member read into memory: CIFAR-100's ``train`` pickle is 50,000 × 3,072 bytes
#: of pixels and more; a CUB image is well under a megabyte
MAX_MEMBER_BYTES = {"cifar-100-python/": 512 * 1024**2, "CUB_200_2011/images/": 64 * 1024**2}
REPLACE = "replace it with the published file, or give the images as train/, val/ and test/ class folders"


def load_benchmark(dataset: str, data_dir: str | Path | None, size: int, channels: int = 3,
                   cache_dir: str | Path | None = None, lazy: bool | None = None,
                   split: tuple[float, ...] = (0.64, 0.16, 0.20), split_seed: int = 0,
                   progress: bool = True, checksums: dict | None = None) -> dict[str, ImageClasses]:
    """``{"train", "val", "test"} -> ImageClasses`` of ``dataset`` (``folder`` or a benchmark).

    ``checksums`` replaces the published digests (for archives built by tests)."""
    if dataset == "folder":
        if data_dir is None:
            raise UserError("task.dataset=folder needs task.data_dir=FOLDER, a folder of class folders "
                            "(root/class/image.jpg) or of train/, val/ and test/ folders of them")
        return folder_splits(Path(data_dir).expanduser(), size, channels, cache_dir, lazy, split, split_seed,
                             progress)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir(dataset)
    loader = {"mini-imagenet": _mini_imagenet, "tiered-imagenet": _tiered_imagenet, "cifar-fs": _cifar_fs,
              "cub": _cub}.get(dataset)
    if loader is None:
        raise UserError(f"unknown dataset {dataset!r}; choose folder, mini-imagenet, tiered-imagenet, "
                        "cifar-fs or cub")
    splits = loader(root, size, channels, cache_dir, lazy, progress, checksums or {})
    _check_counts(dataset, splits, root)
    return splits


def folder_splits(root: Path, size: int, channels: int, cache_dir, lazy, split, split_seed,
                  progress: bool) -> dict[str, ImageClasses]:
    """A folder with ``train/``, ``val/`` and ``test/`` class folders, or one tree of class folders
    whose classes are shuffled with ``split_seed`` and cut in the proportions ``split``."""
    parts = [root / s for s in SPLITS]
    if any(p.is_dir() for p in parts):
        missing = [p.name for p in parts if not p.is_dir()]
        if missing:
            raise UserError(f"{str(root)!r} has {', '.join(p.name for p in parts if p.is_dir())}/ but no "
                            f"{', '.join(missing)}/; give all three of train/, val/ and test/, or put the "
                            "class folders directly in it to have them split by task.split")
        return {s: load_image_folder(root / s, size, channels, cache_dir, lazy, progress) for s in SPLITS}
    classes = load_image_folder(root, size, channels, cache_dir, lazy, progress)
    order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(split_seed)).tolist()
    names = [list(classes)[i] for i in order]
    total = sum(split)
    cuts = np.round(np.cumsum(split) / total * len(names)).astype(int)
    groups = np.split(np.asarray(names, dtype=object), cuts[:-1])
    if any(len(g) < 2 for g in groups):
        raise UserError(f"{str(root)!r} has {len(names)} classes; split {list(split)} leaves fewer than 2 in "
                        f"one of train/val/test ({[len(g) for g in groups]}); add classes")
    return {s: classes.subset(sorted(g.tolist())) for s, g in zip(SPLITS, groups)}


def _check_counts(dataset: str, splits: dict[str, ImageClasses], root: Path) -> None:
    classes, per_class = EXPECTED[dataset]
    for (name, part), expected in zip(splits.items(), classes):
        if len(part) != expected:
            raise UserError(f"{dataset} {name} split from {str(root)!r} has {len(part)} classes where the "
                            f"benchmark has {expected}; the files are incomplete or not {dataset}'s")
        if per_class is not None and any(int(c) != per_class for c in part.counts):
            bad = next(n for n, c in zip(part.names, part.counts) if int(c) != per_class)
            raise UserError(f"{dataset} class {bad!r} has {len(part[bad])} images where the benchmark has "
                            f"{per_class}; the files are incomplete or not {dataset}'s")


def _str_keys(data):
    """A dict from a Python 2 pickle read as bytes has byte-string keys; give them as ``str``."""
    if isinstance(data, dict):
        return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}
    return data


def _not_found(dataset: str, root: Path, forms: str) -> UserError:
    return UserError(f"{dataset} files not found in {str(root)!r}; put there {forms}, or pass "
                     "task.data_dir=FOLDER that holds them (nothing is downloaded)")


# ----- mini-ImageNet ---------------------------------------------------------------------------
def _mini_imagenet(root, size, channels, cache_dir, lazy, progress, checksums):
    if all((root / f"{s}.csv").is_file() for s in SPLITS):
        if not (root / "images").is_dir():
            raise UserError(f"{str(root)!r} has train.csv, val.csv and test.csv but no images/ folder; put "
                            "the mini-ImageNet images (the files the CSVs name) in images/ beside them")
        for s in SPLITS:
            verify_checksum(root / f"{s}.csv", checksums.get(f"{s}.csv", MINI_IMAGENET_CSV[f"{s}.csv"]),
                            REPLACE)
        return {s: _csv_split(root, s, size, channels, cache_dir, lazy, progress) for s in SPLITS}
    pickles = [root / f"mini-imagenet-cache-{s}.pkl" for s in SPLITS]
    if not pickles[1].is_file():  # learn2learn names it -validation
        pickles[1] = root / "mini-imagenet-cache-validation.pkl"
    if all(p.is_file() for p in pickles):
        return {s: _mini_pickle(p, size, channels, cache_dir, lazy, progress)
                for s, p in zip(SPLITS, pickles)}
    if all((root / s).is_dir() for s in SPLITS):
        return {s: load_image_folder(root / s, size, channels, cache_dir, lazy, progress) for s in SPLITS}
    raise _not_found("mini-ImageNet", root, "train.csv, val.csv and test.csv (Ravi & Larochelle's split) "
                     "with an images/ folder of their files; or mini-imagenet-cache-{train,val,test}.pkl; or "
                     "train/, val/ and test/ folders of class folders")


def _csv_split(root: Path, split: str, size, channels, cache_dir, lazy, progress) -> ImageClasses:
    path = root / f"{split}.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0]] != ["filename", "label"]:
        raise UserError(f"{str(path)!r} should start with the header 'filename,label' (Ravi & Larochelle's "
                        "split files); restore the file")
    classes: dict[str, list[str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or "/" in row[0] or "\\" in row[0] or row[0] in ("", ".", ".."):
            raise UserError(f"{str(path)!r} line {number} is not 'filename,label' with a plain file name")
        classes.setdefault(row[1], []).append(row[0])
    names = sorted(classes)
    files = [root / "images" / f for n in names for f in classes[n]]
    for f in files:
        if not f.is_file():
            raise UserError(f"mini-ImageNet image {f.name!r} listed in {path.name} is missing from "
                            f"{str(root / 'images')!r}; restore the images folder")
    stats = [str(root.resolve())] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]

    def images() -> Iterator[np.ndarray]:
        for f in files:
            yield decode(f, str(f), size, channels)

    counts = [len(classes[n]) for n in names]
    build = lambda p: build_cache(p, names, counts, images(), size, channels, str(path), progress)
    return cached(["mini-imagenet-csv", split, stats], f"mini-imagenet-{split}", size, channels, cache_dir,
                  lazy, build)


def _mini_pickle(path: Path, size, channels, cache_dir, lazy, progress) -> ImageClasses:
    stat = path.stat()

    def build(cache: Path) -> None:
        data = _str_keys(safe_unpickle(path, "mini-ImageNet pickle"))
        if not (isinstance(data, dict) and isinstance(data.get("image_data"), np.ndarray)
                and isinstance(data.get("class_dict"), dict)):
            raise UserError(f"{str(path)!r} is not a mini-ImageNet cache pickle ({{'image_data': array, "
                            "'class_dict': {class: indices}}); restore the file")
        array, class_dict = data["image_data"], data["class_dict"]
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise UserError(f"{str(path)!r}: image_data is {array.dtype} {list(array.shape)}, not uint8 "
                            "[N, H, W, 3]; restore the file")
        names = sorted(class_dict)
        indices = [np.asarray(class_dict[n], dtype=np.int64).reshape(-1) for n in names]
        if any(len(i) and (i.min() < 0 or i.max() >= len(array)) for i in indices):
            raise UserError(f"{str(path)!r}: class_dict indexes images beyond image_data; restore the file")
        images = (resize_array(array[i], size, channels) for idx in indices for i in idx)
        build_cache(cache, names, [len(i) for i in indices], images, size, channels, str(path), progress)

    return cached(["mini-imagenet-pkl", path.name, stat.st_size, stat.st_mtime_ns], path.stem, size, channels,
                  cache_dir, lazy, build)


# ----- tieredImageNet --------------------------------------------------------------------------
def _tiered_imagenet(root, size, channels, cache_dir, lazy, progress, checksums):
    if all((root / s).is_dir() for s in SPLITS):
        return {s: load_image_folder(root / s, size, channels, cache_dir, lazy, progress) for s in SPLITS}
    if all((root / f"{s}_{part}.pkl").is_file() for s in SPLITS for part in ("images_png", "labels")):
        return {s: _tiered_pickle(root, s, size, channels, cache_dir, lazy, progress) for s in SPLITS}
    raise _not_found("tieredImageNet", root, "train/, val/ and test/ folders of class folders; or the "
                     "original {train,val,test}_images_png.pkl with {train,val,test}_labels.pkl")


def _tiered_pickle(root: Path, split: str, size, channels, cache_dir, lazy, progress) -> ImageClasses:
    images_path, labels_path = root / f"{split}_images_png.pkl", root / f"{split}_labels.pkl"
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in (images_path, labels_path)]

    def build(cache: Path) -> None:
        labels = _str_keys(safe_unpickle(labels_path, "tieredImageNet labels pickle"))
        if not (isinstance(labels, dict) and "label_specific" in labels):
            raise UserError(f"{str(labels_path)!r} has no 'label_specific'; restore the file")
        specific = np.asarray(labels["label_specific"], dtype=np.int64).reshape(-1)
        named = labels.get("label_specific_str")
        names_of = [n.decode() if isinstance(n, bytes) else str(n) for n in named] if named is not None \
            else [str(i) for i in range(int(specific.max()) + 1)]
        encoded = safe_unpickle(images_path, "tieredImageNet images pickle")
        if len(encoded) != len(specific) or specific.min() < 0 or specific.max() >= len(names_of):
            raise UserError(f"{images_path.name} holds {len(encoded)} images but {labels_path.name} labels "
                            f"{len(specific)} (or names too few classes); restore the files")
        order = np.argsort(specific, kind="stable")
        present = np.unique(specific)
        names = [str(names_of[i]) for i in present]
        counts = np.bincount(specific)[present].tolist()
        images = (decode(np.asarray(encoded[i], dtype=np.uint8).tobytes(), f"{images_path.name}[{i}]", size,
                         channels) for i in order)
        build_cache(cache, names, counts, images, size, channels, str(images_path), progress)

    return cached(["tiered-pkl", split, stats], f"tiered-imagenet-{split}", size, channels, cache_dir, lazy,
                  build)


# ----- CIFAR-FS --------------------------------------------------------------------------------
def _cifar_fs(root, size, channels, cache_dir, lazy, progress, checksums):
    folder, archive = root / "cifar-100-python", root / CIFAR100_ARCHIVE[0]
    if all((folder / n).is_file() for n in ("train", "test", "meta")):
        parts = ("train", "test", "meta")
        key = [(n, (folder / n).stat().st_size, (folder / n).stat().st_mtime_ns) for n in parts]
        read = lambda: {n: safe_unpickle(folder / n, f"CIFAR-100 file {n!r}") for n in parts}
    elif archive.is_file():
        digest = verify_checksum(archive, checksums.get(archive.name, CIFAR100_ARCHIVE[1]), REPLACE)["sha256"]
        key = [digest]
        read = lambda: _cifar_from_archive(archive)
    else:
        raise _not_found("CIFAR-FS", root, f"{CIFAR100_ARCHIVE[0]} (CIFAR-100, python version, from "
                         "https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted cifar-100-python/ "
                         "folder")
    loaded: dict = {}

    def classes_of() -> tuple[dict[str, np.ndarray], list[str]]:
        if not loaded:
            parts = {k: _str_keys(v) for k, v in read().items()}
            names = parts["meta"].get("fine_label_names") if isinstance(parts["meta"], dict) else None
            if not isinstance(names, list) or len(names) != 100:
                raise UserError("CIFAR-100 'meta' has no list of 100 fine_label_names; restore the file")
            names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
            arrays, labels = [], []
            for part in ("train", "test"):
                d = parts[part]
                if not (isinstance(d, dict) and isinstance(d.get("data"), np.ndarray) and "fine_labels" in d
                        and d["data"].ndim == 2 and d["data"].shape[1] == 3072
                        and len(d["fine_labels"]) == len(d["data"])):
                    raise UserError(f"CIFAR-100 {part!r} is not a batch of 'data' [N, 3072] and "
                                    "'fine_labels'; restore the file")
                arrays.append(d["data"].astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.append(np.asarray(d["fine_labels"], dtype=np.int64))
            images, label = np.concatenate(arrays), np.concatenate(labels)
            loaded["by_name"] = {str(n): images[label == i] for i, n in enumerate(names)}
        return loaded["by_name"]

    splits = {}
    for split in SPLITS:
        names = sorted(CIFAR_FS_SPLIT[split])

        def build(cache: Path, names=names) -> None:
            by_name = classes_of()
            missing = [n for n in names if n not in by_name]
            if missing:
                raise UserError(f"CIFAR-100 has no class {missing[0]!r} of the CIFAR-FS split; restore the "
                                "files")
            images = (resize_array(image, size, channels) for n in names for image in by_name[n])
            build_cache(cache, names, [len(by_name[n]) for n in names], images, size, channels, "CIFAR-100",
                        progress)

        splits[split] = cached(["cifar-fs", split, key], f"cifar-fs-{split}", size, channels, cache_dir, lazy,
                               build)
    return splits


def _tar_members(archive: Path, prefix: str, suffixes: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of the regular files under ``prefix`` in a tar archive, names checked."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = str(safe_member_name(member.name, archive))
                if not (name.startswith(prefix) and member.isfile() and name.lower().endswith(suffixes)):
                    continue
                if member.size > MAX_MEMBER_BYTES[prefix]:
                    raise UserError(f"{str(archive)!r} entry {name!r} is {member.size:,} bytes, too large "
                                    "for this dataset; the archive is not the published one")
                yield name, tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(f"archive {str(archive)!r} is corrupt or truncated ({type(err).__name__}); place the "
                        "published file again") from None


def _cifar_from_archive(archive: Path) -> dict:
    import tempfile

    parts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in _tar_members(archive, "cifar-100-python/", ("train", "test", "meta")):
            part = name.rsplit("/", 1)[-1]
            if part in ("train", "test", "meta"):
                (Path(tmp) / part).write_bytes(data)
                parts[part] = safe_unpickle(Path(tmp) / part, f"CIFAR-100 file {part!r} of {archive.name}")
    if set(parts) != {"train", "test", "meta"}:
        raise UserError(f"{str(archive)!r} lacks cifar-100-python/{{train,test,meta}}; it is not CIFAR-100's "
                        "python archive")
    return parts


# ----- CUB-200-2011 ----------------------------------------------------------------------------
def cub_split(species: list[str]) -> dict[str, list[str]]:
    """Chen et al. (2019)'s split of the 200 species (sorted): even → train, 1 mod 4 → val, 3 mod 4 → test."""
    ordered = sorted(species)
    return {"train": ordered[0::2], "val": ordered[1::4], "test": ordered[3::4]}


def _cub(root, size, channels, cache_dir, lazy, progress, checksums):
    folder, archive = root / "CUB_200_2011" / "images", root / CUB_ARCHIVE[0]
    if folder.is_dir():
        classes = scan_class_folders(folder)
        if len(classes) != 200:
            raise UserError(f"{str(folder)!r} has {len(classes)} species folders where CUB-200-2011 has 200; "
                            "restore the folder")
        everything = load_image_folder(folder, size, channels, cache_dir, lazy, progress)
    elif archive.is_file():
        digest = verify_checksum(archive, checksums.get(archive.name, CUB_ARCHIVE[1]), REPLACE)["sha256"]

        def build(cache: Path) -> None:
            decoded: dict[str, dict[str, np.ndarray]] = {}
            for name, data in _tar_members(archive, "CUB_200_2011/images/", (".jpg", ".jpeg", ".png")):
                parts = name.split("/")
                if len(parts) != 4:
                    continue
                decoded.setdefault(parts[2], {})[parts[3]] = decode(data, f"{archive.name}:{name}", size,
                                                                    channels)
            if len(decoded) != 200:
                raise UserError(f"{str(archive)!r} has {len(decoded)} species where CUB-200-2011 has 200; it "
                                "is not the published archive")
            names = sorted(decoded)
            images = (decoded[n][f] for n in names for f in sorted(decoded[n]))
            build_cache(cache, names, [len(decoded[n]) for n in names], images, size, channels, str(archive),
                        progress)

        everything = cached(["cub-archive", digest], "cub", size, channels, cache_dir, lazy, build)
    else:
        raise _not_found("CUB", root, f"{CUB_ARCHIVE[0]} (CUB-200-2011, from "
                         "https://www.vision.caltech.edu/datasets/cub_200_2011/) or its extracted "
                         "CUB_200_2011/ folder")
    return {s: everything.subset(names) for s, names in cub_split(list(everything)).items()}
