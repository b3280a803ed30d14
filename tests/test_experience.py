"""Returns, GAE, the linear feature baseline and rollouts, against hand computations."""
import numpy as np
import pytest
import torch

from metadapt.envs import BanditFamily, Navigation
from metadapt.envs.bandits import BanditOptions
from metadapt.experience import discounted_returns, fit_linear_baseline, gae, linear_baseline, rollout
from metadapt.experience.baseline import features
from metadapt.experience.rollout import stream


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


def _noisy_homing(goals: torch.Tensor, noise: torch.Tensor):
    """A policy heading for the goal, knocked off course by a fixed table of pushes indexed by the step
    of its environment (``noise [T, L, 2]``), so that episodes end at different steps."""
    def act(obs, last, carry):
        step = carry or 0
        toward = ((goals[:, None] - obs) / 0.1).clamp(-1, 1)
        return toward + noise[:, step][:, None], {"step": torch.full(obs.shape[:2], float(step))}, step + 1
    return act


def _sequential(env, act_one, steps):
    """One task's environment run alone for ``steps`` steps, reset after every episode: the episodes
    finished, each with its observations, actions, rewards and the step it finished on."""
    state, obs = env.reset(1, torch.Generator())
    episodes, current, t, carry = [], [], 0, None
    for step in range(steps):
        action, _, carry = act_one(obs, None, carry)
        state, next_obs, reward, terminated = env.step(state, action, env.noise(1, torch.Generator()))
        current.append((obs[0, 0], action[0, 0], reward[0, 0], t))
        if bool(terminated[0, 0]) or t == env.horizon - 1:
            episodes.append((step, current))
            current, t = [], 0
            state, obs = env.reset(1, torch.Generator())
        else:
            t, obs = t + 1, next_obs
    return episodes


@pytest.mark.parametrize("shared", [False, True])
def test_stream_equals_each_task_run_alone_until_the_step_budget(shared):
    g = torch.Generator().manual_seed(3)
    goals = 0.6 * torch.rand(5, 2, generator=g) - 0.3
    env = Navigation(horizon=8, goals=goals, tolerance=0.05)
    pushes = 1.6 * torch.rand(5, 400, 2, generator=g) - 0.8
    noise = torch.where(torch.rand(5, 400, 1, generator=g) < 0.7, 0.0, pushes)
    budget = 40 * (5 if shared else 1)
    homing = _noisy_homing(goals, noise)
    seen_grad = []

    def act(obs, last, carry):  # sampling records no autograd graph
        seen_grad.append(torch.is_grad_enabled())
        return homing(obs, last, carry)

    traj = stream(env, act, budget, torch.Generator(), shared=shared)
    assert seen_grad and not any(seen_grad)
    alone = [_sequential(env[i], _noisy_homing(goals[i:i + 1], noise[i:i + 1]), 200) for i in range(5)]
    lengths = {len(steps) for task in alone for _, steps in task}
    assert len(lengths) > 3                                           # episodes end at many different steps
    if shared:   # all stop at the first step where the finished episodes' steps reach the budget
        finished = lambda step: sum(len(s) for task in alone for end, s in task if end <= step)  # noqa: E731
        stop = next(step for step in range(200) if finished(step) >= budget)
        kept = [[s for end, s in task if end <= stop] for task in alone]
        assert traj.taken == 5 * (stop + 1)
    else:        # each task until its own finished episodes reach the budget, the last one whole
        kept = []
        for task in alone:
            total, mine = 0, []
            for _, s in task:
                if total >= budget:
                    break
                mine.append(s)
                total += len(s)
            kept.append(mine)
    assert traj.observations.shape[:3] == (5, 1, 1)
    for i, episodes in enumerate(kept):
        rows = traj.mask[i, 0, 0] > 0
        assert int(traj.episode_counts()[i]) == len(episodes)
        steps = [x for episode in episodes for x in episode]
        assert int(rows.sum()) == len(steps)
        assert torch.equal(traj.observations[i, 0, 0][rows], torch.stack([x[0] for x in steps]))
        assert torch.equal(traj.actions[i, 0, 0][rows], torch.stack([x[1] for x in steps]))
        assert torch.equal(traj.rewards[i, 0, 0][rows], torch.stack([x[2] for x in steps]))
        assert traj.time[i, 0, 0][rows].tolist() == [x[3] for x in steps]
        assert traj.episode_index()[i, 0, 0][rows].tolist() == [k for k, e in enumerate(episodes) for _ in e]
        assert float(traj.mean_episode_return()[i]) == pytest.approx(
            float(sum(x[2] for x in steps)) / len(episodes), abs=1e-6)
    first = traj.first_episode_observations()
    assert torch.equal(first[0, :len(kept[0][0])], torch.stack([x[0] for x in kept[0][0]]))


def test_discounted_returns_stop_at_each_packed_episodes_end():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    dones = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])
    by_hand = [1 + 0.5 * 2, 2.0, 3 + 0.5 * (4 + 0.5 * 5), 4 + 0.5 * 5, 5.0]
    assert discounted_returns(rewards, 0.5, dones=dones).tolist() == by_hand


def test_packed_baseline_features_count_time_within_each_episode():
    obs = torch.zeros(1, 1, 5, 2)
    time = torch.tensor([[[0, 1, 0, 1, 2]]])
    phi = features(obs, torch.ones(1, 1, 5), time)
    assert phi[0, 0, :, 4].tolist() == pytest.approx([0.0, 0.01, 0.0, 0.01, 0.02])
