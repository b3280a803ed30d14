"""PEARL: the posterior's product of Gaussians and its KL against closed forms, the tanh-Gaussian
log-density and the soft actor-critic losses against hand computations, the encoder's gradient
path, posterior-sampling exploration, the replay buffers, and a run that resumes bit for bit."""
import json
import math
from pathlib import Path

import pytest
import torch

from metadapt.algorithms.rl import PEARL
from metadapt.config import config_from_file
from metadapt.envs.point_robot import PointRobot
from metadapt.experience.replay import TaskReplay
from metadapt.models.pearl_networks import (PEARLNetworks, kl_to_standard_normal, product_of_full_gaussians,
                                            product_of_gaussians, sample_gaussian, tanh_gaussian_log_prob)
from metadapt.training import load, train
from metadapt.training.checkpoint import load_checkpoint

ROOT = Path(__file__).parent.parent
RECIPE = ROOT / "configs/rl/pearl-point-robot.yaml"
TINY = ["train.iterations=4", "train.meta_batch_size=4", "train.val_every=2", "train.val_tasks=6",
        "train.checkpoint_every=2", "train.log_every=1", "algorithm.train_tasks=6",
        "algorithm.tasks_per_iteration=2", "algorithm.initial_steps=40", "algorithm.prior_steps=40",
        "algorithm.extra_posterior_steps=40",
        "algorithm.gradient_steps=3", "algorithm.batch_size=16", "algorithm.context_size=8",
        "algorithm.buffer_capacity=200", "model.hidden=16", "model.encoder_hidden=16", "eval.tasks=8",
        "train.threads=1"]


def agent(seed=0, encoder="product", **options) -> PEARL:
    torch.manual_seed(seed)
    return PEARL(PEARLNetworks(2, 2, latent_size=3, hidden=16, encoder_hidden=16, encoder=encoder).double(),
                 **options)


def test_product_of_gaussians_is_the_closed_form_and_ignores_order():
    mu = torch.tensor([[0.3, -1.0], [2.0, 0.5]], dtype=torch.float64)           # two factors, 2-d
    var = torch.tensor([[0.5, 2.0], [1.5, 0.25]], dtype=torch.float64)
    mean, variance = product_of_gaussians(mu, var)
    v1, v2, m1, m2 = var[0], var[1], mu[0], mu[1]
    assert torch.allclose(variance, v1 * v2 / (v1 + v2))
    assert torch.allclose(mean, (m1 * v2 + m2 * v1) / (v1 + v2))
    again = product_of_gaussians(mu.flip(0), var.flip(0))                       # permutation-invariant
    assert torch.allclose(again[0], mean) and torch.allclose(again[1], variance)
    # the density of the product is proportional to the product of the densities, on a grid
    x = torch.linspace(-4, 4, 2001, dtype=torch.float64)
    dens = lambda m, v: torch.exp(-(x - m) ** 2 / (2 * v)) / torch.sqrt(2 * math.pi * v)  # noqa: E731
    product = dens(m1[0], v1[0]) * dens(m2[0], v2[0])
    product = product / torch.trapezoid(product, x)
    assert torch.allclose(product, dens(mean[0], variance[0]), atol=1e-8)


def test_kl_to_the_prior_equals_torch_distributions():
    mean = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    variance = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean, variance.sqrt()),
                                                 torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl_to_standard_normal(mean, variance), expected)


def test_full_factors_multiply_by_adding_precisions_and_reduce_to_the_diagonal_product():
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)                  # 2 tasks, 4 factors, 3-d
    var = torch.rand(2, 4, 3, generator=g, dtype=torch.float64) + 0.2
    u = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    mean, covariance = product_of_full_gaussians(mu, var, u)
    for t in range(2):   # by hand: Λ_n = diag(1/var_n) + u_n u_nᵀ, Σ = (Σ Λ_n)⁻¹, μ = Σ Σ Λ_n μ_n
        precisions = [torch.diag(1 / var[t, n]) + torch.outer(u[t, n], u[t, n]) for n in range(4)]
        expected_cov = torch.linalg.inv(sum(precisions))
        expected_mean = expected_cov @ sum(p @ mu[t, n] for n, p in enumerate(precisions))
        assert torch.allclose(covariance[t], expected_cov) and torch.allclose(mean[t], expected_mean)
        # the product's log-density differs from the sum of the factors' by a constant
        points = torch.randn(5, 3, generator=g, dtype=torch.float64)
        product = torch.distributions.MultivariateNormal(mean[t], covariance[t]).log_prob(points)
        factors = sum(torch.distributions.MultivariateNormal(mu[t, n], precision_matrix=p).log_prob(points)
                      for n, p in enumerate(precisions))
        assert torch.allclose(product - factors, (product - factors)[0].expand(5))
    again = product_of_full_gaussians(mu.flip(1), var.flip(1), u.flip(1))       # permutation-invariant
    assert torch.allclose(again[0], mean) and torch.allclose(again[1], covariance)
    diagonal = product_of_full_gaussians(mu, var, torch.zeros_like(u))           # no rank-one terms
    expected = product_of_gaussians(mu, var)
    assert torch.allclose(diagonal[0], expected[0])
    assert torch.allclose(diagonal[1], torch.diag_embed(expected[1]))


def test_full_covariance_kl_and_sampling_equal_torch_distributions():
    g = torch.Generator().manual_seed(4)
    mean = torch.randn(3, 4, generator=g, dtype=torch.float64)
    a = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    covariance = a @ a.transpose(-1, -2) + 0.1 * torch.eye(4, dtype=torch.float64)
    q = torch.distributions.MultivariateNormal(mean, covariance)
    prior = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64),
                                                   torch.eye(4, dtype=torch.float64))
    expected = torch.distributions.kl_divergence(q, prior)
    assert torch.allclose(kl_to_standard_normal(mean, covariance), expected)
    noise = torch.randn(3, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(sample_gaussian(mean, covariance, noise),
                          mean + (q.scale_tril @ noise[..., None])[..., 0])
    draws = sample_gaussian(mean[0].expand(200_000, 4), covariance[0].expand(200_000, 4, 4),
                            torch.randn(200_000, 4, generator=g, dtype=torch.float64))
    assert torch.allclose(torch.cov(draws.T), covariance[0], atol=0.05 * float(covariance[0].abs().max()))


def test_the_full_encoder_gives_a_full_covariance_posterior_and_trains():
    pearl = agent(encoder="full")
    net = pearl.networks
    g = torch.Generator().manual_seed(6)
    context = net.context(*pearl.split(torch.randn(2, 5, 8, generator=g, dtype=torch.float64)))
    mean, covariance = net.posterior(context)
    out = net.encoder(context)
    var = torch.nn.functional.softplus(out[..., 3:6])
    expected = product_of_full_gaussians(out[..., :3], var, out[..., 6:])
    assert covariance.shape == (2, 3, 3) and torch.allclose(covariance, expected[1])
    assert torch.allclose(mean, expected[0])
    off_diagonal = covariance.detach() * (1 - torch.eye(3, dtype=torch.float64))
    assert float(off_diagonal.abs().max()) > 0
    empty = net.posterior(context[:, :0])                                          # no context: the prior
    assert torch.equal(empty[1], torch.ones(2, 3))
    parts = pearl.losses(torch.randn(2, 6, 8, generator=g, dtype=torch.float64), context, g)
    assert torch.allclose(parts["kl_divergence"], kl_to_standard_normal(mean, covariance).sum())
    assert "full-covariance" in net.describe() and pearl.scratch(0).networks.encoder_kind == "full"


def test_tanh_gaussian_log_prob_is_the_change_of_variables():
    g = torch.Generator().manual_seed(2)
    mean, log_std = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g,
                                                                                     dtype=torch.float64)
    u = mean + log_std.exp() * torch.randn(6, 2, generator=g, dtype=torch.float64) * 3  # far into the tails
    by_hand = (torch.distributions.Normal(mean, log_std.exp()).log_prob(u)
               - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
    assert torch.allclose(tanh_gaussian_log_prob(u, mean, log_std), by_hand, rtol=1e-6)
    # and it is the density of a = tanh(u): integrates to one over (-1, 1) in one dimension
    a = torch.linspace(-0.999999, 0.999999, 200001, dtype=torch.float64)
    u1 = torch.atanh(a)
    density = tanh_gaussian_log_prob(u1[:, None], torch.tensor([[0.3]], dtype=torch.float64),
                                     torch.tensor([[-0.2]], dtype=torch.float64)).exp()
    assert float(torch.trapezoid(density, a)) == pytest.approx(1.0, abs=1e-3)


def test_sac_losses_equal_a_hand_computation():
    pearl = agent(reward_scale=5.0, gamma=0.9, kl_lambda=0.3)
    net = pearl.networks
    g = torch.Generator().manual_seed(3)
    rows = torch.randn(2, 7, 8, generator=g, dtype=torch.float64)        # (s 2, a 2, r 1, s' 2, r_c 1)
    context = net.context(*pearl.split(torch.randn(2, 5, 8, generator=g, dtype=torch.float64)))
    parts = pearl.losses(rows, context, torch.Generator().manual_seed(9))
    s, a, r, s2 = rows[..., :2], rows[..., 2:4], rows[..., 4], rows[..., 5:7]
    mean, variance = product_of_gaussians(*(lambda o: (o[..., :3], torch.nn.functional.softplus(o[..., 3:])))(
        net.encoder(context)))
    eps = torch.randn(2, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    z = (mean + variance.sqrt() * eps)[:, None, :].expand(2, 7, 3)
    target = 5.0 * r + 0.9 * net.target_vf(torch.cat([s2, z], -1))[..., 0]
    q1 = net.qf1(torch.cat([s, a, z], -1))[..., 0]
    q2 = net.qf2(torch.cat([s, a, z], -1))[..., 0]
    assert torch.allclose(parts["critic"], ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean())
    kl = 0.5 * (variance + mean ** 2 - 1 - variance.log()).sum()
    assert torch.allclose(parts["kl"], 0.3 * kl)
    actor = pearl.actor_losses(parts["obs"], parts["z"], torch.Generator().manual_seed(4))
    noise = torch.randn(2, 7, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    h = torch.relu(net.policy_body(torch.cat([s, z], -1)))
    mu, log_std = net.policy_mean(h), net.policy_log_std(h).clamp(-20, 2)
    u = mu + log_std.exp() * noise
    log_pi = (torch.distributions.Normal(mu, log_std.exp()).log_prob(u)
              - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
    x = torch.cat([s, torch.tanh(u), z], -1)
    min_q = torch.min(net.qf1(x)[..., 0], net.qf2(x)[..., 0])
    v = net.vf(torch.cat([s, z], -1))[..., 0]
    assert torch.allclose(actor["value"], ((v - (min_q - log_pi)) ** 2).mean())
    reg = 1e-3 * ((mu ** 2).mean() + (log_std ** 2).mean())
    assert torch.allclose(actor["policy"], (log_pi - min_q).mean() + reg)


@pytest.mark.parametrize("encoder", ["product", "full", "recurrent"])
def test_the_encoder_learns_from_the_critic_and_the_kl_not_from_the_actor(encoder):
    pearl = agent(encoder=encoder)
    net = pearl.networks
    g = torch.Generator().manual_seed(5)
    rows = torch.randn(3, 6, 8, generator=g, dtype=torch.float64)
    context = net.context(*pearl.split(torch.randn(3, 4, 8, generator=g, dtype=torch.float64)))
    parts = pearl.losses(rows, context, g)
    actor = pearl.actor_losses(parts["obs"], parts["z"], g)
    encoder = list(net.encoder.parameters())
    for loss in (actor["value"], actor["policy"]):
        grads = torch.autograd.grad(loss, encoder, retain_graph=True, allow_unused=True)
        assert all(gr is None for gr in grads)
    for loss in (parts["critic"], parts["kl"]):
        grads = torch.autograd.grad(loss, encoder, retain_graph=True)
        assert sum(float(gr.abs().sum()) for gr in grads) > 0
    # the policy does not move the value function either, and the value loss not the policy
    assert all(gr is None for gr in torch.autograd.grad(actor["policy"], list(net.vf.parameters()),
                                                         retain_graph=True, allow_unused=True))


def test_the_recurrent_encoder_reads_the_context_in_order_through_a_gru():
    net = agent(encoder="recurrent").networks
    g = torch.Generator().manual_seed(1)
    context = torch.randn(2, 5, net.context_size, generator=g, dtype=torch.float64)
    mean, variance = net.posterior(context)
    e = net.encoder
    cell = torch.nn.GRUCell(e.gru.input_size, e.gru.hidden_size).double()
    cell.load_state_dict({k[:-3]: v for k, v in e.gru.state_dict().items()})        # weight_ih_l0 → weight_ih
    h = torch.zeros(2, e.gru.hidden_size, dtype=torch.float64)
    for n in range(5):                                                  # by hand, one transition at a time
        h = cell(torch.relu(e.embed[0](context[:, n])), h)
    out = e.head(h)
    assert torch.allclose(mean, out[:, :3])
    assert torch.allclose(variance, torch.nn.functional.softplus(out[:, 3:]))
    assert not torch.allclose(net.posterior(context.flip(1))[0], mean)            # order matters
    empty = net.posterior(context[:, :0])
    assert torch.equal(empty[0], torch.zeros(2, 3)) and torch.equal(empty[1], torch.ones(2, 3))
    assert "recurrent" in net.describe()
    assert agent(encoder="recurrent").scratch(0).networks.encoder_kind == "recurrent"


def test_exploration_acts_with_the_prior_first_then_the_posterior_of_what_it_saw():
    pearl = agent(exploration_episodes=2)
    env = PointRobot(horizon=5, goals=torch.tensor([[0.5, 0.5], [-0.5, 0.2]], dtype=torch.float64))
    returns, trajs, beliefs = pearl.explore(env, 4, torch.Generator().manual_seed(0))
    assert returns.shape == (2, 4)
    for k in (0, 1):
        assert torch.equal(beliefs[k][0], torch.zeros(2, 3)) and torch.equal(beliefs[k][1], torch.ones(2, 3))
    for k in (2, 3):   # the posterior of the context of every earlier episode
        seen = torch.cat([pearl.context_of(pearl.transitions(t, env)) for t in trajs[:k]], 1)
        mean, variance = pearl.networks.posterior(seen)
        assert torch.allclose(beliefs[k][0], mean) and torch.allclose(beliefs[k][1], variance)
        assert seen.shape[1] == 5 * k
    assert torch.allclose(returns[:, 0], trajs[0].rewards.sum((1, 2, 3)))
    mean_action = pearl.explore(env, 1, torch.Generator().manual_seed(0))[1][0]
    sampling = agent(exploration_episodes=2, test_deterministic=False)
    sampled = sampling.explore(env, 1, torch.Generator().manual_seed(0))[1][0]
    assert torch.equal(mean_action.actions, trajs[0].actions)                 # the mean action by default
    assert not torch.allclose(sampled.actions, mean_action.actions)           # test_deterministic=false


@pytest.mark.parametrize("options, sampled", [({}, [False] * 4),
                                               ({"sample_exploration": True}, [True, True, False, False]),
                                               ({"sample_exploration": True, "test_deterministic": False},
                                                [True] * 4)])
def test_sample_exploration_samples_actions_in_the_prior_episodes_only(options, sampled, monkeypatch):
    pearl = agent(exploration_episodes=2, **options)
    env = PointRobot(horizon=5, goals=torch.tensor([[0.5, 0.5], [-0.5, 0.2]], dtype=torch.float64))
    seen, actor = [], pearl.actor
    record = lambda z, generator: seen.append(generator is not None) or actor(z, generator)  # noqa: E731
    monkeypatch.setattr(pearl, "actor", record)
    trajs = pearl.explore(env, 4, torch.Generator().manual_seed(0))[1]
    assert seen == sampled
    if options == {"sample_exploration": True}:   # the prior episodes' actions are draws, not the mean
        plain = agent(exploration_episodes=2).explore(env, 1, torch.Generator().manual_seed(0))[1][0]
        assert not torch.allclose(plain.actions, trajs[0].actions)


def test_a_sparse_context_reads_the_sparse_reward_while_sac_keeps_the_dense_one():
    pearl = agent(sparse_context=True)
    goals = torch.tensor([[1.0, 0.0], [0.0, 0.15]], dtype=torch.float64)
    env = PointRobot(horizon=6, goals=goals, random_start=False, sparse=False)     # dense: for SAC
    returns, trajs, _ = pearl.explore(env, 2, torch.Generator().manual_seed(0))
    rows = pearl.transitions(trajs[0], env)
    distance = (rows[..., 5:7] - goals[:, None, :]).norm(dim=-1)
    assert torch.allclose(rows[..., 4], -distance)                                   # r: dense
    assert torch.allclose(rows[..., -1], torch.where(distance <= 0.2, 1 - distance, 0 * distance))
    assert torch.allclose(returns[:, 0], rows[..., -1].sum(-1))                     # reported: sparse
    assert torch.equal(pearl.context_of(rows)[..., 4], rows[..., -1])


def test_task_replay_keeps_the_newest_rows_and_samples_only_those_it_holds():
    buffer = TaskReplay(3, 4, 1)
    tasks = torch.tensor([0, 2])
    buffer.add(tasks, torch.tensor([[[1.0], [2.0], [3.0]], [[7.0], [8.0], [9.0]]]))
    buffer.add(tasks, torch.tensor([[[4.0], [5.0]], [[10.0], [11.0]]]))
    assert buffer.size.tolist() == [4, 0, 4]
    assert sorted(buffer.data[0, :, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]      # 1 was overwritten
    drawn = buffer.sample(torch.tensor([0, 2, 0]), 500, torch.Generator().manual_seed(0))
    assert set(drawn[0, :, 0].tolist()) == {2.0, 3.0, 4.0, 5.0}
    assert set(drawn[1, :, 0].tolist()) == {8.0, 9.0, 10.0, 11.0}
    buffer.clear(torch.tensor([0]))
    buffer.add(torch.tensor([0]), torch.tensor([[[6.0]]]))
    again = buffer.sample(torch.tensor([0]), 50, torch.Generator().manual_seed(1))
    assert set(again[0, :, 0].tolist()) == {6.0}
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(torch.tensor([1]), 1, torch.Generator())


def test_task_replay_draws_whole_distinct_episodes_even_after_wrapping():
    buffer = TaskReplay(2, 6, 1)                       # 3 episodes of 2 steps per task
    episode = lambda k: [[10.0 * k], [10.0 * k + 1]]  # noqa: E731
    for k in range(4):                                  # task 0's episode 0 is overwritten by 3
        buffer.add(torch.tensor([0]), torch.tensor([episode(k)]))
    buffer.add(torch.tensor([1]), torch.tensor([episode(5)]))
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        rows = buffer.sample_episodes(torch.tensor([0]), 2, 2, g)[0, :, 0].tolist()
        pairs = [tuple(rows[:2]), tuple(rows[2:])]
        assert all(b == a + 1 and a % 10 == 0 for a, b in pairs) and pairs[0] != pairs[1]
        seen.update(a // 10 for a, _ in pairs)
    assert seen == {1, 2, 3}
    assert buffer.sample_episodes(torch.tensor([1]), 1, 2, g)[0, :, 0].tolist() == [50.0, 51.0]
    with pytest.raises(RuntimeError, match="fewer than 2 whole episodes"):
        buffer.sample_episodes(torch.tensor([1]), 2, 2, g)
    with pytest.raises(ValueError, match="whole episodes"):
        buffer.sample_episodes(torch.tensor([0]), 1, 4, g)


def test_context_of_whole_episodes_is_what_the_posterior_sees_at_test_time(tmp_path, capsys):
    from metadapt.training.pearl_step import PEARLStep

    config = config_from_file(RECIPE, [*TINY, "algorithm.context_episodes=2", "train.iterations=2"])
    train(config, tmp_path / "run", progress=False)
    run = load(tmp_path / "run")
    step = PEARLStep(run.algorithm, type("Ctx", (), {"world_size": 1})(), 4, torch.device("cpu"))
    step.tasks = run.family.sample(6, torch.Generator().manual_seed(0))
    rows = torch.arange(6 * 40.0).reshape(6, 40, 1).expand(6, 40, 8)      # row k holds k
    step.encoder.add(torch.arange(6), rows)
    g = torch.Generator().manual_seed(3)
    sizes = set()
    for _ in range(20):
        context = step.context_rows(torch.tensor([0, 5]), g)
        sizes.add(context.shape[1])
        starts = context[:, ::20, 0]                                    # each episode: 20 rows in order
        assert torch.equal(context[:, :, 0].reshape(2, -1, 20) - starts[..., None],
                           torch.arange(20.0).expand(2, starts.shape[1], 20))
    assert sizes == {20, 40}                                           # 1 or 2 episodes
    from metadapt.cli import main

    for bad, why in (("algorithm.buffer_capacity=210", "a multiple of the episode length 20"),
                     ("algorithm.context_episodes=3", "episodes of 20 steps in algorithm.initial_steps")):
        assert main(["train", str(RECIPE), *TINY, "algorithm.context_episodes=2", bad,
                     "--run-dir", str(tmp_path / "bad")]) == 2
        assert why in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_context_episodes_share_mixes_whole_episodes_with_drawn_transitions(tmp_path):
    from metadapt.training.pearl_step import PEARLStep

    config = config_from_file(RECIPE, [*TINY, "algorithm.context_episodes=2",
                                       "algorithm.context_episodes_share=0.5", "train.iterations=2"])
    train(config, tmp_path / "run", progress=False)
    run = load(tmp_path / "run")
    step = PEARLStep(run.algorithm, type("Ctx", (), {"world_size": 1})(), 4, torch.device("cpu"))
    step.tasks = run.family.sample(6, torch.Generator().manual_seed(0))
    step.encoder.add(torch.arange(6), torch.arange(6 * 40.0).reshape(6, 40, 1).expand(6, 40, 8))
    g = torch.Generator().manual_seed(3)
    sizes = [step.context_rows(torch.tensor([0, 5]), g).shape[1] for _ in range(400)]
    assert set(sizes) == {8, 20, 40}                    # context_size = 8 drawn rows, or 1 or 2 episodes
    drawn = sizes.count(8) / len(sizes)
    assert 0.42 < drawn < 0.58                          # half the steps, ±4 standard deviations


def test_pearl_trains_resumes_bit_for_bit_and_evaluates(tmp_path, capsys):
    from metadapt.cli import main

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(config_from_file(RECIPE, TINY), straight, progress=False)
    train(config_from_file(RECIPE, [*TINY[1:], "train.iterations=2"]), resumed, progress=False)
    train(config_from_file(RECIPE, TINY), resumed, resume=True, progress=False)
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (straight, resumed))
    assert int(a["step"]) == int(b["step"]) == 4
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert torch.equal(a["pearl"]["rl"]["data"], b["pearl"]["rl"]["data"])       # the buffers too
    assert a["pearl"]["env_steps"] == 6 * 40 + 4 * 2 * 80
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]
    assert main(["eval", str(straight), "--no-progress"]) == 0
    results = json.loads((straight / "eval" / "results.json").read_text())
    assert len(results["methods"]["pearl"]["curve"]) == 3                    # episodes 1, 2, 3 of a trial
    assert "oracle" in results and results["unit"] == "episodes"
    run = load(straight)
    scratch = run.algorithm.scratch(0)            # fresh networks, on the run's device and in its dtype
    assert all(p.device == q.device and p.dtype == q.dtype
               for p, q in zip(scratch.parameters(), run.algorithm.parameters()))
    assert not torch.equal(next(scratch.parameters()), next(run.algorithm.parameters()))


def test_environment_steps_of_the_learning_curve_come_from_the_log():
    from metadapt.evaluation.rl import env_steps_at

    logged_totals = [{"step": 1, "split": "train", "env_steps": 50, "env_steps_total": 250},
                     {"step": 2, "split": "val", "return": -3.0},
                     {"step": 2, "split": "train", "env_steps": 40, "env_steps_total": 290}]
    assert env_steps_at(logged_totals) == {1: 250.0, 2: 290.0}
    every_tenth = [{"step": 10, "split": "train", "env_steps": 7},
                   {"step": 20, "split": "train", "env_steps": 9}]
    assert env_steps_at(every_tenth) == {10: 70.0, 20: 160.0}


def test_success_is_coming_within_the_goal_radius_at_any_step_and_the_report_counts_it():
    from metadapt.evaluation.rl import rl_table

    env = PointRobot(horizon=3, goals=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), random_start=False,
                     sparse=True, reports_success=True)
    paths = torch.tensor([[[0.5, 0.0], [0.81, 0.0], [0.5, 0.0]],        # within 0.2 at its second step
                          [[0.0, 0.5], [0.0, 0.79], [0.0, 0.7]]])       # never closer than 0.21
    assert env.reached(paths).tolist() == [True, False]
    assert env.reached(paths[:, None]).shape == (2, 1)
    results = {"steps": 1, "unit": "episodes", "methods": {
        "pearl": {"curve": [0.1, 0.5], "curve_ci95": [0.0, 0.1], "success": [0.25, 0.875]}}}
    assert "| pearl: reached the goal | 25.0% | 87.5% |" in rl_table(results)


def test_a_covariance_that_is_not_positive_definite_gives_nan_not_an_exception():
    mean = torch.zeros(2, 2, dtype=torch.float64)
    covariance = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]], dtype=torch.float64)
    kl = kl_to_standard_normal(mean, covariance)
    assert torch.isfinite(kl[0]) and torch.isnan(kl[1])                 # the trainer's on_nonfinite decides
    z = sample_gaussian(mean, covariance, torch.ones(2, 2, dtype=torch.float64))
    assert torch.equal(z[0], torch.ones(2, dtype=torch.float64)) and torch.isnan(z[1]).all()
