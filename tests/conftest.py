import importlib.util

import pytest
import torch

from metadapt.tasks import SinusoidTasks, TaskBatch


def double_batch(batch: TaskBatch) -> TaskBatch:
    return TaskBatch(batch.support_x.double(), batch.support_y.double(), batch.query_x.double(),
                     batch.query_y.double(), batch.info)


@pytest.fixture
def sine_batch64():
    """Four float64 sinusoid tasks, 5 support and 7 query points each."""
    return double_batch(SinusoidTasks(shots=5, queries=7).sample(4, torch.Generator().manual_seed(3)))


MUJOCO = importlib.util.find_spec("mujoco") is not None and importlib.util.find_spec("imageio") is not None


def recipe_param(recipe):
    """A recipe as a test parameter, skipped cleanly where it needs the ``mujoco`` extra and it is absent."""
    needs = "half-cheetah" in recipe.stem
    return pytest.param(recipe, marks=pytest.mark.skipif(needs and not MUJOCO,
                                                         reason="needs pip install 'metadapt[mujoco]'"))
