"""The meta-gradients are right: against a plain per-task autograd loop and finite differences."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from metadapt.algorithms import MAML
from metadapt.models import MLP


def tanh_net():
    return nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))


def make(model_fn, seed=0, **kwargs):
    torch.manual_seed(seed)
    return MAML(model_fn().double(), **kwargs)


def reference_meta_loss(model, batch, lr, steps, first_order, adapted=None):
    return reference_meta_loss_fn(model, batch, lr, steps, first_order, nn.functional.mse_loss, adapted)


def reference_meta_loss_fn(model, batch, lr, steps, first_order, loss_fn, adapted=None):
    """The textbook per-task loop: torch.autograd.grad with create_graph=True."""
    params = dict(model.named_parameters())
    names = adapted or list(params)
    total = 0.0
    for i in range(batch.num_tasks):
        fast = dict(params)
        for _ in range(steps):
            loss = loss_fn(functional_call(model, fast, (batch.support_x[i],)), batch.support_y[i])
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=True)
            if first_order:
                grads = [g.detach() for g in grads]
            fast = {**fast, **{n: fast[n] - lr * g for n, g in zip(names, grads)}}
        total = total + loss_fn(functional_call(model, fast, (batch.query_x[i],)), batch.query_y[i])
    return total / batch.num_tasks


def grads_of(loss, module):
    return torch.autograd.grad(loss, list(module.parameters()))


def assert_all_close(a, b, **kw):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **kw)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("model_fn", [lambda: MLP(1, [16, 16], 1), tanh_net], ids=["relu", "tanh"])
def test_second_order_matches_plain_autograd_loop(strategy, steps, model_fn, sine_batch64):
    maml = make(model_fn, inner_lr=0.05, inner_steps=steps, task_parallel=strategy)
    ours, _ = maml.meta_loss(sine_batch64)
    ref = reference_meta_loss(maml.model, sine_batch64, 0.05, steps, first_order=False)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert_all_close(grads_of(ours, maml), grads_of(ref, maml), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_matches_finite_differences(strategy, steps, sine_batch64):
    maml = make(tanh_net, inner_lr=0.1, inner_steps=steps, task_parallel=strategy)
    loss, _ = maml.meta_loss(sine_batch64)
    analytic = torch.cat([g.flatten() for g in grads_of(loss, maml)])
    flat = nn.utils.parameters_to_vector(maml.parameters()).detach()
    eps, numeric = 1e-6, torch.empty_like(flat)
    for j in range(flat.numel()):
        values = []
        for sign in (1, -1):
            shifted = flat.clone()
            shifted[j] += sign * eps
            nn.utils.vector_to_parameters(shifted, maml.parameters())
            values.append(maml.meta_loss(sine_batch64)[0].item())
        numeric[j] = (values[0] - values[1]) / (2 * eps)
    nn.utils.vector_to_parameters(flat, maml.parameters())
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_equals_loop_with_detached_inner_gradients(strategy, steps, sine_batch64):
    fo = make(tanh_net, inner_lr=0.1, inner_steps=steps, first_order=True, task_parallel=strategy)
    ours = grads_of(fo.meta_loss(sine_batch64)[0], fo)
    ref = reference_meta_loss(fo.model, sine_batch64, 0.1, steps, first_order=True)
    assert_all_close(ours, grads_of(ref, fo), rtol=1e-10, atol=1e-12)
    # and it really is a different gradient from the exact one
    exact = reference_meta_loss(fo.model, sine_batch64, 0.1, steps, first_order=False)
    diff = max((a - b).abs().max().item() for a, b in zip(ours, grads_of(exact, fo)))
    assert diff > 1e-4


@pytest.mark.parametrize("variant", [{}, {"first_order": True}, {"update_rule": "metasgd"},
                                     {"adapt_only": "head"}])
def test_vectorised_meta_batch_equals_per_task_loop(variant, sine_batch64):
    results = []
    for strategy in ("vmap", "loop"):
        algo = make(lambda: MLP(1, [16, 16], 1), inner_lr=0.05, inner_steps=2, task_parallel=strategy,
                    **variant)
        loss, _ = algo.meta_loss(sine_batch64)
        results.append((loss, grads_of(loss, algo)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    assert_all_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)


def test_anil_adapts_only_the_head_but_meta_learns_the_body(sine_batch64):
    anil = make(tanh_net, inner_lr=0.1, inner_steps=2, adapt_only="head")
    assert anil.adapted_names == ["4.weight", "4.bias"]
    loss, _ = anil.meta_loss(sine_batch64)
    ref = reference_meta_loss(anil.model, sine_batch64, 0.1, 2, first_order=False,
                              adapted=["4.weight", "4.bias"])
    grads = grads_of(loss, anil)
    assert_all_close(grads, grads_of(ref, anil), rtol=1e-10, atol=1e-12)
    assert grads[0].abs().sum() > 0  # the body's first layer is meta-learned
    adapted = anil.adapt_tasks(sine_batch64.support_x, sine_batch64.support_y, 2)
    assert torch.equal(adapted.params["0.weight"][0], anil.model[0].weight.detach())
    assert not torch.equal(adapted.params["4.weight"][0], anil.model[4].weight.detach())


def test_metasgd_step_sizes_get_gradients_match_fd_and_change(sine_batch64):
    msgd = make(tanh_net, inner_lr=0.1, inner_steps=1, update_rule="metasgd")
    loss, _ = msgd.meta_loss(sine_batch64)
    lr_grads = torch.autograd.grad(loss, list(msgd.update_rule.lrs))
    assert all(g.abs().sum() > 0 for g in lr_grads)
    # finite differences on one step-size entry
    entry, eps = msgd.update_rule.lrs[1], 1e-6
    with torch.no_grad():
        entry[3] += eps
        up = msgd.meta_loss(sine_batch64)[0].item()
        entry[3] -= 2 * eps
        down = msgd.meta_loss(sine_batch64)[0].item()
        entry[3] += eps
    assert lr_grads[1][3].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)
    before = [p.detach().clone() for p in msgd.update_rule.lrs]
    opt = torch.optim.Adam(msgd.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        msgd.meta_loss(sine_batch64)[0].backward()
        opt.step()
    assert all(not torch.equal(b, a.detach()) for b, a in zip(before, msgd.update_rule.lrs))


@pytest.mark.parametrize("variant", [{}, {"first_order": True, "update_rule": "metasgd"}],
                         ids=["maml", "fo-metasgd"])
def test_compiled_meta_loss_equals_eager(variant, sine_batch64):
    """The opt-in ``torch.compile`` path computes the same loss and meta-gradient."""
    eager = make(lambda: MLP(1, [16, 16], 1), inner_lr=0.05, inner_steps=2, task_parallel="vmap", **variant)
    compiled = make(lambda: MLP(1, [16, 16], 1), inner_lr=0.05, inner_steps=2, task_parallel="vmap",
                    compile=True, **variant)
    for _ in range(2):  # the second call reuses the compiled graph
        loss, _ = compiled.meta_loss(sine_batch64)
        ref, _ = eager.meta_loss(sine_batch64)
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
        assert_all_close(grads_of(loss, compiled), grads_of(ref, eager), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_backward_equals_backward_of_meta_loss(strategy, first_order, sine_batch64):
    """The trainer's ``meta_backward`` (one task at a time on the loop) adds the same gradient."""
    algo = make(lambda: MLP(1, [16, 16], 1), inner_lr=0.05, inner_steps=2, task_parallel=strategy,
                first_order=first_order)
    loss, _ = algo.meta_loss(sine_batch64)
    expected = grads_of(loss * 0.5, algo)
    value, metrics = algo.meta_backward(sine_batch64, scale=0.5)
    assert value == pytest.approx(loss.item(), rel=1e-12) and metrics["query_loss"] == pytest.approx(value)
    assert_all_close([p.grad for p in algo.parameters()], expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_meta_loss_under_no_grad_is_the_same_number_without_a_graph(strategy, sine_batch64):
    maml = make(tanh_net, inner_lr=0.1, inner_steps=2, task_parallel=strategy)
    expected = maml.meta_loss(sine_batch64)[0]
    with torch.no_grad():
        loss = maml.meta_loss(sine_batch64)[0]
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, expected.detach(), rtol=0, atol=0)
