"""HalfCheetah-Vel and -Dir (MuJoCo, the optional extra ``metadapt[mujoco]``): the batched environment
against MuJoCo's own stepping and Gymnasium's HalfCheetah-v5, and a short PEARL run on it."""
import json
from pathlib import Path

import pytest
import torch

mujoco = pytest.importorskip("mujoco")
gymnasium = pytest.importorskip("gymnasium")

from metadapt.config import config_from_file  # noqa: E402
from metadapt.envs.half_cheetah import (CONTROL_COST, FRAME_SKIP, HalfCheetahDirFamily,  # noqa: E402
                                        HalfCheetahVelFamily, _model)
from metadapt.training import train  # noqa: E402
from metadapt.training.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).parent.parent


def test_a_batched_step_is_mujocos_own_stepping_and_the_observation_is_pearls():
    family = HalfCheetahVelFamily()
    g = torch.Generator().manual_seed(0)
    env = family.sample(3, g)
    state, obs = env.reset(2, g)
    assert obs.shape == (3, 2, 20) and env.goal.shape == (3,)
    assert bool(((env.goal >= 0) & (env.goal <= 3)).all())
    action = 2 * torch.rand(3, 2, 6, generator=g) - 1
    after, obs, reward, done = env.step(state, action, None)
    model = _model()
    for t in range(3):
        for c in range(2):
            data = mujoco.MjData(model)
            physics = state["physics"][t, c].numpy()
            data.qpos[:], data.qvel[:] = physics[1:10], physics[10:19]
            for _ in range(FRAME_SKIP):
                data.ctrl[:] = action[t, c].numpy()
                mujoco.mj_step(model, data)
            assert torch.allclose(after["physics"][t, c, 1:10], torch.from_numpy(data.qpos), atol=1e-12)
            mujoco.mj_kinematics(model, data)
            torso = torch.from_numpy(data.body("torso").xpos).float()
            assert torch.allclose(obs[t, c, 17:], torso, atol=1e-6)              # get_body_com("torso")
            assert torch.allclose(obs[t, c, :8], torch.from_numpy(data.qpos[1:]).float(), atol=1e-6)
            velocity = (data.qpos[0] - physics[1]) / (FRAME_SKIP * model.opt.timestep)
            expected = -abs(velocity - float(env.goal[t])) - CONTROL_COST * float((action[t, c] ** 2).sum())
            assert float(reward[t, c]) == pytest.approx(expected, abs=1e-5)
    assert not bool(done.any())


def test_the_dynamics_and_velocity_are_gymnasiums_halfcheetah_v5(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT where it runs: the XML's settotalmass warns
    reference = gymnasium.make("HalfCheetah-v5").unwrapped
    reference.reset(seed=0)
    family = HalfCheetahDirFamily(HalfCheetahDirFamily.Options(observation="gymnasium"))
    env = family.sample(2, torch.Generator().manual_seed(1))
    assert sorted(env.goal.tolist()) == [-1.0, 1.0]                                # one of each
    state, _ = env.reset(1, torch.Generator().manual_seed(2))
    qpos, qvel = state["physics"][0, 0, 1:10].numpy(), state["physics"][0, 0, 10:19].numpy()
    reference.set_state(qpos, qvel)
    action = torch.full((2, 1, 6), 0.5)
    state = {"physics": state["physics"][:1].expand(2, 1, 19).clone()}
    _, obs, reward, _ = env.step(state, action, None)
    ref_obs, _, _, _, info = reference.step(action[0, 0].numpy())
    assert obs.shape == (2, 1, 17)
    assert torch.allclose(obs[0, 0], torch.from_numpy(ref_obs).float(), atol=1e-5)
    cost = CONTROL_COST * 6 * 0.25
    forward = float(env.goal[0]) * info["x_velocity"]
    assert float(reward[0, 0]) == pytest.approx(forward - cost, abs=1e-4)
    assert float(reward[0, 0] + reward[1, 0]) == pytest.approx(-2 * cost, abs=1e-4)  # d and −d


def test_single_task_gymnasium_env_and_bad_options():
    import metadapt.envs.gym  # noqa: F401
    from metadapt.errors import UserError

    env = gymnasium.make("metadapt/HalfCheetahVel-v0", horizon=5)
    obs, info = env.reset(seed=3)
    assert obs.shape == (20,) and float(info["task"].goal[0]) == pytest.approx(
        float(HalfCheetahVelFamily().sample(1, torch.Generator().manual_seed(3)).goal[0]))
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and not terminated
    cfg = ROOT / "configs/rl/pearl-half-cheetah-vel.yaml"
    with pytest.raises(UserError, match="velocity_low=2.0 must be below"):
        config_from_file(cfg, ["task.velocity_low=2.0", "task.velocity_high=1.0"])


TINY = ["task.horizon=10", "model.hidden=16", "model.encoder_hidden=16", "algorithm.train_tasks=4",
        "algorithm.tasks_per_iteration=2", "algorithm.initial_steps=20", "algorithm.prior_steps=20",
        "algorithm.extra_posterior_steps=20", "algorithm.gradient_steps=2", "algorithm.batch_size=8",
        "algorithm.context_size=8", "algorithm.buffer_capacity=100", "train.iterations=4",
        "train.meta_batch_size=2", "train.val_every=2", "train.val_tasks=3", "train.checkpoint_every=2",
        "train.threads=1", "eval.tasks=4"]


def test_pearl_on_half_cheetah_vel_trains_seeded_resumes_bit_for_bit_and_evaluates(tmp_path):
    from metadapt.cli import main

    recipe = ROOT / "configs/rl/pearl-half-cheetah-vel.yaml"
    straight, again, resumed = tmp_path / "straight", tmp_path / "again", tmp_path / "resumed"
    train(config_from_file(recipe, TINY), straight, progress=False)
    train(config_from_file(recipe, TINY), again, progress=False)
    train(config_from_file(recipe, [*TINY, "train.iterations=2"]), resumed, progress=False)
    train(config_from_file(recipe, TINY), resumed, resume=True, progress=False)
    runs = [load_checkpoint(r / "checkpoints" / "last.pt") for r in (straight, again, resumed)]
    for other in runs[1:]:
        assert all(torch.equal(runs[0]["state"][k], other["state"][k]) for k in runs[0]["state"])
        assert torch.equal(runs[0]["pearl"]["rl"]["data"], other["pearl"]["rl"]["data"])
    assert runs[0]["pearl"]["rl"]["data"].shape == (4, 100, 2 * 20 + 6 + 2)
    assert main(["eval", str(straight), "--no-progress"]) == 0
    results = json.loads((straight / "eval" / "results.json").read_text())
    assert len(results["methods"]["pearl"]["curve"]) == 3 and "oracle" not in results
    assert (straight / "plots" / "velocity.png").exists()


def test_mujoco_threads_change_nothing_but_the_speed():
    finals = []
    for threads in (1, 2):
        family = HalfCheetahVelFamily(HalfCheetahVelFamily.Options(mujoco_threads=threads))
        g = torch.Generator().manual_seed(0)
        env = family.sample(4, g)
        state, _ = env.reset(3, g)
        for _ in range(5):
            state, *_ = env.step(state, 2 * torch.rand(4, 3, 6, generator=g) - 1, None)
        finals.append(state["physics"])
    assert torch.equal(*finals)
