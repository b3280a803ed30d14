"""N-way K-shot classification episodes over any labelled dataset (Vinyals et al., 2016).

An episode draws ``ways`` classes, then ``shots + queries`` distinct examples of each; the
first ``shots`` form the support set and the rest the query set, so the two never share an
example. Labels are remapped to ``0..ways-1`` in the order the classes were drawn. Inputs are
ordered class by class: ``support_y = [0]*shots + [1]*shots + …``.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from metadapt.errors import UserError
from metadapt.tasks.batch import TaskBatch
from metadapt.tasks.family import TaskFamily


class Episodes:
    """Task source: ``sample(n, generator) -> TaskBatch`` of ``n`` episodes.

    ``dataset`` maps each class to a tensor of its examples ``[n_c, ...]``. Shapes:
    ``support_x [T, ways*shots, ...]``, ``support_y [T, ways*shots]`` (int64), and likewise
    for the query set. ``info["classes"]`` holds the drawn class indices ``[T, ways]``.
    """

    def __init__(self, dataset: Mapping[str, torch.Tensor], ways: int = 5, shots: int = 1, queries: int = 15):
        if ways < 1 or shots < 1 or queries < 1:
            raise UserError(f"episodes need ways, shots and queries >= 1, got {ways}, {shots}, {queries}")
        self.names = list(dataset)
        if ways > len(self.names):
            raise UserError(f"asked for {ways}-way episodes but the dataset has only {len(self.names)} "
                            f"classes; lower the number of ways")
        smallest = min(self.names, key=lambda n: len(dataset[n]))
        if shots + queries > len(dataset[smallest]):
            raise UserError(
                f"asked for {shots} shots + {queries} queries = {shots + queries} examples per class, but "
                f"class {smallest!r} has only {len(dataset[smallest])}; lower shots or queries"
            )
        self.ways, self.shots, self.queries = ways, shots, queries
        sizes = {len(dataset[n]) for n in self.names}
        # a dataset that gathers many classes' images at once (datasets/images.py) is never stacked
        self.gathers = hasattr(dataset, "take")
        self.stacked = (torch.stack([dataset[n] for n in self.names])
                        if len(sizes) == 1 and not self.gathers else None)
        self.dataset = dataset

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        n, per_class = self.ways, self.shots + self.queries
        classes = torch.stack([torch.randperm(len(self.names), generator=generator)[:n]
                               for _ in range(num_tasks)])
        if self.stacked is not None:
            picks = torch.stack([torch.randperm(self.stacked.shape[1], generator=generator)[:per_class]
                                 for _ in range(num_tasks * n)]).view(num_tasks, n, per_class)
            x = self.stacked[classes.unsqueeze(-1), picks]  # [T, ways, shots+queries, ...]
        elif self.gathers:
            sizes = [len(self.dataset[self.names[c]]) for c in classes.reshape(-1).tolist()]
            picks = torch.stack([torch.randperm(size, generator=generator)[:per_class]
                                 for size in sizes]).view(num_tasks, n, per_class)
            x = self.dataset.take(classes, picks)
        else:
            x = torch.stack([torch.stack([
                self.dataset[self.names[c]][
                    torch.randperm(len(self.dataset[self.names[c]]), generator=generator)[:per_class]]
                for c in row.tolist()]) for row in classes])
        labels = torch.arange(n).view(1, n, 1).expand(num_tasks, n, per_class)
        s = self.shots
        flat = lambda t: t.reshape(num_tasks, -1, *t.shape[3:])  # noqa: E731
        return TaskBatch(
            support_x=flat(x[:, :, :s]), support_y=flat(labels[:, :, :s]).contiguous(),
            query_x=flat(x[:, :, s:]), query_y=flat(labels[:, :, s:]).contiguous(),
            info={"classes": classes},
        )


class EpisodeFamily(TaskFamily):
    """A task family of N-way K-shot episodes over classes of examples: subclasses give the classes
    of each split (``classes(split)``, a mapping of class name to examples) and the recipe options
    ``ways``, ``shots``, ``queries``; evaluation runs every ``eval.ways`` × ``eval.shots``."""

    classification = True

    @property
    def outputs(self) -> int:
        return self.options.ways

    def classes(self, split: str) -> Mapping:
        raise NotImplementedError

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> Episodes:
        o = self.options
        return Episodes(self.classes(split), ways=o.ways if ways is None else ways,
                        shots=o.shots if shots is None else shots,
                        queries=o.queries if queries is None else queries)

    def num_classes(self, split: str = "train") -> int:
        return len(self.classes(split))

    def eval_settings(self, eval_config):
        return [(f"{ways}-way {shots}-shot",
                 self.tasks("test", ways=ways, shots=shots, queries=eval_config.queries),
                 1000 * ways + shots) for ways in eval_config.ways for shots in eval_config.shots]

    def example_figures(self, methods, settings, run_dir, steps, eval_config):
        from metadapt.evaluation.plots import plot_example_episodes

        label, batch = next(iter(settings.items()))
        rel = "plots/example_episodes.png"
        plot_example_episodes(next(iter(methods.values())), batch.to("cpu"), run_dir / rel)
        return {f"Example episodes, {label}": rel}

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if not config.eval.ways:
            raise UserError(f"eval.ways must be a non-empty list of integers >= 2, got {config.eval.ways}")
