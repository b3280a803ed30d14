"""MAML for reinforcement learning (Finn, Abbeel & Levine, ICML 2017, §3.2 and §5.3).

Each task's fast parameters are reached by policy-gradient steps on trajectories sampled with the
current parameters: REINFORCE with a per-task linear feature baseline,

    θ'_i = θ + α ∇_θ L_i(θ),   L_i(θ) = mean_t [ log π_θ(a_t | s_t) · Â_t ]   (Â: returns − baseline),

and the meta-objective is the expected return after adaptation, ``M(θ) = E_i E_{τ ~ π_θ}[J_i(θ'_i(θ, τ))]``,
maximised by TRPO through the adaptation (:func:`metadapt.training.trpo.trpo_update`, Hessian-vector
products of the post-adaptation KL differentiate through the inner step). Its gradient has two
terms,

    ∇M = E[(I + α ∇²L_i)ᵀ ∇J_i(θ')]  +  E[J_i(θ') ∇_θ log π_θ(τ)],

the second because the inner step's trajectories are sampled from ``π_θ``. The paper's estimator
drops it (biased; ``estimator: maml``); ``estimator: dice`` (the default) adds it with the DiCE
operator (Foerster et al., ICML 2018), ``(exp(log π_θ(τ) − ⊥log π_θ(τ)) − 1) · (Ĵ_i − b_i)``, with
``b_i`` the other tasks' mean return (a baseline independent of task ``i``'s samples): an unbiased
estimate, checked against the exact gradient on a two-armed bandit in the tests. ``first_order``
drops the second derivatives (``∇²L_i``). With ``inner_steps: 0`` the same code trains one policy
on all tasks jointly: the pretrained baseline of the paper.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from metadapt.algorithms.base import Algorithm
from metadapt.algorithms.rl.checks import check_rl_recipe, continuous_probe
from metadapt.experience import Trajectories, discounted_returns, linear_baseline, rollout
from metadapt.experience.rollout import stream
from metadapt.models.gaussian_policy import GaussianPolicy, Params
from metadapt.options import option
from metadapt.registry import register

VALIDATION_SEED = 4_243


def reinforce_objective(log_probs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """``[T]``: each task's mean over the steps that happened of ``log π(a|s) · Â`` (to maximise)."""
    dims = tuple(range(1, log_probs.dim()))
    return (log_probs * advantages * mask).sum(dims) / mask.sum(dims).clamp(min=1)


def magic(x: torch.Tensor) -> torch.Tensor:
    """DiCE's MagicBox, ``exp(x − ⊥x)``: 1 in value, ``∇x`` in gradient."""
    return torch.exp(x - x.detach())


def sampling_term(log_p: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``[T]``: the score-function term ``(□(log p_i) − 1)·(v_i − b_i)``, zero in value, whose gradient is
    ``(v_i − b_i)∇log p_i``, with ``b_i`` the mean of the other tasks' ``v`` (all detached)."""
    value = value.detach()
    t = value.shape[0]
    baseline = (value.sum() - value) / (t - 1) if t > 1 else torch.zeros_like(value)
    return (magic(log_p) - 1) * (value - baseline)


def normalize(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per task: zero mean, unit variance over the steps that happened."""
    dims = tuple(range(1, advantages.dim()))
    n = mask.sum(dims, keepdim=True).clamp(min=1)
    mean = (advantages * mask).sum(dims, keepdim=True) / n
    var = (((advantages - mean) * mask) ** 2).sum(dims, keepdim=True) / n
    return (advantages - mean) / (var.sqrt() + 1e-8) * mask


@dataclass
class MAMLRLOptions:
    inner_lr: float = option(0.1, positive=True, help="α of each policy-gradient step (MAML §5.3: 0.1)")
    inner_steps: int = option(1, low=0, high=100,
                              help="policy-gradient steps in meta-training (0: joint pretraining)")
    trajectories: int = option(20, positive=True, high=100_000,
                               help="trajectories per task per step (MAML: 20)")
    gamma: float = option(0.99, low=0, high=1, help="discount")
    max_kl: float = option(0.01, positive=True, help="TRPO's trust region δ on the adapted policies' KL")
    cg_iterations: int = option(10, positive=True, help="conjugate-gradient iterations")
    cg_damping: float = option(1e-5, low=0, help="damping λ of the Hessian-vector products")
    backtracks: int = option(15, positive=True, help="line-search steps")
    backtrack_ratio: float = option(0.8, positive=True, high=1, help="line-search shrink factor")
    estimator: str = option("dice", choices=("dice", "maml"),
                            help="dice: unbiased meta-gradient with the sampling term; maml: the paper's")
    first_order: bool = option(False, help="drop second derivatives through the inner step")
    metric_fraction: float = option(0.25, positive=True, high=1,
                                    help="fraction of each task's post-adaptation trajectories in the "
                                         "Hessian-vector products of TRPO's metric (rllab's subsampling)")
    trust_region: str = option("adapted", choices=("adapted", "through"),
                               help="TRPO's metric: the adapted policies' Fisher (the inner step's "
                                    "Jacobian taken as identity; fast) or the KL's Hessian through it")
    outer: str = option("trpo", choices=("trpo", "ppo"),
                        help="outer step: TRPO (the paper's) or PPO-style clipped epochs of Adam "
                             "(train.meta_lr)")
    ppo_epochs: int = option(5, positive=True, help="outer: ppo — Adam steps on each meta-batch")
    ppo_clip: float = option(0.2, positive=True, help="outer: ppo — clip range of the adapted policy's ratio")
    outer_advantages: str = option("returns", choices=("returns", "normalized"),
                                   help="outer surrogate's advantages: in return units (consistent with "
                                        "the dice term) or normalised per task (rllab's center_adv)")
    outer_average: str = option("trajectory", choices=("trajectory", "step"),
                                help="outer surrogate per task: the mean over trajectories of Σ_t ρÂ (the "
                                     "return's gradient) or the mean over steps of ρÂ (the released code's)")
    eval_steps: int = option(3, low=0, high=1000, help="adaptation steps measured by eval")
    val_steps: int = option(0, low=0, high=1000,
                            help="adaptation steps after which validation scores the return, choosing the "
                                 "best checkpoint (0: inner_steps, at least one)")
    eval_lrs: list[float] = option([], positive=True,
                                   help="step size of each evaluation step (empty: inner_lr; the released "
                                        "code: 0.5 then 0.25)")
    eval_trajectories: int = option(0, low=0, help="trajectories per evaluation step (0: trajectories; "
                                                   "the released code: 40)")
    sampling: str = option("trajectories", choices=("trajectories", "steps"),
                           help="meta-training's sampling — trajectories: that many whole episodes per "
                                "task and step; steps: rllab's step budget (trajectories × horizon steps "
                                "per task, the meta-batch's total), one environment per task running "
                                "episodes back to back, so tasks whose episodes end early get more of "
                                "them, the unfinished ones dropped (the released training script's)")
    eval_sampling: str = option("trajectories", choices=("trajectories", "steps"),
                                help="validation's and evaluation's sampling — trajectories: "
                                     "eval_trajectories whole episodes per step; steps: whole episodes "
                                     "one after another until eval_trajectories × horizon steps per task "
                                     "(the released test script's)")


@register("algorithm", "maml-rl")
class MAMLRL(Algorithm):
    """MAML for RL with a TRPO outer step; see the module docstring."""

    name = "maml-rl"
    reinforcement = True
    Options = MAMLRLOptions

    def __init__(self, policy: GaussianPolicy, inner_lr=0.1, inner_steps=1, trajectories=20, gamma=0.99,
                 max_kl=0.01, cg_iterations=10, cg_damping=1e-5, backtracks=15, backtrack_ratio=0.8,
                 estimator="dice", first_order=False, metric_fraction=0.25, trust_region="adapted",
                 outer="trpo", ppo_epochs=5, ppo_clip=0.2, outer_advantages="returns", eval_steps=3,
                 eval_lrs=(), eval_trajectories=0, outer_average="trajectory", sampling="trajectories",
                 eval_sampling="trajectories", val_steps=0):
        super().__init__()
        self.policy = policy
        self.inner_lr, self.inner_steps, self.trajectories = inner_lr, inner_steps, trajectories
        self.gamma = gamma
        self.max_kl, self.cg_iterations, self.cg_damping = max_kl, cg_iterations, cg_damping
        self.backtracks, self.backtrack_ratio = backtracks, backtrack_ratio
        self.estimator, self.first_order, self.eval_steps = estimator, first_order, eval_steps
        self.trust_region, self.metric_fraction = trust_region, metric_fraction
        self.outer, self.ppo_epochs, self.ppo_clip = outer, ppo_epochs, ppo_clip
        self.eval_lrs, self.eval_trajectories = list(eval_lrs), eval_trajectories
        self.outer_advantages = outer_advantages
        self.outer_average = outer_average
        self.sampling, self.eval_sampling = sampling, eval_sampling
        self.val_steps = val_steps

    @classmethod
    def from_config(cls, options, parts) -> MAMLRL:
        probe = continuous_probe(parts, "maml-rl")
        policy = parts.seeded(lambda: parts.model_for(probe.observation_shape, probe.action_dim))
        return cls(policy, **vars(options))

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        check_rl_recipe(config, "gaussian-policy", "navigation-2d")

    # ----- sampling and the inner step ---------------------------------------------------------------
    def params(self) -> Params:
        return dict(self.policy.named_parameters())

    @torch.no_grad()
    def sample(self, env, params: Params, per_task: bool, generator: torch.Generator,
               copies: int | None = None, evaluation: bool = False) -> Trajectories:
        """Trajectories of every task with ``params`` (shared, or with a leading task axis when
        ``per_task``): ``copies`` episodes each, or with ``sampling`` (``eval_sampling`` for an
        ``evaluation``) ``steps`` packed episodes up to ``copies × horizon`` steps per task (in
        meta-training, in all over the batch's tasks)."""
        params = {k: v.detach() for k, v in params.items()}

        def act(obs, last, carry):
            return self.policy.sample(params, obs, per_task, generator), {}, carry

        copies = copies or self.trajectories
        if (self.eval_sampling if evaluation else self.sampling) == "steps":
            budget = copies * env.horizon * (1 if evaluation else env.num_tasks)
            return stream(env, act, budget, generator, shared=not evaluation)
        traj, _ = rollout(env, act, copies, 1, generator)
        return traj

    def advantages(self, traj: Trajectories, normalized: bool = True) -> torch.Tensor:
        """``[T, C, H]`` advantages: discounted returns minus the per-task linear baseline, normalised
        per task for the inner step; in return units for the meta-objective."""
        obs, rewards, mask = traj.observations[:, :, 0], traj.rewards[:, :, 0], traj.mask[:, :, 0]
        dones, time = (traj.dones[:, :, 0], traj.time[:, :, 0]) if traj.packed else (None, None)
        returns = discounted_returns(rewards, self.gamma, mask, dones)
        advantages = (returns - linear_baseline(obs, returns, mask, time)) * mask
        return normalize(advantages, mask) if normalized else advantages

    def log_probs(self, params: Params, traj: Trajectories, per_task: bool) -> torch.Tensor:
        return self.policy.log_prob(params, traj.observations[:, :, 0], traj.actions[:, :, 0], per_task)

    def inner_step(self, params: Params, per_task: bool, traj: Trajectories, advantages: torch.Tensor,
                   create_graph: bool, lr: float | None = None) -> Params:
        """One policy-gradient step per task: ``θ'_i = θ + α ∇ L_i`` (``[T, …]`` fast parameters)."""
        t = traj.rewards.shape[0]
        with torch.enable_grad():
            params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
            if not per_task:
                params = {k: v.expand(t, *v.shape) for k, v in params.items()}
            log_probs = self.log_probs(params, traj, True)
            objective = reinforce_objective(log_probs, advantages, traj.mask[:, :, 0])
            grads = torch.autograd.grad(objective.sum(), list(params.values()), create_graph=create_graph)
        lr = self.inner_lr if lr is None else lr
        return {k: v + lr * g for (k, v), g in zip(params.items(), grads)}

    # ----- meta-training --------------------------------------------------------------------------------
    def experience(self, env, generator: torch.Generator) -> dict:
        """Inner-step trajectories and advantages, then the post-adaptation trajectories."""
        params, per_task, steps = self.params(), False, []
        for _ in range(self.inner_steps):
            traj = self.sample(env, params, per_task, generator)
            adv = self.advantages(traj)
            steps.append((traj, adv))
            params, per_task = self.inner_step(params, per_task, traj, adv, create_graph=False), True
        post = self.sample(env, params, per_task, generator)
        old = {k: v.detach().clone() for k, v in params.items()}
        old_log_probs = self.log_probs(old, post, per_task).detach()
        first_return = (steps[0][0] if steps else post).mean_episode_return()
        normalized = self.outer_advantages == "normalized"
        return {"steps": steps, "post": post, "post_advantages": self.advantages(post, normalized=normalized),
                "old_params": old,
                "old_log_probs": old_log_probs, "per_task": per_task,
                "value": self.start_value(post),
                "metrics": {"return_before": float(first_return.mean()),
                            "return": float(post.mean_episode_return().mean() if post.packed
                                            else post.episode_returns.mean()),
                            "env_steps": float(post.steps() + sum(s[0].steps() for s in steps))}}

    def start_value(self, traj: Trajectories) -> torch.Tensor:
        """``[T]`` each task's mean discounted return from the start of its episodes."""
        rewards, mask = traj.rewards[:, :, 0], traj.mask[:, :, 0]
        if not traj.packed:
            return discounted_returns(rewards, self.gamma, mask)[..., 0].mean(1)
        returns = discounted_returns(rewards, self.gamma, mask, traj.dones[:, :, 0])
        starts = (traj.time[:, :, 0] == 0).to(mask.dtype) * mask
        return (returns * starts).sum((1, 2)) / traj.episode_counts().clamp(min=1)

    def adapted(self, batch: dict, graph: bool = True) -> list[tuple[Params, bool]]:
        """The parameters the current ``θ`` reaches at every inner step on the batch's trajectories:
        ``[(θ, False), (θ'_1, True), …]`` (``True``: with a leading task axis); ``graph``: keep the
        graph of the inner steps (not needed to only evaluate)."""
        path = [(self.params(), False)]
        for traj, adv in batch["steps"]:
            params, per_task = path[-1]
            create = graph and not self.first_order
            path.append((self.inner_step(params, per_task, traj, adv, create_graph=create), True))
        return path

    def surrogate(self, batch: dict, with_sampling_term: bool = False, graph: bool = True,
                  clip: float | None = None) -> torch.Tensor:
        """TRPO's surrogate of the post-adaptation return, in return units: per task the mean over
        trajectories of ``Σ_t ρ_t Â_t`` (``ρ``: the adapted policy's probability ratio to the one that
        sampled; with ``clip``, PPO's ``min(ρÂ, clip(ρ, 1 ± ε)Â)``; ``outer_average: step``: the mean over
        the task's steps of ``ρ_t Â_t``, as the released code), averaged over tasks; plus, for the
        gradient, the ``dice`` estimator's sampling term."""
        path = self.adapted(batch, graph)
        params, per_task = path[-1]
        post, mask = batch["post"], batch["post"].mask[:, :, 0]
        ratio = torch.exp(self.log_probs(params, post, per_task) - batch["old_log_probs"])
        adv = batch["post_advantages"]
        gain = ratio * adv if clip is None else torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
        if self.outer_average == "step":
            value = (gain * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
        elif post.packed:
            value = (gain * mask).sum((1, 2)) / post.episode_counts().clamp(min=1)
        else:
            value = (gain * mask).sum(-1).mean(-1)
        if with_sampling_term and self.estimator == "dice" and batch["steps"]:
            # each inner step's trajectories were drawn from the parameters before that step
            log_p = sum((self.log_probs(p, traj, t) * traj.mask[:, :, 0]).sum((1, 2))
                        for (p, t), (traj, _) in zip(path, batch["steps"]))
            value = value + sampling_term(log_p, batch["value"])
        return value.mean()

    def kl(self, batch: dict, graph: bool | None = None, fraction: float = 1.0) -> torch.Tensor:
        """Mean KL from the adapted policies that sampled the post-adaptation trajectories to those the
        current ``θ`` reaches, on the first ``fraction`` of each task's trajectories; its Hessian is
        TRPO's metric (``graph``: through the inner steps, else with their Jacobian taken as
        identity — the same value, a cheaper metric)."""
        graph = self.trust_region == "through" if graph is None else graph
        params, per_task = self.adapted(batch, graph)[-1]
        post = batch["post"]
        if fraction < 1 and post.packed:   # each task's first episodes
            keep = (fraction * post.episode_counts()).round().clamp(min=1)
            post = Trajectories(post.observations, post.actions, post.rewards,
                                post.mask * (post.episode_index() < keep[:, None, None, None]), post.dones)
        elif fraction < 1:
            keep = max(1, round(fraction * post.rewards.shape[1]))
            post = Trajectories(post.observations[:, :keep], post.actions[:, :keep], post.rewards[:, :keep],
                                post.mask[:, :keep], post.dones[:, :keep])
        mask = post.mask[:, :, 0]
        kl = self.policy.kl(batch["old_params"], params, post.observations[:, :, 0], per_task)
        return (kl * mask).sum() / mask.sum().clamp(min=1)

    @property
    def uses_meta_lr(self) -> bool:
        """Only the PPO-style outer step uses ``train.optimizer`` and ``train.meta_lr``; TRPO has its own."""
        return self.outer == "ppo"

    def outer_step(self, config, context, device):
        if self.outer == "ppo":
            from metadapt.training.ppo import ClippedMetaStep
            from metadapt.training.steps import build_optimizer

            return ClippedMetaStep(self, build_optimizer(config, self), context, config.train.meta_batch_size,
                                   device, self.ppo_epochs, self.ppo_clip)
        from metadapt.training.trpo_step import TRPOStep

        return TRPOStep(self, context, config.train.meta_batch_size, device)

    # ----- adaptation at test time --------------------------------------------------------------------
    @torch.no_grad()
    def adaptation_returns(self, env, steps: int, generator: torch.Generator,
                           policy_params: Params | None = None) -> tuple[torch.Tensor, list[Trajectories]]:
        """``[T, steps + 1]`` mean return of ``eval_trajectories`` episodes per task (``eval_sampling:
        steps``: of the episodes in that many horizons' steps) after 0 … ``steps`` policy-gradient steps
        of sizes ``eval_lrs`` (each step's trajectories are the data of the next, as the released code's
        test runs), and the trajectories of each step."""
        params, per_task = (policy_params or self.params()), False
        copies = self.eval_trajectories or self.trajectories
        returns, trajs = [], []
        for k in range(steps + 1):
            traj = self.sample(env, params, per_task, generator, copies, evaluation=True)
            returns.append(traj.mean_episode_return())
            trajs.append(traj)
            if k < steps:
                lr = self.eval_lrs[min(k, len(self.eval_lrs) - 1)] if self.eval_lrs else self.inner_lr
                stepped = self.inner_step(params, per_task, traj, self.advantages(traj), create_graph=False,
                                          lr=lr)
                params = {n: v.detach() for n, v in stepped.items()}
                per_task = True
        return torch.stack(returns, 1), trajs

    def play_adaptation(self, env, generator):
        return self.adaptation_returns(env, self.eval_steps, generator)

    def validation_metrics(self, env) -> dict[str, float]:
        """Mean return after ``val_steps`` adaptation steps (0: ``inner_steps``, at least one;
        ``query_loss`` is its negative)."""
        returns, _ = self.adaptation_returns(env, self.val_steps or max(self.inner_steps, 1),
                                             torch.Generator().manual_seed(VALIDATION_SEED))
        value = float(returns[:, -1].mean())
        return {"query_loss": -value, "return": value, "return_before": float(returns[:, 0].mean())}

    def scratch(self, seed: int) -> MAMLRL:
        """The same algorithm from a fresh random policy: training from scratch with the same steps."""
        fresh = copy.deepcopy(self)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh.policy.reset_parameters()
        fresh.name_in_config = "scratch"
        return fresh

    def describe(self) -> str:
        what = ("joint pretraining on all tasks (no inner step)" if self.inner_steps == 0 else
                f"{self.inner_steps} policy-gradient step(s) of lr {self.inner_lr} on {self.trajectories} "
                f"{'horizons of steps' if self.sampling == 'steps' else 'trajectories'} per task, "
                f"TRPO outer step (δ {self.max_kl}), "
                f"{'first-order' if self.first_order else 'second-order'}, {self.estimator} estimator")
        return f"`{self.name_in_config or self.name}`: {what}"
