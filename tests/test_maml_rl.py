"""MAML for RL: the meta-gradient estimator against the exact gradient of a problem small enough to
enumerate, TRPO's step against a hand computation, the Gaussian policy against torch.distributions,
the batched inner step against a loop over tasks, and training, resume and evaluation end to end."""
import itertools
import json

import pytest
import torch

from metadapt.algorithms.rl.maml_rl import VALIDATION_SEED, MAMLRL, reinforce_objective, sampling_term
from metadapt.experience import discounted_returns
from metadapt.config import build_config
from metadapt.envs import NavigationFamily
from metadapt.envs.navigation import Navigation, NavigationOptions
from metadapt.experience import Trajectories
from metadapt.models import GaussianPolicy
from metadapt.training import load, train
from metadapt.training.trpo import conjugate_gradient, trpo_update

REWARDS = torch.tensor([0.2, 0.9], dtype=torch.float64)   # a two-armed bandit with known payoffs
ALPHA, PULLS = 0.8, 3


def exact_return(theta):
    return (torch.softmax(theta, -1) * REWARDS).sum()


def adapted(theta, actions, create_graph=True):
    """θ' = θ + α ∇ (mean over pulls of log π(a) · r(a)), through the library's inner objective."""
    if not theta.requires_grad:
        theta = theta.clone().requires_grad_()
    log_p = torch.log_softmax(theta, -1)[actions][None]
    objective = reinforce_objective(log_p, REWARDS[actions][None], torch.ones(1, len(actions)))
    return theta + ALPHA * torch.autograd.grad(objective.sum(), theta, create_graph=create_graph)[0]


def meta_objective(theta):
    """E_{τ ~ π_θ}[J(θ'(θ, τ))], enumerating every sequence of PULLS pulls."""
    total = torch.zeros((), dtype=torch.float64)
    for actions in itertools.product([0, 1], repeat=PULLS):
        actions = torch.tensor(actions)
        prob = torch.softmax(theta, -1)[actions].prod()
        total = total + prob * exact_return(adapted(theta, actions, create_graph=False))
    return total


def expected_estimate(theta, with_sampling_term):
    """The estimator's expectation: each sequence's estimate weighted by its probability."""
    total = torch.zeros(2, dtype=torch.float64)
    for actions in itertools.product([0, 1], repeat=PULLS):
        actions = torch.tensor(actions)
        theta_ = theta.clone().requires_grad_()
        value = exact_return(adapted(theta_, actions))
        objective = value
        if with_sampling_term:
            log_p = torch.log_softmax(theta_, -1)[actions].sum()[None]
            objective = objective + sampling_term(log_p, value[None]).sum()
        grad = torch.autograd.grad(objective, theta_)[0]
        total += torch.softmax(theta, -1)[actions].prod().detach() * grad
    return total


def test_dice_meta_gradient_is_unbiased_and_the_papers_is_not():
    theta = torch.tensor([0.3, -0.4], dtype=torch.float64)
    eps = 1e-6
    exact = torch.stack([(meta_objective(theta + eps * e) - meta_objective(theta - eps * e)) / (2 * eps)
                         for e in torch.eye(2, dtype=torch.float64)])
    dice = expected_estimate(theta, with_sampling_term=True)
    maml = expected_estimate(theta, with_sampling_term=False)
    assert torch.allclose(dice, exact, atol=1e-7)
    assert (maml - exact).abs().max() > 1e-2    # dropping the sampling term biases the gradient


def test_conjugate_gradient_and_the_trpo_step_by_hand():
    a = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.5]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.allclose(conjugate_gradient(lambda v: a @ v, b, 3), torch.linalg.solve(a, b), atol=1e-10)
    # maximise gᵀθ subject to ½ θᵀAθ ≤ δ from θ = 0: the step is sqrt(2δ / gᵀA⁻¹g) A⁻¹g, on the boundary
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    stats = trpo_update([theta], lambda: b @ theta, lambda: 0.5 * theta @ a @ theta, max_kl=0.01, damping=0.0,
                        cg_iterations=3)
    direction = torch.linalg.solve(a, b)
    expected = torch.sqrt(2 * 0.01 / (b @ direction)) * direction
    assert stats["accepted"] == 1.0 and stats["backtracks"] == 0.0
    assert torch.allclose(theta.detach(), expected, atol=1e-8)
    assert stats["kl"] == pytest.approx(0.01, rel=1e-6)


def test_gaussian_policy_matches_torch_distributions_for_shared_and_per_task_parameters():
    torch.manual_seed(0)
    policy = GaussianPolicy(2, 2, [8, 8], init_std=0.5)
    params = dict(policy.named_parameters())
    obs, actions = torch.randn(3, 4, 5, 2), torch.randn(3, 4, 5, 2)
    mu = policy.mean(params, obs, False)
    reference = torch.distributions.Normal(mu, params["log_std"].exp()).log_prob(actions).sum(-1)
    assert torch.allclose(policy.log_prob(params, obs, actions, False), reference, atol=1e-5)
    per_task = {k: torch.stack([v + 0.1 * i for i in range(3)]) for k, v in params.items()}
    batched = policy.log_prob(per_task, obs, actions, True)
    for i in range(3):
        one = {k: v[i] for k, v in per_task.items()}
        assert torch.allclose(batched[i], policy.log_prob(one, obs[i], actions[i], False), atol=1e-5)
        new = {k: v + 0.05 for k, v in one.items()}
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(policy.mean(one, obs[i], False), one["log_std"].exp()),
            torch.distributions.Normal(policy.mean(new, obs[i], False), new["log_std"].exp())).sum(-1)
        assert torch.allclose(policy.kl(one, new, obs[i], False), kl, atol=1e-6)


def test_batched_inner_step_equals_a_loop_over_tasks():
    torch.manual_seed(0)
    agent = MAMLRL(GaussianPolicy(2, 2, [16, 16]), trajectories=4)
    env = NavigationFamily(NavigationOptions(horizon=12)).sample(3, torch.Generator().manual_seed(0))
    traj = agent.sample(env, agent.params(), False, torch.Generator().manual_seed(1))
    adv = agent.advantages(traj)
    fast = agent.inner_step(agent.params(), False, traj, adv, create_graph=False)
    for i in range(3):
        params = {k: v.detach().clone().requires_grad_() for k, v in agent.params().items()}
        obs, act, mask = traj.observations[i, :, 0], traj.actions[i, :, 0], traj.mask[i, :, 0]
        objective = (agent.policy.log_prob(params, obs, act, False) * adv[i] * mask).sum() / mask.sum()
        grads = torch.autograd.grad(objective, list(params.values()))
        for (name, p), g in zip(params.items(), grads):
            assert torch.allclose(fast[name][i], p + 0.1 * g, atol=1e-6)


SMALL = ["task.family=navigation-2d", "task.horizon=15", "model.name=gaussian-policy",
         "model.hidden=[16, 16]", "algorithm.name=maml-rl", "algorithm.trajectories=4",
         "train.meta_batch_size=4", "train.val_tasks=4",
         "train.val_every=2", "train.checkpoint_every=2", "train.log_every=1", "eval.tasks=6"]


def test_maml_rl_trains_resumes_bit_for_bit_and_evaluates(tmp_path, capsys):
    from metadapt.cli import main

    train(build_config(None, SMALL + ["train.iterations=4"]), tmp_path / "straight", progress=False)
    train(build_config(None, SMALL + ["train.iterations=2"]), tmp_path / "resumed", progress=False)
    train(build_config(None, SMALL + ["train.iterations=4"]), tmp_path / "resumed", resume=True,
          progress=False)
    a = load(tmp_path / "straight", "last").algorithm.state_dict()
    b = load(tmp_path / "resumed", "last").algorithm.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["accepted"] in (0.0, 1.0) for r in rows if r["split"] == "train")
    assert main(["eval", str(tmp_path / "straight"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "maml-rl" in out and "scratch" in out
    results = json.loads((tmp_path / "straight" / "eval" / "results.json").read_text())
    assert len(results["methods"]["maml-rl"]["curve"]) == 4     # after 0, 1, 2, 3 steps
    assert (tmp_path / "straight" / "plots" / "paths.png").is_file()
    assert main(["eval", str(tmp_path / "straight"), "--no-progress", "--no-scratch"]) == 0
    results = json.loads((tmp_path / "straight" / "eval" / "results.json").read_text())
    assert "scratch" not in results["methods"] and "maml-rl" in results["methods"]


@pytest.mark.parametrize("variant", [["algorithm.outer=ppo"], ["algorithm.first_order=true"],
                                     ["algorithm.inner_steps=0"], ["algorithm.estimator=maml"],
                                     ["algorithm.outer_average=step"],
                                     ["algorithm.sampling=steps", "algorithm.eval_sampling=steps"]])
def test_outer_variants_train_and_resume(tmp_path, variant):
    cfg = SMALL + variant
    train(build_config(None, cfg + ["train.iterations=4"]), tmp_path / "straight", progress=False)
    train(build_config(None, cfg + ["train.iterations=2"]), tmp_path / "resumed", progress=False)
    train(build_config(None, cfg + ["train.iterations=4"]), tmp_path / "resumed", resume=True, progress=False)
    straight = load(tmp_path / "straight", "last")
    a, b = straight.algorithm.state_dict(), load(tmp_path / "resumed", "last").algorithm.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = build_config(None, cfg + ["train.iterations=4"])
    from metadapt.build import build_algorithm
    untrained = build_algorithm(fresh).state_dict()
    assert any(not torch.equal(a[k], untrained[k]) for k in a)     # training moved the policy


def test_xavier_initialization_as_rllab_and_kept_by_reset():
    torch.manual_seed(0)
    policy = GaussianPolicy(2, 2, [100, 100], init_std=1.0, init="xavier")
    for layer in policy.layers:
        bound = (6 / (layer.in_features + layer.out_features)) ** 0.5
        assert torch.all(layer.bias == 0) and layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # the whole Xavier range
    before = policy.layers[0].weight.clone()
    policy.reset_parameters()
    assert not torch.equal(before, policy.layers[0].weight) and torch.all(policy.layers[1].bias == 0)


def test_outer_average_per_step_is_the_trajectory_average_over_the_horizon_for_full_episodes():
    torch.manual_seed(0)
    env = NavigationFamily(NavigationOptions(horizon=12)).sample(3, torch.Generator().manual_seed(0))
    agents = {a: MAMLRL(GaussianPolicy(2, 2, [16, 16]), trajectories=4, outer_average=a)
              for a in ("trajectory", "step")}
    agents["step"].load_state_dict(agents["trajectory"].state_dict())
    batch = agents["trajectory"].experience(env, torch.Generator().manual_seed(1))
    assert batch["post"].mask.sum() == 3 * 4 * 12                      # no goal reached: full episodes
    with torch.no_grad():                                              # move θ so that ρ ≠ 1
        for agent in agents.values():
            for p in agent.parameters():
                p.add_(0.05 * torch.sin(torch.arange(p.numel(), dtype=p.dtype)).reshape(p.shape))
    per_traj, per_step = (agents[a].surrogate(batch, graph=False) for a in ("trajectory", "step"))
    assert per_traj.abs() > 0.01 and torch.allclose(per_step * 12, per_traj, atol=1e-6)


def _one_episode_per_row(packed: Trajectories) -> Trajectories:
    """The episodes of packed trajectories, one per row ``[T, C, 1, H]`` (rows past a task's episodes
    masked), as :func:`metadapt.experience.rollout` lays them out."""
    horizon = int(packed.time.max()) + 1
    rows = int(packed.episode_counts().max())
    out = {k: torch.zeros(packed.mask.shape[0], rows, 1, horizon, *getattr(packed, k).shape[4:])
           for k in ("observations", "actions", "rewards", "mask", "dones")}
    for i in range(packed.mask.shape[0]):
        kept = packed.mask[i, 0, 0] > 0
        episode, time = packed.episode_index()[i, 0, 0][kept], packed.time[i, 0, 0][kept]
        for k in out:
            out[k][i, episode, 0, time] = getattr(packed, k)[i, 0, 0][kept]
    return Trajectories(**out)


def test_step_budget_sampling_computes_what_one_episode_per_row_does():
    torch.manual_seed(0)
    goals = torch.tensor([[0.05, 0.0], [0.0, -0.1], [0.3, 0.3]])
    env = Navigation(horizon=10, goals=goals, tolerance=0.1)
    agent = MAMLRL(GaussianPolicy(2, 2, [16, 16]), trajectories=3, sampling="steps", eval_sampling="steps",
                   outer_advantages="returns")
    batch = agent.experience(env, torch.Generator().manual_seed(1))
    post = batch["post"]
    assert post.packed and len(set(post.episode_counts().tolist())) > 1    # early ends: more episodes
    assert post.steps() == post.taken >= int(post.mask.sum()) >= 3 * 3 * 10 - 3 * 10
    rows = _one_episode_per_row(post)
    kept = post.mask[:, 0, 0] > 0
    padded_adv = agent.advantages(rows, normalized=False)
    for i in range(3):
        mine = rows.mask[i, :, 0] > 0
        assert torch.allclose(batch["post_advantages"][i, 0][kept[i]], padded_adv[i][mine], atol=1e-5)
    counts = post.episode_counts()
    first_returns = torch.stack([
        (discounted_returns(rows.rewards[i, :, 0], agent.gamma, rows.mask[i, :, 0])[:, 0]).sum() / counts[i]
        for i in range(3)])
    assert torch.allclose(batch["value"], first_returns, atol=1e-6)
    # the meta-objective: per task the mean over its episodes of Σ_t ρ Â, whatever the episodes' count
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.05 * torch.sin(torch.arange(p.numel(), dtype=p.dtype)).reshape(p.shape))
    params, per_task = agent.adapted(batch, graph=False)[-1]
    ratio = torch.exp(agent.log_probs(params, post, per_task) - batch["old_log_probs"])
    by_hand = ((ratio * batch["post_advantages"] * post.mask[:, :, 0]).sum((1, 2)) / counts).mean()
    assert torch.allclose(agent.surrogate(batch, graph=False), by_hand, atol=1e-6)
    half = agent.kl(batch, graph=False, fraction=0.5)
    assert torch.isfinite(half) and half > 0
    returns, trajs = agent.adaptation_returns(env, 2, torch.Generator().manual_seed(2))
    assert returns.shape == (3, 3) and all(t.packed for t in trajs)
    assert all(int(t.mask[i].sum()) >= 3 * 10 for t in trajs for i in range(3))   # each task's own budget


def test_validation_scores_the_return_after_val_steps_steps():
    goals = torch.tensor([[0.2, 0.1], [-0.3, 0.0]])
    env = Navigation(horizon=8, goals=goals)
    for val_steps, scored in [(0, 1), (3, 3)]:
        torch.manual_seed(0)
        agent = MAMLRL(GaussianPolicy(2, 2, [8]), trajectories=2, inner_lr=0.5, val_steps=val_steps)
        metrics = agent.validation_metrics(env)
        returns, _ = agent.adaptation_returns(env, scored, torch.Generator().manual_seed(VALIDATION_SEED))
        assert metrics["return"] == pytest.approx(float(returns[:, -1].mean()))
        assert metrics["return_before"] == pytest.approx(float(returns[:, 0].mean()))
    config = build_config(None, ["task.family=navigation-2d", "model.name=gaussian-policy",
                                 "algorithm.name=maml-rl", "algorithm.val_steps=2"])
    assert config.algorithm.val_steps == 2
