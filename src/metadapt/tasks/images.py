"""N-way K-shot episodes over images: your own ``root/class/image`` tree, or mini-ImageNet,
tieredImageNet, CIFAR-FS and CUB from the files you have (``datasets/benchmarks.py``).

Classes are split into meta-training, validation and test classes that never overlap: the
benchmarks' published splits, or for a folder its ``train/``, ``val/`` and ``test/`` subfolders
when it has them, else its classes shuffled once with ``split_seed`` and cut in the proportions
``split`` (64 / 16 / 20, mini-ImageNet's).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.episodes import EpisodeFamily, Episodes

DATASETS = ("folder", "mini-imagenet", "tiered-imagenet", "cifar-fs", "cub")


@lru_cache(maxsize=2)
def _splits(dataset: str, data_dir: str | None, size: int, channels: int, lazy: str,
            split: tuple[float, ...], split_seed: int, cache_dir: str | None):
    from metadapt.datasets.benchmarks import load_benchmark

    return load_benchmark(dataset, data_dir, size=size, channels=channels, cache_dir=cache_dir,
                          lazy={"auto": None, "true": True, "false": False}[lazy], split=split,
                          split_seed=split_seed)


@dataclass
class ImagesOptions:
    dataset: str = option("folder", choices=DATASETS,
                          help="folder: your own root/class/image tree; or a benchmark from its files")
    data_dir: str | None = option(None, help="the folder, or where the benchmark's files are "
                                             "(default ~/.cache/metadapt/data/DATASET)")
    image_size: int = option(0, low=0, high=1024,
                             help="images are resized to this square size (0: the dataset's usual, 84; "
                                  "CIFAR-FS 32)")
    channels: int = option(3, choices=(1, 3), help="3: RGB; 1: grey")
    ways: int = option(5, low=2, high=10_000, help="classes per episode in meta-training")
    shots: int = option(1, positive=True, high=10_000, help="support images per class in meta-training")
    queries: int = option(15, positive=True, high=10_000, help="query images per class in meta-training")
    lazy: str = option("auto", choices=("auto", "true", "false"),
                       help="read images from the memory-mapped cache as episodes need them (auto: when "
                            "the cache is over 2 GB) instead of holding them in memory")
    split: list[float] = option([0.64, 0.16, 0.20], positive=True,
                                help="folder without train/val/test subfolders: shares of its classes for "
                                     "meta-training, validation and test")
    split_seed: int = option(0, low=0, help="folder without subfolders: the shuffle of classes into splits")
    cache_dir: str | None = option(None, help="where decoded images are cached "
                                              "(default ~/.cache/metadapt/cache, or $METADAPT_CACHE)")


@register("task", "images")
class ImagesFamily(EpisodeFamily):
    """Image classification episodes; the score is query accuracy."""

    Options = ImagesOptions
    default_model = "conv4"
    models = ("conv4", "resnet12")

    @property
    def size(self) -> int:
        return self.options.image_size or (32 if self.options.dataset == "cifar-fs" else 84)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.options.channels, self.size, self.size)

    def classes(self, split: str):
        o = self.options
        if len(o.split) != 3:
            raise UserError(f"task.split must be three shares (train, val, test), got {o.split}")
        return _splits(o.dataset, o.data_dir, self.size, o.channels, o.lazy, tuple(o.split), o.split_seed,
                       o.cache_dir)[split]

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> Episodes:
        ways = self.options.ways if ways is None else ways
        available = len(self.classes(split))
        if ways > available:
            key = "task.ways" if split != "test" else "eval.ways"
            o = self.options
            raise UserError(f"{key}={ways} needs {ways} classes, but the {split} split of {o.dataset} "
                            f"({o.data_dir}) has {available}; lower {key} or add classes")
        return super().tasks(split, shots, queries, ways)

    def describe(self) -> list[str]:
        o = self.options
        name = {"folder": f"images of `{o.data_dir}`", "mini-imagenet": "mini-ImageNet (Ravi & Larochelle "
                "split)", "tiered-imagenet": "tieredImageNet", "cifar-fs": "CIFAR-FS",
                "cub": "CUB-200-2011 (Chen et al. 2019 split)"}[o.dataset]
        return [f"- Tasks: {name}, {self.size}×{self.size} {'RGB' if o.channels == 3 else 'grey'}; "
                f"{o.ways}-way {o.shots}-shot episodes with {o.queries} queries per class in training."]
