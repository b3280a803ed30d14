"""Train a recipe on synthetic image episodes through the public API (run alone or under torchrun)."""
import sys

import torch

from metadapt.config import build_config
from metadapt.tasks.episodes import Episodes
from metadapt.training import train

run_dir, overrides = sys.argv[1], sys.argv[2:]
generator = torch.Generator().manual_seed(0)
images = {f"class{c}": torch.rand(6, 1, 28, 28, generator=generator) for c in range(10)}
config = build_config(None, ["task.family=omniglot", "model.name=conv4", "model.filters=8", "task.ways=3",
                             "task.shots=1", "task.queries=2", "train.val_tasks=4", "train.threads=1",
                             *overrides])
train(config, run_dir, progress=False, tasks=Episodes(images, ways=3, shots=1, queries=2))
