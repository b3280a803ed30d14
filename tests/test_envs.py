"""Batched environments: each family's dynamics, its oracle, and agreement with the single-task
gymnasium environment step for step."""
import math

import pytest
from conftest import MUJOCO
import torch

from metadapt.envs import BanditFamily, NavigationFamily, TabularMDPFamily
from metadapt.envs.bandits import BanditOptions
from metadapt.envs.navigation import Navigation, NavigationOptions
from metadapt.envs.point_robot import (PointRobot, PointRobotFamily, PointRobotOptions,
                                       SparsePointRobotFamily, SparsePointRobotOptions)
from metadapt.envs.tabular import TabularOptions

gymnasium = pytest.importorskip("gymnasium")
from metadapt.envs import gym as metagym  # noqa: E402

FAMILIES = [(BanditFamily, BanditOptions(arms=5, pulls=10), metagym.BanditEnv),
            (TabularMDPFamily, TabularOptions(), metagym.TabularMDPEnv),
            (NavigationFamily, NavigationOptions(horizon=30), metagym.Navigation2DEnv),
            (PointRobotFamily, PointRobotOptions(), metagym.PointRobotEnv),
            (SparsePointRobotFamily, SparsePointRobotOptions(), metagym.SparsePointRobotEnv)]


def random_actions(env, copies, generator):
    if env.discrete:
        return torch.randint(env.actions, (env.num_tasks, copies), generator=generator)
    return 3 * torch.rand(env.num_tasks, copies, env.action_dim, generator=generator) - 1.5


@pytest.mark.parametrize("family_cls,options,single_cls", FAMILIES)
def test_batched_step_equals_single_task_gymnasium_env(family_cls, options, single_cls):
    g = torch.Generator().manual_seed(3)
    batch = family_cls(options).sample(4, g)
    starts = batch.reset_noise(2, g) if hasattr(batch, "start") else None  # random starts: given draws
    state, obs = batch.start(starts) if starts is not None else batch.reset(2, g)
    singles = []
    for i in range(4):
        env = single_cls(**vars(options))
        given = {"reset_noise": starts[i, 0]} if starts is not None else {}
        first, _ = env.reset(seed=0, options={"task": batch[i], **given})
        assert torch.equal(torch.as_tensor(first), obs[i, 0])
        singles.append(env)
    for _ in range(batch.horizon):
        action, noise = random_actions(batch, 2, g), batch.noise(2, g)
        state, obs, reward, done = batch.step(state, action, noise)
        for i, env in enumerate(singles):
            o, r, terminated, truncated, _ = env.step_with_noise(action[i, 0].numpy(), noise[i, 0])
            assert torch.equal(torch.as_tensor(o), obs[i, 0])
            assert r == pytest.approx(float(reward[i, 0]), abs=0)
            assert terminated == bool(done[i, 0])


@pytest.mark.parametrize("env_id", [
    pytest.param(i, marks=pytest.mark.skipif(not MUJOCO, reason="needs pip install 'metadapt[mujoco]'"))
    if "Cheetah" in i else i for i in metagym.IDS])
def test_gymnasium_env_passes_the_checker_and_keeps_its_task_across_resets(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(env_id).unwrapped
    check_env(env, skip_render_check=True)
    _, info = env.reset(seed=5)
    task = info["task"]
    _, again = env.reset()
    assert again["task"] is task                                   # a new episode of the same task
    _, other = env.reset(options={"new_task": True})
    assert other["task"] is not task
    _, same_seed = gymnasium.make(env_id).unwrapped.reset(seed=5)
    for a, b in zip(same_seed["task"]._tensors().values(), task._tensors().values()):
        assert torch.equal(a, b)                                   # the seed decides the task


def test_bandit_pays_one_exactly_when_the_draw_is_below_the_arm_probability():
    g = torch.Generator().manual_seed(0)
    batch = BanditFamily(BanditOptions(arms=3)).sample(500, g)
    state, _ = batch.reset(4, g)
    action = torch.randint(3, (500, 4), generator=g)
    noise = batch.noise(4, g)
    _, _, reward, _ = batch.step(state, action, noise)
    p = batch.probs.gather(1, action)
    assert torch.equal(reward, (noise[..., 0] < p).float())
    assert torch.allclose(batch.oracle_return(), 10 * batch.probs.max(-1).values)
    assert float(batch.probs.min()) >= 0 and float(batch.probs.max()) <= 1


def brute_force_values(means, transitions, horizon):
    """Finite-horizon optimal values of one MDP by nested Python loops."""
    s_count, a_count = means.shape
    v = [0.0] * s_count
    for _ in range(horizon):
        v = [max(float(means[s, a]) + sum(float(transitions[s, a, n]) * v[n] for n in range(s_count))
                 for a in range(a_count)) for s in range(s_count)]
    return v


def test_tabular_mdp_draws_its_parameters_and_steps_by_inverse_cdf():
    g = torch.Generator().manual_seed(1)
    batch = TabularMDPFamily(TabularOptions()).sample(3, g)
    assert torch.allclose(batch.transitions.sum(-1), torch.ones(3, 10, 5))
    values = batch.optimal_values()
    for i in range(3):
        expected = brute_force_values(batch.reward_means[i], batch.transitions[i], 10)
        assert values[i].tolist() == pytest.approx(expected, rel=1e-5)
    # reward mean and transition frequencies of (s=0, a=2) over many copies
    state, _ = batch.reset(20000, g)
    action = torch.full((3, 20000), 2)
    next_state, obs, reward, _ = batch.step(state, action, batch.noise(20000, g))
    assert torch.allclose(reward.mean(1), batch.reward_means[:, 0, 2], atol=0.03)
    assert torch.allclose(reward.std(1), torch.ones(3), atol=0.03)
    freq = torch.nn.functional.one_hot(next_state["s"], 10).float().mean(1)
    assert torch.allclose(freq, batch.transitions[:, 0, 2], atol=0.015)
    assert torch.equal(obs.argmax(-1), next_state["s"])


def test_navigation_rewards_termination_and_oracle_by_hand():
    env = Navigation(horizon=100, goals=torch.tensor([[0.25, 0.0], [-0.05, 0.3]]))
    state, obs = env.reset(1, None)
    assert torch.equal(obs, torch.zeros(2, 1, 2))
    state, obs, reward, done = env.step(state, torch.tensor([[[5.0, 0.0]], [[0.0, 0.0]]]), None)
    assert torch.allclose(obs[0, 0], torch.tensor([0.1, 0.0]))            # a clipped to 1: speed 0.1
    assert reward[0, 0].item() == pytest.approx(-0.15)
    assert reward[1, 0].item() == pytest.approx(-math.hypot(0.05, 0.3))
    assert not done.any()
    # straight at the goal: 0.1, 0.2, 0.25 → rewards −0.15, −0.05, 0 (terminated on the goal)
    assert env.oracle_return()[0].item() == pytest.approx(-0.2, abs=1e-6)
    squared = Navigation(horizon=100, goals=torch.tensor([[0.25, 0.0]]), squared=True)
    assert squared.oracle_return()[0].item() == pytest.approx(-(0.15 ** 2 + 0.05 ** 2), abs=1e-6)
    # within 0.01 in both coordinates ends the episode
    near = Navigation(horizon=100, goals=torch.tensor([[0.005, -0.009]]))
    _, _, _, done = near.step(near.reset(1, None)[0], torch.zeros(1, 1, 2), None)
    assert done.all()


def test_point_robots_move_reward_and_reach_their_oracle_by_hand():
    env = PointRobot(horizon=20, goals=torch.tensor([[0.25, 0.0]]), random_start=False)
    state, obs = env.reset(1, None)
    assert torch.equal(obs, torch.zeros(1, 1, 2))
    state, obs, reward, done = env.step(state, torch.tensor([[[5.0, -0.5]]]), None)
    assert torch.allclose(obs[0, 0], torch.tensor([0.1, -0.05]))           # clipped to 1: speed 0.1
    assert reward[0, 0].item() == pytest.approx(-math.hypot(0.15, 0.05))
    assert not done.any()                                                   # episodes never end early
    # straight at the goal: 0.1, 0.2, 0.25, then still → −0.15, −0.05, 0, 0, …
    assert env.oracle_return()[0].item() == pytest.approx(-0.2, abs=1e-6)
    sparse = env.with_reward(sparse=True)
    assert sparse.oracle_return()[0].item() == pytest.approx(0.85 + 0.95 + 18, abs=1e-5)  # 1 − d within 0.2
    far = PointRobot(horizon=20, goals=torch.tensor([[1.0, 0.0]]), random_start=False, sparse=True)
    _, _, reward, _ = far.step(far.reset(1, None)[0], torch.ones(1, 1, 2), None)
    assert reward.item() == 0.0                                             # outside the radius: nothing
    # random starts ~ U[-1, 1]²; the oracle averages a fixed set of them
    random = PointRobotFamily(PointRobotOptions()).sample(3, torch.Generator().manual_seed(0))
    _, starts = random.reset(4000, torch.Generator().manual_seed(1))
    assert float(starts.min()) >= -1 and float(starts.max()) <= 1 and abs(float(starts.mean())) < 0.02
    assert torch.equal(random.oracle_return(), random.oracle_return())
    assert bool((random.oracle_return() < 0).all())
    family = SparsePointRobotFamily(SparsePointRobotOptions())
    goals = family.sample(1000, torch.Generator().manual_seed(0)).goals
    assert torch.allclose(goals.norm(dim=-1), torch.ones(1000)) and float(goals[:, 1].min()) >= 0


def test_families_draw_every_task_from_the_generator():
    for family_cls, options, _ in FAMILIES:
        a = family_cls(options).sample(3, torch.Generator().manual_seed(7))
        b = family_cls(options).sample(3, torch.Generator().manual_seed(7))
        c = family_cls(options).sample(3, torch.Generator().manual_seed(8))
        assert all(torch.equal(x, y) for x, y in zip(a._tensors().values(), b._tensors().values()))
        assert not all(torch.equal(x, y) for x, y in zip(a._tensors().values(), c._tensors().values()))
    goals = NavigationFamily(NavigationOptions()).sample(10000, torch.Generator().manual_seed(0)).goals
    assert float(goals.min()) >= -0.5 and float(goals.max()) <= 0.5
