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
