r"""Milliseconds per meta-training step of a recipe (sampling, meta-loss, backward, Adam).

    python benchmarks/episode_time.py configs/omniglot/protonet.yaml \
        task.data_dir=../shared/data/omniglot task.ways=60

Median of ``--steps`` steps after 5 warm-up steps; a measurement, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from metadapt.build import build_algorithm, build_tasks
from metadapt.config import config_from_file
from metadapt.training.trainer import build_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    config = config_from_file(args.recipe, args.overrides)
    algorithm, tasks = build_algorithm(config), build_tasks(config)
    optimizer = build_optimizer(config, algorithm)
    generator = torch.Generator().manual_seed(0)
    times = []
    for i in range(5 + args.steps):
        start = time.perf_counter()
        loss, _ = algorithm.meta_loss(tasks.sample(config.train.meta_batch_size, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 5:
            times.append(time.perf_counter() - start)
    print(f"{config.algorithm.name}, {config.task.ways}-way {config.task.shots}-shot, "
          f"{config.task.queries} queries, meta-batch {config.train.meta_batch_size}: "
          f"{1000 * statistics.median(times):.0f} ms per step "
          f"(median of {args.steps}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
