"""Environment steps per second: metadapt's batched environments against the same environment as
single-task ``gymnasium.Env``s under ``gymnasium.vector.SyncVectorEnv``, measured in one run.

    python benchmarks/envs.py [--envs 1000] [--steps 200] [--threads 1]   # about a minute

Each side steps ``--envs`` copies of 2D navigation (and of the 5-armed bandit, the tabular MDP and
PEARL's point robot) with random actions for ``--steps`` steps after a warm-up; the batched side is one tensor
computation per step for all of them (tasks × copies), the vector side loops over the single
environments. With the ``mujoco`` extra it also steps HalfCheetah-Vel, batched through one
``mujoco.rollout`` call per step, against Gymnasium's own ``HalfCheetah-v5`` (the same model and
dynamics) under ``SyncVectorEnv`` (``--cheetah-envs`` of each). Writes benchmarks/envs.json and prints
a table with the ratio.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def batched_rate(family, envs: int, steps: int) -> float:
    g = torch.Generator().manual_seed(0)
    tasks = family.sample(envs, g)
    state, _ = tasks.reset(1, g)

    def actions():
        if tasks.discrete:
            return torch.randint(tasks.actions, (envs, 1), generator=g)
        return 2 * torch.rand(envs, 1, tasks.action_dim, generator=g) - 1

    for _ in range(5):
        state, *_ = tasks.step(state, actions(), tasks.noise(1, g))
    start = time.perf_counter()
    for _ in range(steps):
        state, *_ = tasks.step(state, actions(), tasks.noise(1, g))
    return envs * steps / (time.perf_counter() - start)


def vector_rate(env_id: str, options: dict, envs: int, steps: int) -> float:
    import gymnasium

    import metadapt.envs.gym  # noqa: F401  (registers the ids)

    vec = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make(env_id, **options) for _ in range(envs)])
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    if hasattr(vec.single_action_space, "n"):
        sample = lambda: rng.integers(0, vec.single_action_space.n, envs)  # noqa: E731
    else:
        shape = (envs, *vec.single_action_space.shape)
        sample = lambda: rng.uniform(-1, 1, shape).astype(np.float32)  # noqa: E731
    for _ in range(5):
        vec.step(sample())
    start = time.perf_counter()
    for _ in range(steps):
        vec.step(sample())
    return envs * steps / (time.perf_counter() - start)


def main() -> None:
    from metadapt.envs import BanditFamily, NavigationFamily, PointRobotFamily, TabularMDPFamily
    from metadapt.envs.bandits import BanditOptions
    from metadapt.envs.navigation import NavigationOptions
    from metadapt.envs.point_robot import PointRobotOptions
    from metadapt.envs.tabular import TabularOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--vector-steps", type=int, default=20, help="steps of the (slow) vector side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cheetah-envs", type=int, default=100, help="half-cheetahs of each side (MuJoCo)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("navigation-2d", NavigationFamily(NavigationOptions(horizon=10 ** 6)),
              "metadapt/Navigation2D-v0", {"horizon": 10 ** 6}),
             ("bandits (k = 5)", BanditFamily(BanditOptions(arms=5, pulls=10 ** 6)), "metadapt/Bandits-v0",
              {"arms": 5, "pulls": 10 ** 6}),
             ("tabular MDP", TabularMDPFamily(TabularOptions(horizon=10 ** 6)), "metadapt/TabularMDP-v0",
              {"horizon": 10 ** 6}),
             ("point robot", PointRobotFamily(PointRobotOptions(horizon=10 ** 6)), "metadapt/PointRobot-v0",
              {"horizon": 10 ** 6})]
    counts = {}
    if importlib.util.find_spec("mujoco") is not None:
        from metadapt.envs.half_cheetah import HalfCheetahVelFamily, HalfCheetahVelOptions

        cases.append(("half-cheetah (MuJoCo)", HalfCheetahVelFamily(HalfCheetahVelOptions(horizon=10 ** 6)),
                      "HalfCheetah-v5", {"max_episode_steps": 10 ** 6}))
        counts["half-cheetah (MuJoCo)"] = args.cheetah_envs
    rows = []
    for name, family, env_id, options in cases:
        envs = counts.get(name, args.envs)
        fast = batched_rate(family, envs, args.steps)
        slow = vector_rate(env_id, options, envs, args.vector_steps)
        rows.append({"environment": name, "envs": envs, "batched_steps_per_s": fast,
                     "sync_vector_steps_per_s": slow, "ratio": fast / slow})
        print(f"{name:16s} batched {fast:14,.0f} steps/s   SyncVectorEnv {slow:10,.0f} steps/s   "
              f"ratio {fast / slow:8.0f}x", flush=True)
    meta = {"torch": torch.__version__, "threads": args.threads, "envs": args.envs}
    (HERE / "envs.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
