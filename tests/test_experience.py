"""Returns, GAE, the linear feature baseline and rollouts, against hand computations."""
import numpy as np
import pytest
import torch

from metadapt.envs import BanditFamily, Navigation
from metadapt.envs.bandits import BanditOptions
from metadapt.experience import discounted_returns, fit_linear_baseline, gae, linear_baseline, rollout
from metadapt.experience.baseline import features


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    g = discounted_returns(rewards, 0.5, mask)
    assert g[0].tolist() == pytest.approx([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])
    assert g[1].tolist() == pytest.approx([1.5, 1.0, 0.0])  # the masked step's reward never counts


def test_gae_by_hand():
    r = torch.tensor([1.0, 0.0, 2.0])
    v = torch.tensor([0.5, 1.0, 1.5])
    gamma, lam = 0.9, 0.8
    d = [1 + gamma * 1.0 - 0.5, 0 + gamma * 1.5 - 1.0, 2 - 1.5]   # the last step ends the sequence
    expected = [d[0] + gamma * lam * (d[1] + gamma * lam * d[2]), d[1] + gamma * lam * d[2], d[2]]
    assert gae(r, v, gamma, lam).tolist() == pytest.approx(expected)
    # a sequence cut off rather than ended bootstraps from last_value
    cut = gae(r, v, gamma, lam, last_value=torch.tensor(2.0))
    assert cut[2].item() == pytest.approx(2 + gamma * 2.0 - 1.5)
    # a terminated sequence: nothing after the last step that happened
    mask = torch.tensor([1.0, 1.0, 0.0])
    m = gae(r, v, gamma, lam, mask)
    assert m.tolist() == pytest.approx([(1 + gamma - 0.5) + gamma * lam * (0 - 1.0), 0 - 1.0, 0.0])
    # λ = 1 and zero values: the discounted returns
    assert torch.allclose(gae(r, torch.zeros(3), gamma, 1.0), discounted_returns(r, gamma))


def test_linear_baseline_matches_a_least_squares_fit_per_task():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(3, 4, 7, 2, generator=g, dtype=torch.float64)
    returns = torch.randn(3, 4, 7, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 4, 7, dtype=torch.float64)
    mask[1, 2, 4:] = 0
    weights = fit_linear_baseline(obs, returns, mask, reg=0.0)
    for t in range(3):
        keep = mask[t].flatten().bool().numpy()
        phi = features(obs[t], mask[t]).reshape(-1, 8).numpy()[keep]
        w, *_ = np.linalg.lstsq(phi, returns[t].flatten().numpy()[keep], rcond=None)
        assert weights[t].numpy() == pytest.approx(w, rel=1e-6, abs=1e-8)
    values = linear_baseline(obs, returns, mask)
    assert values.shape == (3, 4, 7) and float(values[1, 2, 4:].abs().max()) == 0.0
    # features: [s, s², τ, τ², τ³, 1] with τ = t / 100
    phi = features(torch.tensor([[[20.0], [-0.5]]]), torch.ones(1, 2))
    assert phi[0, 1].tolist() == pytest.approx([-0.5, 0.25, 0.01, 1e-4, 1e-6, 1.0])
    assert phi[0, 0, :2].tolist() == [10.0, 100.0]  # observations clipped to [-10, 10]


def test_a_singular_baseline_system_is_retried_with_a_larger_ridge_task_by_task():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 4, 7, 2, generator=g)
    returns = torch.randn(2, 4, 7, generator=g)
    mask = torch.ones(2, 4, 7)
    mask[1, :, 1:] = 0  # task 1: every trajectory ended at its first step, at the same point
    obs[1, :, 0] = 0.0
    weights = fit_linear_baseline(obs, returns, mask, reg=0.0)  # a plain solve raised here
    assert torch.isfinite(weights).all()
    alone = fit_linear_baseline(obs[:1], returns[:1], mask[:1], reg=0.0)
    assert torch.equal(weights[0], alone[0])  # the task that solved keeps its first solution
    fitted = linear_baseline(obs, returns, mask)
    assert torch.isfinite(fitted).all()


def test_rollout_carries_the_policy_state_across_episodes_and_masks_after_termination():
    g = torch.Generator().manual_seed(0)
    env = Navigation(horizon=5, goals=torch.tensor([[0.15, 0.0], [0.5, 0.5]]))
    seen = []

    def act(obs, last, carry):
        seen.append(None if last is None else last.done.clone())
        carry = (carry or 0) + 1
        return torch.full(obs.shape, 1.0), {"count": torch.full(obs.shape[:2], float(carry))}, carry

    traj, carry = rollout(env, act, copies=3, episodes=2, generator=g)
    assert carry == 10                                          # never reset between the two episodes
    assert traj.observations.shape == (2, 3, 2, 5, 2) and traj.rewards.shape == (2, 3, 2, 5)
    assert traj.extras["count"][0, 0].flatten().tolist() == [float(i) for i in range(1, 11)]
    # moving diagonally, task 1 reaches its goal (0.5, 0.5) on the last step: every step happened
    assert traj.mask.all() and traj.rewards[1, :, :, -1].abs().max() < 1e-6
    assert traj.dones[..., -1].all() and not traj.dones[1, :, :, :-1].any()
    assert seen[5] is not None and bool(seen[5].all())       # the first step of episode 2 sees done=1


def test_rollout_masks_the_steps_after_the_goal():
    env = Navigation(horizon=6, goals=torch.tensor([[0.2, 0.0]]))
    act = lambda obs, last, carry: (torch.tensor([[[1.0, 0.0]]]), {}, carry)  # noqa: E731
    traj, _ = rollout(env, act, 1, 1, torch.Generator())
    assert traj.mask[0, 0, 0].tolist() == [1, 1, 0, 0, 0, 0]
    assert traj.rewards[0, 0, 0].tolist() == pytest.approx([-0.1, 0, 0, 0, 0, 0])
    assert traj.dones[0, 0, 0, 1].item() == 1.0
    assert traj.steps() == 2


def test_rollout_is_reproducible_from_the_generator():
    env = BanditFamily(BanditOptions(arms=5, pulls=10)).sample(4, torch.Generator().manual_seed(0))

    def act(obs, last, carry):
        return torch.randint(5, obs.shape[:2], generator=gen), {}, carry

    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(11)
        runs.append(rollout(env, act, 2, 1, gen)[0])
    assert torch.equal(runs[0].rewards, runs[1].rewards) and torch.equal(runs[0].actions, runs[1].actions)
    assert runs[0].trials().rewards.shape == (4, 2, 10)
