"""Environments with a task distribution, batched over tasks (``EnvFamily.sample(n, generator) ->
EnvBatch``), and each as a single-task ``gymnasium.Env`` (:mod:`metadapt.envs.gym`)."""
from metadapt.envs.bandits import BanditFamily, Bandits
from metadapt.envs.base import EnvBatch, EnvFamily, EnvSource
from metadapt.envs.half_cheetah import HalfCheetah, HalfCheetahDirFamily, HalfCheetahVelFamily
from metadapt.envs.navigation import Navigation, NavigationFamily
from metadapt.envs.point_robot import PointRobot, PointRobotFamily, SparsePointRobotFamily
from metadapt.envs.tabular import TabularMDPFamily, TabularMDPs

__all__ = ["EnvBatch", "EnvFamily", "EnvSource", "Bandits", "BanditFamily", "TabularMDPs", "TabularMDPFamily",
           "Navigation", "NavigationFamily", "PointRobot", "PointRobotFamily", "SparsePointRobotFamily",
           "HalfCheetah", "HalfCheetahVelFamily", "HalfCheetahDirFamily"]
