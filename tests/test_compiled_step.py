"""The compiled meta-step (``train.compile``) takes exactly the eager step: meta-gradient through
``torch.func`` and the update of ``torch.optim.Adam``/``SGD``, fused in one compiled graph."""
import pytest
import torch
from test_training import small

import metadapt
from metadapt.models import MLP
from metadapt.tasks import SinusoidTasks, TaskBatch
from metadapt.training import train
from metadapt.training.compiled import CompiledMetaStep


def batches(n=3):
    out = []
    for i in range(n):
        b = SinusoidTasks(shots=5, queries=7).sample(6, torch.Generator().manual_seed(i))
        out.append(TaskBatch(*(t.double() for t in (b.support_x, b.support_y, b.query_x, b.query_y))))
    return out


def make(**kwargs):
    torch.manual_seed(0)
    return metadapt.MAML(MLP(1, [16, 16], 1).double(), inner_lr=0.05, inner_steps=2, **kwargs)


@pytest.mark.parametrize("variant,optimizer", [({}, "adam"), ({"update_rule": "metasgd"}, "adam"),
                                               ({"first_order": True, "adapt_only": "head"}, "sgd")],
                         ids=["maml-adam", "metasgd-adam", "fo-anil-sgd"])
def test_compiled_step_equals_eager_step(variant, optimizer):
    opt = ((lambda p: torch.optim.Adam(p, 1e-2)) if optimizer == "adam"
           else (lambda p: torch.optim.SGD(p, 1e-2)))
    eager, compiled = make(**variant), make(**variant)
    eager_opt, compiled_opt = opt(eager.parameters()), opt(compiled.parameters())
    step = CompiledMetaStep(compiled, compiled_opt)
    for batch in batches():
        loss, _ = eager.meta_loss(batch)
        eager_opt.zero_grad()
        loss.backward()
        eager_opt.step()
        fused_loss, finite = step(batch)
        assert bool(finite)
        torch.testing.assert_close(fused_loss, loss.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # the optimizer state is the eager optimizer's, so checkpoints are interchangeable
    if optimizer == "adam":
        for sa, sb in zip(eager_opt.state_dict()["state"].values(),
                          compiled_opt.state_dict()["state"].values()):
            assert sa.keys() == sb.keys()
            for key in sa:
                torch.testing.assert_close(sa[key], sb[key], rtol=1e-12, atol=1e-20)


def test_non_finite_step_changes_nothing():
    algorithm = make()
    optimizer = torch.optim.Adam(algorithm.parameters(), 1e-2)
    step = CompiledMetaStep(algorithm, optimizer)
    step(batches(1)[0])
    before = {k: v.clone() for k, v in algorithm.state_dict().items()}
    state_before = {k: v.clone() for k, v in optimizer.state[next(algorithm.parameters())].items()}
    bad = batches(1)[0]
    bad.query_y[0, 0] = float("nan")
    _, finite = step(bad)
    assert not bool(finite)
    assert all(torch.equal(before[k], v) for k, v in algorithm.state_dict().items())
    assert all(torch.equal(state_before[k], v)
               for k, v in optimizer.state[next(algorithm.parameters())].items())


def test_unsupported_algorithms_and_optimizers_are_refused():
    algorithm = make()
    with pytest.raises(ValueError, match="amsgrad"):
        CompiledMetaStep(algorithm, torch.optim.Adam(algorithm.parameters(), amsgrad=True))
    with pytest.raises(ValueError, match="Adam and SGD"):
        CompiledMetaStep(algorithm, torch.optim.RMSprop(algorithm.parameters()))
    reptile = metadapt.Reptile(MLP(1, [8], 1))
    with pytest.raises(ValueError, match="MAML family"):
        CompiledMetaStep(reptile, torch.optim.Adam(reptile.parameters()))


def test_training_with_compile_follows_the_eager_run_and_resumes(tmp_path):
    train(small(30), tmp_path / "eager", progress=False)
    train(small(20, "train.compile=true"), tmp_path / "compiled", progress=False)
    train(small(30, "train.compile=true"), tmp_path / "compiled", resume=True, progress=False)
    eager = metadapt.load(tmp_path / "eager", "last").algorithm.state_dict()
    compiled = metadapt.load(tmp_path / "compiled", "last").algorithm.state_dict()
    for key in eager:  # float32: the fused graph may round differently
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
