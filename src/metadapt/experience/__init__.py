"""Experience: rollouts of policies in batched environments, and the returns, advantages and
baselines computed from them (tensors with leading task and copy axes)."""
from metadapt.experience.baseline import fit_linear_baseline, linear_baseline
from metadapt.experience.returns import discounted_returns, gae
from metadapt.experience.rollout import Last, Trajectories, rollout

__all__ = ["Last", "Trajectories", "rollout", "discounted_returns", "gae", "fit_linear_baseline",
           "linear_baseline"]
