"""N-way K-shot episodes: invariants as properties, and refusals that name the numbers."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metadapt.errors import UserError
from metadapt.tasks.episodes import Episodes


def dataset(classes=12, per_class=8, ragged=False):
    """Example ``i`` of class ``c`` is the scalar ``1000*c + i``: identity is readable from the value."""
    return {f"class{c}": (1000 * c + torch.arange(per_class - (c % 3 if ragged else 0))).float().view(-1, 1)
            for c in range(classes)}


@settings(max_examples=40, deadline=None)
@given(ways=st.integers(1, 12), shots=st.integers(1, 4), queries=st.integers(1, 3), tasks=st.integers(1, 4),
       seed=st.integers(0, 2**31), ragged=st.booleans())
def test_episode_invariants(ways, shots, queries, tasks, seed, ragged):
    data = dataset(per_class=10, ragged=ragged)
    source = Episodes(data, ways=ways, shots=shots, queries=queries)
    batch = source.sample(tasks, torch.Generator().manual_seed(seed))
    assert (batch.support_x.shape == (tasks, ways * shots, 1)
            and batch.query_x.shape == (tasks, ways * queries, 1))
    assert batch.support_y.dtype == torch.int64
    for t in range(tasks):
        sy, qy = batch.support_y[t], batch.query_y[t]
        assert sy.min() >= 0 and sy.max() <= ways - 1
        assert torch.equal(torch.bincount(sy, minlength=ways), torch.full((ways,), shots))
        assert torch.equal(torch.bincount(qy, minlength=ways), torch.full((ways,), queries))
        support, query = batch.support_x[t].view(-1).tolist(), batch.query_x[t].view(-1).tolist()
        assert not set(support) & set(query)                     # support and query never share an example
        assert len(set(support)) == len(support) and len(set(query)) == len(query)
        classes = batch.info["classes"][t].tolist()
        assert len(set(classes)) == ways
        for x, y in zip(support + query, sy.tolist() + qy.tolist()):
            assert int(x) // 1000 == classes[y]                  # label y means the y-th drawn class
    again = source.sample(tasks, torch.Generator().manual_seed(seed))
    assert torch.equal(again.support_x, batch.support_x) and torch.equal(again.query_x, batch.query_x)


def test_refusals_name_the_numbers():
    with pytest.raises(UserError, match="asked for 13-way episodes but the dataset has only 12 classes"):
        Episodes(dataset(), ways=13, shots=1, queries=1)
    with pytest.raises(UserError, match=r"asked for 5 shots \+ 4 queries = 9 examples per class, "
                                        r"but class 'class0' has only 8"):
        Episodes(dataset(), ways=5, shots=5, queries=4)
