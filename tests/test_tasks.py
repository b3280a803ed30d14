import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metadapt.tasks import SinusoidTasks, TaskBatch


@settings(max_examples=25, deadline=None)
@given(shots=st.integers(1, 20), queries=st.integers(1, 20), tasks=st.integers(1, 8),
       seed=st.integers(0, 2**31))
def test_sinusoid_shapes_ranges_and_truth(shots, queries, tasks, seed):
    source = SinusoidTasks(shots=shots, queries=queries)
    b = source.sample(tasks, torch.Generator().manual_seed(seed))
    assert b.support_x.shape == (tasks, shots, 1) and b.query_x.shape == (tasks, queries, 1)
    assert b.support_y.shape == (tasks, shots, 1) and b.query_y.shape == (tasks, queries, 1)
    assert b.support_x.min() >= -5 and b.support_x.max() <= 5
    amp, phase = b.info["amplitude"], b.info["phase"]
    assert ((amp >= 0.1) & (amp <= 5.0)).all() and ((phase >= 0) & (phase <= math.pi)).all()
    expected = amp.view(-1, 1, 1) * torch.sin(b.query_x - phase.view(-1, 1, 1))
    torch.testing.assert_close(b.query_y, expected)


def test_same_seed_same_tasks_and_different_seed_differs():
    source = SinusoidTasks()
    a = source.sample(5, torch.Generator().manual_seed(7))
    b = source.sample(5, torch.Generator().manual_seed(7))
    c = source.sample(5, torch.Generator().manual_seed(8))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.support_x, c.support_x)


def test_founding_preset_samples_x_in_minus_pi_pi():
    b = SinusoidTasks.preset("founding", shots=50).sample(20, torch.Generator().manual_seed(0))
    assert b.support_x.abs().max() <= math.pi
    assert b.support_x.abs().max() > 2.5  # actually spans the range


def test_each_preset_follows_its_source_phase_convention():
    """MAML's code: A·sin(x − φ); the founding article: A·sin(x + φ)."""
    for name, sign in (("maml", -1), ("founding", 1)):
        b = SinusoidTasks.preset(name, shots=20).sample(8, torch.Generator().manual_seed(1))
        a, phase = b.info["amplitude"].view(-1, 1, 1), b.info["phase"].view(-1, 1, 1)
        assert torch.allclose(b.support_y, a * torch.sin(b.support_x + sign * phase), atol=1e-6)


def test_unknown_preset_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown sinusoid preset 'nope'"):
        SinusoidTasks.preset("nope")
    with pytest.raises(ValueError, match="shots >= 1"):
        SinusoidTasks(shots=0)


def test_taskbatch_checks_and_indexing():
    b = SinusoidTasks().sample(6, torch.Generator().manual_seed(0))
    part = b[2:4]
    assert part.num_tasks == 2 and torch.equal(part.query_x, b.query_x[2:4])
    assert torch.equal(part.info["amplitude"], b.info["amplitude"][2:4])
    assert b[1].num_tasks == 1
    assert b.to("cpu").support_x.device.type == "cpu"
    with pytest.raises(ValueError, match="query_x has 5 tasks"):
        TaskBatch(b.support_x, b.support_y, b.query_x[:5], b.query_y)
