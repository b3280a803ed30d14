"""Omniglot N-way K-shot episodes (Lake et al. 2015; the few-shot protocol of Vinyals et al. 2016)
as a task family: train / validation / test episodes from the split's class subsets."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.episodes import EpisodeFamily


@lru_cache(maxsize=4)
def _classes(subset: str, split: str, data_dir: str | None, download: bool):
    from metadapt.datasets.omniglot import load_omniglot

    return load_omniglot(subset, split=split, data_dir=data_dir, allow_download=download)


@dataclass
class OmniglotOptions:
    ways: int = option(5, low=2, high=10_000, help="classes per episode in meta-training")
    shots: int = option(1, positive=True, high=10_000, help="support images per class in meta-training")
    queries: int = option(15, positive=True, high=10_000, help="query images per class in meta-training")
    data_dir: str | None = option(None,
                                  help="folder with the archives (default ~/.cache/metadapt/data/omniglot)")
    split: str = option("vinyals", choices=("vinyals", "background"))
    train_subset: str = "trainval"
    val_subset: str = "val"
    test_subset: str = "test"
    download: bool = option(True, help="fetch missing archives where there is a network")


@register("task", "omniglot")
class OmniglotFamily(EpisodeFamily):
    """Omniglot character classification episodes; the score is query accuracy."""

    Options = OmniglotOptions
    default_model = "conv4"
    models = ("conv4",)
    input_shape = (1, 28, 28)

    def classes(self, split: str):
        o = self.options
        name = {"train": o.train_subset, "val": o.val_subset, "test": o.test_subset}[split]
        return _classes(name, o.split, o.data_dir, o.download)

    def describe(self) -> list[str]:
        o = self.options
        return [f"- Tasks: Omniglot ({o.split} split, trained on `{o.train_subset}`, "
                f"tested on `{o.test_subset}`), "
                f"{o.ways}-way {o.shots}-shot episodes with {o.queries} queries per class in training."]
