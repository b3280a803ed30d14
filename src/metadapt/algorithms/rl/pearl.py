"""PEARL (Rakelly, Zhou, Quillen, Finn & Levine, "Efficient off-policy meta-reinforcement learning via
probabilistic context variables", ICML 2019): soft actor-critic conditioned on a task variable ``z``
inferred from a handful of transitions (:mod:`metadapt.models.pearl_networks`).

Meta-training (Algorithm 1; the state and the loop are :class:`metadapt.training.pearl_step.PEARLStep`)
keeps a fixed set of training tasks, each with an RL replay buffer and an encoder buffer. Every
iteration collects experience in a few tasks — with ``z`` from the prior, then from the posterior of
context drawn from the task's encoder buffer — and takes gradient steps on a meta-batch of tasks,
all tasks of the meta-batch in one batched computation. One gradient step, for context ``c`` and
transitions ``(s, a, r, s')`` of each task, ``z ~ q(z | c)`` (reparameterised):

    L_Q   = Σ_i E[(Q_i(s, a, z) − (κ r + γ V̄(s', z)))²]        (critic; trains Q and the encoder)
    L_KL  = β KL(q(z | c) ‖ N(0, I))                              (information bottleneck, encoder)
    L_V   = E[(V(s, ⊥z) − ⊥(min_i Q_i(s, ã, ⊥z) − log π(ã | s, ⊥z)))²],   ã ~ π(· | s, ⊥z)
    L_π   = E[log π(ã | s, ⊥z) − min_i Q_i(s, ã, ⊥z)] + 10⁻³ (E[μ²] + E[log σ²])

(``κ``: reward scale, which sets the entropy's weight; ``V̄``: the target value network, Polyak-averaged
with ``τ``; ``⊥``: no gradient — the encoder learns from the critic and the KL term only, §4.2). At
test time the agent explores by posterior sampling: its first ``exploration_episodes`` episodes act
with ``z`` from the prior, and every later one with ``z`` from the posterior of all the context
gathered so far in the task (§4.3).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from metadapt.algorithms.base import Algorithm
from metadapt.algorithms.rl.checks import check_rl_recipe, continuous_probe
from metadapt.errors import UserError
from metadapt.experience import Trajectories, rollout
from metadapt.models.pearl_networks import PEARLNetworks, kl_to_standard_normal, sample_gaussian
from metadapt.options import option
from metadapt.registry import register

VALIDATION_SEED = 4_247


@dataclass
class PEARLOptions:
    train_tasks: int = option(80, positive=True, high=1_000_000,
                              help="the fixed set of meta-training tasks, each with its buffers (PEARL: 80 "
                                   "for the point robots)")
    tasks_per_iteration: int = option(5, positive=True, help="tasks whose experience is collected each "
                                                             "iteration (PEARL: num_tasks_sample 5)")
    initial_steps: int = option(2000, low=0, help="steps collected with z ~ prior in every training task "
                                                  "before the first update (point robot: 200)")
    prior_steps: int = option(400, low=0, help="steps per collected task with z ~ prior, into both buffers "
                                               "(point robot: 200)")
    posterior_steps: int = option(0, low=0, help="steps per collected task with z ~ posterior, into both "
                                                 "buffers")
    extra_posterior_steps: int = option(400, low=0,
                                        help="steps per collected task with z ~ posterior, into the RL "
                                             "buffer only (point robot: 200)")
    gradient_steps: int = option(2000, positive=True, help="gradient steps per iteration (point robot: 1000)")
    batch_size: int = option(256, positive=True, help="RL transitions per task per gradient step")
    context_size: int = option(64, positive=True, help="context transitions per task per gradient step "
                                                       "(embedding_batch_size)")
    context_episodes: int = option(0, low=0, high=1000,
                                   help="0: the context of a gradient step is context_size transitions "
                                        "drawn from the task's encoder buffer (PEARL); k > 0: the whole "
                                        "transitions of j episodes, j drawn uniformly from 1 … k per step, "
                                        "which is what the posterior sees at test time after j episodes")
    context_episodes_share: float = option(1.0, low=0, high=1,
                                           help="with context_episodes: the share of gradient steps whose "
                                                "context is whole episodes; the others draw context_size "
                                                "transitions as PEARL does (1: every step)")
    gamma: float = option(0.99, low=0, high=1, help="discount (sparse point robot: 0.9)")
    tau: float = option(0.005, positive=True, high=1, help="Polyak rate of the target value network")
    reward_scale: float = option(5.0, positive=True,
                                 help="κ: rewards × κ in the Bellman target; sets the entropy's weight "
                                      "(point robot: 100)")
    kl_lambda: float = option(0.1, low=0, help="β: weight of the KL term (point robot 0.1, sparse 1)")
    policy_lr: float = option(3e-4, positive=True, help="Adam step size of the policy")
    q_lr: float = option(3e-4, positive=True, help="Adam step size of the twin Q-functions")
    v_lr: float = option(3e-4, positive=True, help="Adam step size of the value function")
    context_lr: float = option(3e-4, positive=True, help="Adam step size of the encoder")
    policy_regularization: float = option(1e-3, low=0, help="weight of E[μ²] and E[log σ²] in L_π (rlkit)")
    buffer_capacity: int = option(20_000, positive=True, high=100_000_000,
                                  help="transitions kept per task in each buffer (oyster: 1,000,000; these "
                                       "are saved with every checkpoint)")
    sparse_context: bool = option(False,
                                  help="the encoder's context and the test returns use the task's sparse "
                                       "reward while SAC learns from the dense one the environment gives "
                                       "(PEARL's sparse_rewards; the sparse point robot with "
                                       "task.reward=dense)")
    exploration_episodes: int = option(1, positive=True,
                                       help="test time: episodes acting with z from the prior before the "
                                            "posterior (oyster: num_exp_traj_eval 1; sparse point robot 5)")
    eval_episodes: int = option(3, positive=True, help="episodes of each test trial")
    test_deterministic: bool = option(True, help="test trials act with the policy's mean action (oyster's "
                                                 "eval_deterministic); false: they sample actions, as "
                                                 "training collection does")
    sample_exploration: bool = option(False,
                                      help="test trials' exploration episodes (z from the prior) sample "
                                           "actions, as training collection does, and the later ones follow "
                                           "test_deterministic; false: every episode follows it (oyster)")


@register("algorithm", "pearl")
class PEARL(Algorithm):
    """PEARL; see the module docstring."""

    name = "pearl"
    reinforcement = True
    Options = PEARLOptions

    def __init__(self, networks: PEARLNetworks, **options):
        super().__init__()
        self.networks = networks
        self.options = PEARLOptions(**options)
        if self.options.eval_episodes <= self.options.exploration_episodes - 1:
            raise UserError("algorithm.eval_episodes must exceed algorithm.exploration_episodes - 1")

    @classmethod
    def from_config(cls, options, parts) -> PEARL:
        probe = continuous_probe(parts, "pearl")
        if options.sparse_context and not hasattr(probe, "with_reward"):
            raise UserError(f"algorithm.sparse_context=true needs a task family with a sparse reward "
                            f"(sparse-point-robot); task.family={parts.config.task.family} has none")
        if options.context_episodes:
            cls._check_whole_episodes(options, probe.horizon)
        networks = parts.seeded(lambda: parts.model_for(probe.observation_shape, probe.action_dim))
        return cls(networks, **vars(options))

    @staticmethod
    def _check_whole_episodes(o: PEARLOptions, horizon: int) -> None:
        """``context_episodes`` reads whole episodes from the encoder buffer: refuse settings that leave
        fewer of them, or episodes cut across the buffer's end."""
        if o.buffer_capacity % horizon:
            raise UserError(f"algorithm.context_episodes needs algorithm.buffer_capacity a multiple of the "
                            f"episode length {horizon}, not {o.buffer_capacity}")
        for name in ("initial_steps", "prior_steps"):
            have = getattr(o, name) // horizon
            if have < o.context_episodes:
                raise UserError(f"algorithm.context_episodes={o.context_episodes} needs at least that many "
                                f"episodes of {horizon} steps in algorithm.{name}, which gives {have}")

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        check_rl_recipe(config, "pearl-networks", "point-robot")

    # ----- the task variable --------------------------------------------------------------------------
    def transitions(self, traj: Trajectories, env) -> torch.Tensor:
        """``[T, C·E·H, width]`` rows ``(s, a, r, s', r_c)`` of every step that happened (PEARL's tasks
        never end early, so every step did); ``r_c`` is the reward the encoder reads: the sparse one
        with ``sparse_context``, else ``r``."""
        t = traj.rewards.shape[0]
        obs = traj.observations.reshape(t, -1, traj.observations.shape[-1])
        nxt = traj.next_observations.reshape(t, -1, traj.next_observations.shape[-1])
        actions = traj.actions.reshape(t, -1, traj.actions.shape[-1])
        rewards = traj.rewards.reshape(t, -1)
        seen = env.with_reward(sparse=True).reward(nxt) if self.options.sparse_context else rewards
        return torch.cat([obs, actions, rewards[..., None], nxt, seen[..., None]], -1)

    def split(self, rows: torch.Tensor):
        """``(s, a, r, s')`` of transition rows ``[…, width]``."""
        s, a = self.networks.observation_size, self.networks.action_size
        return rows[..., :s], rows[..., s:s + a], rows[..., s + a], rows[..., s + a + 1:2 * s + a + 1]

    def context_of(self, rows: torch.Tensor) -> torch.Tensor:
        """The encoder's view of transition rows: ``(s, a, r_c, s')``."""
        obs, actions, _, nxt = self.split(rows)
        return self.networks.context(obs, actions, rows[..., -1], nxt)

    def sample_z(self, mean: torch.Tensor, variance: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        """``z = mean + √variance · ε`` (for a full covariance, its Cholesky factor times ``ε``), ``ε``
        from ``generator`` (differentiable in mean and variance)."""
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return sample_gaussian(mean, variance, noise)

    # ----- acting -------------------------------------------------------------------------------------
    def actor(self, z: torch.Tensor, generator: torch.Generator | None):
        """The policy with ``z [T, C, latent]`` per task and copy; actions sampled from ``generator``, or
        the mean action without one."""

        def act(obs, last, carry):
            noise = None
            if generator is not None:
                shape = (*obs.shape[:-1], self.networks.action_size)
                noise = torch.randn(shape, generator=generator, dtype=obs.dtype).to(obs.device)
            action = self.networks.act(obs, z, noise)[0]
            return action, {}, carry

        return act

    @torch.no_grad()
    def collect(self, env, copies: int, z: torch.Tensor, generator: torch.Generator) -> Trajectories:
        """``copies`` episodes of every task of ``env``, copy ``c`` acting with ``z[:, c]``."""
        traj, _ = rollout(env, self.actor(z, generator), copies, 1, generator)
        return traj

    @torch.no_grad()
    def explore(self, env, episodes: int, generator: torch.Generator, deterministic: bool | None = None,
                exploration_episodes: int | None = None) -> tuple[torch.Tensor, list[Trajectories], list]:
        """Posterior sampling in every task of ``env`` (§4.3): episode ``k`` acts with ``z`` drawn from
        the prior while ``k < exploration_episodes``, then from the posterior of the context of all
        earlier episodes; it acts with the policy's mean action when ``deterministic``
        (``test_deterministic``) but samples in the prior episodes with ``sample_exploration``; returns
        ``[T, episodes]`` returns (of the sparse reward with
        ``sparse_context``), each episode's trajectories and the ``(mean, variance)`` of ``z`` each
        episode acted with."""
        first = self.options.exploration_episodes if exploration_episodes is None else exploration_episodes
        if deterministic is None:
            deterministic = self.options.test_deterministic
        t, latent = env.num_tasks, self.networks.latent_size
        dtype = next(self.networks.parameters()).dtype
        context = torch.zeros(t, 0, self.networks.context_size, device=env.device, dtype=dtype)
        returns, trajs, beliefs = [], [], []
        for k in range(episodes):
            if k < first:
                mean = torch.zeros(t, latent, device=env.device, dtype=dtype)
                variance = torch.ones_like(mean)
            else:
                mean, variance = self.networks.posterior(context)
            z = self.sample_z(mean, variance, generator)[:, None, :]
            sampled = not deterministic or (k < first and self.options.sample_exploration)
            traj, _ = rollout(env, self.actor(z, generator if sampled else None), 1, 1, generator)
            rows = self.transitions(traj, env)
            context = torch.cat([context, self.context_of(rows)], 1)
            returns.append(rows[..., -1].sum(-1) if self.options.sparse_context
                           else traj.episode_returns[:, 0, 0])
            trajs.append(traj)
            beliefs.append((mean, variance))
        return torch.stack(returns, 1), trajs, beliefs

    def adaptation_returns(self, env, steps: int, generator: torch.Generator,
                           policy_params=None) -> tuple[torch.Tensor, list[Trajectories]]:
        """The evaluation's view: returns of episodes ``1 … steps + 1`` of a trial of posterior sampling."""
        returns, trajs, _ = self.explore(env, steps + 1, generator)
        return returns, trajs

    @property
    def eval_steps(self) -> int:
        return self.options.eval_episodes - 1

    adaptation_unit = "episodes"

    def validation_metrics(self, env) -> dict[str, float]:
        """Mean return of the last episode of a trial on held-out tasks (``query_loss``: its negative)."""
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        returns, _, _ = self.explore(env, self.options.eval_episodes, generator)
        value = float(returns[:, -1].mean())
        return {"query_loss": -value, "return": value, "return_first": float(returns[:, 0].mean())}

    # ----- learning -----------------------------------------------------------------------------------
    def losses(self, rows: torch.Tensor, context: torch.Tensor, generator: torch.Generator) -> dict:
        """The pieces of one gradient step for tasks ``[T]``: RL transitions ``rows [T, B, width]`` and
        encoder context ``[T, N, context_size]``. Returns the critic's and the KL loss (to back-propagate
        together into Q and the encoder) and what the value and policy losses need."""
        net, o = self.networks, self.options
        obs, actions, rewards, nxt = self.split(rows)
        mean, variance = net.posterior(context)
        z = self.sample_z(mean, variance, generator)                     # [T, latent]
        zb = z[:, None, :].expand(*obs.shape[:-1], z.shape[-1])
        q1, q2 = net.q(obs, actions, zb)
        with torch.no_grad():
            target = o.reward_scale * rewards + o.gamma * net.v(nxt, zb, target=True)
        critic = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
        kl = kl_to_standard_normal(mean, variance).sum()
        return {"critic": critic, "kl": o.kl_lambda * kl, "kl_divergence": kl, "z": zb.detach(), "obs": obs,
                "z_mean": mean, "z_variance": variance}

    def actor_losses(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator) -> dict:
        """The value and policy losses at ``(obs, ⊥z)``, with the Q-functions as they are now."""
        net = self.networks
        noise = torch.randn((*obs.shape[:-1], net.action_size), generator=generator,
                            dtype=obs.dtype).to(obs.device)
        action, mean, log_std, log_pi, _ = net.act(obs, z, noise)
        q1, q2 = net.q(obs, action, z)
        min_q = torch.min(q1, q2)
        value = net.v(obs, z)
        value_loss = ((value - (min_q - log_pi).detach()) ** 2).mean()
        reg = self.options.policy_regularization * ((mean ** 2).mean() + (log_std ** 2).mean())
        policy_loss = (log_pi - min_q).mean() + reg
        return {"value": value_loss, "policy": policy_loss, "log_pi": log_pi.detach(),
                "min_q": min_q.detach()}

    uses_meta_lr = False  # its four optimizers have their own step sizes (policy_lr, q_lr, v_lr, context_lr)

    def outer_step(self, config, context, device):
        from metadapt.training.pearl_step import PEARLStep

        return PEARLStep(self, context, config.train.meta_batch_size, device)

    def scratch(self, seed: int) -> PEARL:
        """The same agent with freshly initialised networks (no meta-training)."""
        fresh = copy.deepcopy(self)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = fresh.networks
            like = next(net.parameters())
            fresh.networks = type(net)(net.observation_size, net.action_size, net.latent_size, net.hidden,
                                       net.encoder_hidden, net.next_observation,
                                       net.encoder_kind).to(like.device, like.dtype)
        fresh.name_in_config = "scratch"
        return fresh

    def describe(self) -> str:
        o = self.options
        return (f"`{self.name_in_config or self.name}`: soft actor-critic on a task variable z inferred by a "
                f"permutation-invariant encoder (KL weight {o.kl_lambda}, reward scale {o.reward_scale}, "
                f"γ {o.gamma}); {o.train_tasks} training tasks, {o.gradient_steps} gradient steps per "
                f"iteration on {o.batch_size} transitions and {o.context_size} context transitions per task"
                + (f" (on {o.context_episodes_share:.0%} of the steps the whole transitions of 1 … "
                   f"{o.context_episodes} episodes instead)" if o.context_episodes else "")
                + f"; test trials of {o.eval_episodes} episodes, the first {o.exploration_episodes} with z "
                f"from the prior" + (", sampling actions" if o.sample_exploration else ""))
