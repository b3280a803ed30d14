"""Training a small network on handwritten digits, as a task for a learned optimizer (the MNIST
experiment of Andrychowicz et al. 2016, §3.2, on scikit-learn's bundled 8×8 digits: no download).

A task is one optimization problem: ``support`` images drawn from the split (the objective the
optimizer minimises, the paper's minibatch of 128) and ``queries`` other images of the same split
(held-out data the optimized network is scored on); the network's starting point is the algorithm's
(a fresh draw per task for ``learned-optimizer``). The 1,797 images (Alpaydin & Kaynak's UCI optical
digits, 8×8, 0-16 grey levels, scaled to [0, 1]) are split once, by a fixed permutation, into
1,000 for training, 297 for validation and 500 for test: held-out problems use images no training
problem saw. Needs scikit-learn: ``pip install 'metadapt[digits]'``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.batch import TaskBatch
from metadapt.tasks.family import TaskFamily

SPLITS = {"train": (0, 1000), "val": (1000, 1297), "test": (1297, 1797)}


@lru_cache(maxsize=1)
def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images ``[N, 64]`` in [0, 1] and labels ``[N]``, in the fixed split order."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise UserError("task.family=digits reads scikit-learn's bundled digits; install it with "
                        "pip install 'metadapt[digits]'") from None
    data = sklearn_digits()
    images = torch.tensor(data.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images[order], labels[order]


@dataclass(frozen=True)
class DigitsTasks:
    """``sample(n, generator)``: ``support`` and ``queries`` distinct images of ``split`` per task."""

    split: str = "train"
    support: int = 128
    queries: int = 128

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        images, labels = load_digits()
        lo, hi = SPLITS[self.split]
        if self.support + self.queries > hi - lo:
            raise UserError(f"digits: {self.support} support + {self.queries} query images exceed the "
                            f"{hi - lo} images of the {self.split} split")
        picks = torch.stack([lo + torch.randperm(hi - lo, generator=generator)[:self.support + self.queries]
                             for _ in range(num_tasks)])
        s, q = picks[:, :self.support], picks[:, self.support:]
        return TaskBatch(images[s], labels[s], images[q], labels[q])


@dataclass
class DigitsOptions:
    support: int = option(128, positive=True, help="images in each problem's objective (the paper's 128)")
    queries: int = option(128, positive=True, help="held-out images the optimized network is scored on")


@register("task", "digits")
class DigitsFamily(TaskFamily):
    """10-way classification of 8×8 digits by a small network trained from scratch per task."""

    Options = DigitsOptions
    default_model = "mlp"
    models = ("mlp",)
    input_shape = (64,)
    outputs = 10
    classification = True

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> DigitsTasks:
        return DigitsTasks(split, self.options.support if shots is None else shots,
                           self.options.queries if queries is None else queries)

    def num_classes(self, split="train") -> int:
        return 10

    def eval_settings(self, eval_config):
        return [("digits", self.tasks("test"), 0)]

    def describe(self) -> list[str]:
        o = self.options
        return [f"- Tasks: train a network on {o.support} of scikit-learn's 8×8 digits (10 classes) and "
                f"score it on {o.queries} others; test problems use the 500 held-out images."]
