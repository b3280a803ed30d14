"""Second-order MAML through Conv-4 with BatchNorm (batch statistics), float64: every
task-parallel path against a plain per-task autograd loop and finite differences."""
import pytest
import torch
from test_gradients import grads_of, reference_meta_loss_fn
from torch import nn

from metadapt.algorithms import MAML
from metadapt.models import Conv4
from metadapt.tasks import TaskBatch


def image_batch(tasks=2, ways=3, shots=1, queries=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(tasks, ways * shots, 1, 28, 28, generator=g, dtype=torch.float64)
    qx = torch.rand(tasks, ways * queries, 1, 28, 28, generator=g, dtype=torch.float64)
    sy = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous()
    return TaskBatch(sx, sy, qx, qy)


def conv_maml(strategy, steps, first_order=False, downsample="pool"):
    torch.manual_seed(0)
    return MAML(Conv4(1, 4, out_features=3, downsample=downsample).double(), loss="cross_entropy",
                inner_lr=0.4, inner_steps=steps, first_order=first_order, task_parallel=strategy)


@pytest.mark.parametrize("downsample", ["pool", "stride"])
@pytest.mark.parametrize("strategy", ["loop", "auto"])
@pytest.mark.parametrize("steps", [1, 2])
def test_conv4_batchnorm_second_order_matches_autograd_loop(strategy, steps, downsample):
    batch = image_batch()
    maml = conv_maml(strategy, steps, downsample=downsample)
    ours = grads_of(maml.meta_loss(batch)[0], maml)
    ref = reference_meta_loss_fn(maml.model, batch, 0.4, steps, False, nn.functional.cross_entropy)
    for a, b in zip(ours, grads_of(ref, maml)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("strategy,downsample", [("loop", "pool"), ("auto", "pool"), ("loop", "stride")])
def test_conv4_batchnorm_second_order_matches_finite_differences(strategy, downsample):
    batch = image_batch()
    maml = conv_maml(strategy, 1, downsample=downsample)
    loss = maml.meta_loss(batch)[0]
    grads = dict(zip([n for n, _ in maml.named_parameters()], grads_of(loss, maml)))
    generator = torch.Generator().manual_seed(1)
    for name, p in maml.named_parameters():  # a few entries of every tensor
        for index in torch.randint(0, p.numel(), (3,), generator=generator).tolist():
            flat = p.data.view(-1)
            original = flat[index].item()
            values = []
            for delta in (1e-6, -1e-6):
                flat[index] = original + delta
                values.append(maml.meta_loss(batch)[0].item())
            flat[index] = original
            numeric = (values[0] - values[1]) / 2e-6
            assert grads[name].view(-1)[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-8), name


def test_vmap_is_refused_for_second_order_through_batchnorm():
    with pytest.raises(ValueError, match="wrong second-order gradients through BatchNorm"):
        conv_maml("vmap", 1)


@pytest.mark.parametrize("steps", [1, 2])
def test_conv4_batchnorm_first_order_vmap_equals_loop(steps):
    batch = image_batch()
    results = []
    for strategy in ("vmap", "loop"):
        maml = conv_maml(strategy, steps, first_order=True)
        loss = maml.meta_loss(batch)[0]
        results.append((loss, grads_of(loss, maml)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    ref = reference_meta_loss_fn(maml.model, batch, 0.4, steps, True, nn.functional.cross_entropy)
    for a, b in zip(results[1][1], grads_of(ref, maml)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_batched_prediction_loops_over_tasks_for_convolutions_and_equals_vmap():
    from metadapt.algorithms import MAML
    from metadapt.models import Conv4

    torch.manual_seed(0)
    maml = MAML(Conv4(1, 8, out_features=3), loss="cross_entropy", inner_lr=0.4)
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(3, 6, 1, 28, 28, generator=g), torch.randn(3, 9, 1, 28, 28, generator=g)
    adapted = maml.adapt_tasks(sx, torch.tensor([[0, 0, 1, 1, 2, 2]] * 3), 2)
    assert adapted.loop
    looped = adapted.predict(qx, step=1)
    adapted.loop = False
    torch.testing.assert_close(looped, adapted.predict(qx, step=1), rtol=1e-5, atol=1e-6)


def test_strided_conv4_is_the_maml_code_network():
    """Stride-2 convolutions take 28×28 to 14, 7, 4 and 2 pixels; the last map is averaged over space."""
    net = Conv4(1, 8, out_features=5, downsample="stride")
    assert net.embedding_dim == 8
    x = torch.randn(3, 1, 28, 28)
    sizes = []
    h = x
    for block in list(net)[:4]:
        h = block(h)
        sizes.append(h.shape[-1])
    assert sizes == [14, 7, 4, 2]
    torch.testing.assert_close(net(x), net[-1](h.mean(dim=(-2, -1))))
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    with pytest.raises(ValueError, match="downsample must be one of"):
        Conv4(1, 8, downsample="avg")
