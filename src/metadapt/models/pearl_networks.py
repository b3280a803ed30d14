"""The networks of PEARL (Rakelly, Zhou, Quillen, Finn & Levine, "Efficient off-policy
meta-reinforcement learning via probabilistic context variables", ICML 2019): a context encoder
that infers a task variable ``z`` from transitions, and a soft actor-critic conditioned on it.

* **Encoder** ``q_φ(z | c)``: an MLP maps each transition ``c_n = (s, a, r, s')`` to the mean and
  variance of an independent Gaussian factor ``Ψ_φ(z | c_n) = N(μ_n, σ²_n)`` (variance through a
  softplus); the posterior is their normalised product, permutation-invariant in the context,

      σ² = 1 / Σ_n σ_n⁻²,    μ = σ² Σ_n μ_n / σ²_n,

  and the information bottleneck is ``KL(q_φ(z | c) ‖ N(0, I))`` (§4.1, eq. 3–4). With
  ``encoder: full`` each factor's precision gains a rank-one term, ``Λ_n = diag(σ_n⁻²) + u_n u_nᵀ``
  (our extension), so one transition can pin down a *direction* of ``z`` — a linear constraint
  ``u_nᵀ z ≈ u_nᵀ μ_n`` — which diagonal factors can only express along the axes; the product is then

      Σ = (Σ_n Λ_n)⁻¹,    μ = Σ Σ_n Λ_n μ_n,

  a Gaussian with a full covariance (with ``z ⊇ (g, ‖g‖²)`` a distance ``r`` from a point ``s`` to a
  goal ``g`` is such a constraint: ``r² − ‖s‖² = ‖g‖² − 2 sᵀg``). The paper's
  alternative, a **recurrent encoder** (``encoder: recurrent``, §4.2 and its Appendix), reads the
  transitions in order — an MLP embedding, a GRU, and ``(μ, σ²)`` from its last state — and so can
  combine evidence no product of Gaussians can (two distances to an unseen goal, a ring each).
* **Soft actor-critic** (Haarnoja et al. 2018) on ``(s, z)``: twin Q-functions ``Q(s, a, z)``, a
  state value ``V(s, z)`` with a slowly tracking target copy, and a tanh-Gaussian policy
  ``a = tanh(u)``, ``u ~ N(μ(s, z), σ(s, z)²)``, whose log-density carries the change of variables
  ``log π(a) = log N(u) − Σ log(1 − tanh²u)``.

Layer sizes follow PEARL's code (oyster): three hidden layers of 200 units for the encoder and of
300 for the others, latent size 5. Every network takes inputs with any leading axes (tasks, batch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metadapt.options import option
from metadapt.registry import register

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the policy's log standard deviation is clamped (rlkit)
VARIANCE_FLOOR = 1e-7                   # each factor's variance, before the product (oyster)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def product_of_gaussians(mu: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised product of the Gaussian factors ``N(mu[..., n, :], var[..., n, :])`` over the
    factor axis ``-2``: ``(mean, variance)`` with that axis removed."""
    var = var.clamp(min=VARIANCE_FLOOR)
    variance = 1.0 / torch.reciprocal(var).sum(-2)
    return variance * (mu / var).sum(-2), variance


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    """The lower Cholesky factor; NaN (for the trainer's non-finite policy) where ``matrix`` is not
    positive definite, instead of an exception mid-run."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    return torch.where((info > 0)[..., None, None], torch.full_like(factor, float("nan")), factor)


def product_of_full_gaussians(mu: torch.Tensor, var: torch.Tensor,
                              direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised product of the factors ``N(mu_n, Λ_n⁻¹)``, ``Λ_n = diag(1 / var_n) + u_n u_nᵀ``
    (``u_n = direction[..., n, :]``), over the factor axis ``-2``: ``(mean [..., L], covariance
    [..., L, L])``. The algebra runs in float64 (precisions of many factors add up)."""
    dtype = mu.dtype
    mu, var, u = mu.double(), var.double().clamp(min=VARIANCE_FLOOR), direction.double()
    diagonal = torch.reciprocal(var)
    precision = torch.diag_embed(diagonal.sum(-2)) + torch.einsum("...ni,...nj->...ij", u, u)
    information = (diagonal * mu).sum(-2) + torch.einsum("...ni,...n->...i", u, (u * mu).sum(-1))
    covariance = torch.cholesky_inverse(_cholesky(precision))
    mean = (covariance @ information[..., None])[..., 0]
    return mean.to(dtype), covariance.to(dtype)


def is_full(mean: torch.Tensor, variance: torch.Tensor) -> bool:
    """Whether ``variance`` is a covariance matrix per ``mean`` (else the diagonal's entries)."""
    return variance.dim() == mean.dim() + 1


def sample_gaussian(mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``mean + S ε`` with ``S Sᵀ`` the covariance: ``√variance ⊙ ε`` for a diagonal one, the Cholesky
    factor for a full one (differentiable in both)."""
    if not is_full(mean, variance):
        return mean + variance.sqrt() * noise
    scale = _cholesky(variance.double()).to(mean.dtype)
    return mean + (scale @ noise[..., None])[..., 0]


def kl_to_standard_normal(mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, Σ) ‖ N(0, I))`` over the last axis: ``½ (tr Σ + ‖mean‖² − L − log det Σ)``, which
    for a diagonal ``Σ = diag(variance)`` is ``½ Σ (variance + mean² − 1 − log variance)``; a full
    ``Σ`` (``variance [..., L, L]``) goes through its Cholesky factor, in float64."""
    if not is_full(mean, variance):
        return 0.5 * (variance + mean ** 2 - 1 - variance.log()).sum(-1)
    scale = _cholesky(variance.double())
    log_det = 2 * torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    trace = torch.diagonal(variance.double(), dim1=-2, dim2=-1).sum(-1)
    kl = 0.5 * (trace + (mean.double() ** 2).sum(-1) - mean.shape[-1] - log_det)
    return kl.to(mean.dtype)


def tanh_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log π(tanh u)`` for ``u ~ N(mean, exp(log_std)²)``, summed over action entries: the Gaussian
    log-density of ``u`` minus ``Σ log(1 − tanh²u)``, computed stably as
    ``2 (log 2 − u − softplus(−2u))``."""
    z = (pre_tanh - mean) * torch.exp(-log_std)
    gaussian = (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    correction = (2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))).sum(-1)
    return gaussian - correction


@dataclass
class PEARLNetworksOptions:
    latent_size: int = option(5, positive=True, high=1_000, help="size of the task variable z (PEARL: 5)")
    hidden: int = option(300, positive=True, high=100_000,
                         help="units of each of the three hidden layers of the policy, Q- and value "
                              "functions (PEARL: 300)")
    encoder_hidden: int = option(200, positive=True, high=100_000,
                                 help="units of each of the encoder's three hidden layers (PEARL: 200)")
    next_observation: bool = option(True, help="the context holds the next state (s, a, r, s'), as the paper "
                                               "describes; oyster's default leaves it out")
    encoder: str = option("product", choices=("product", "full", "recurrent"),
                          help="product: independent Gaussian factors per transition, multiplied (PEARL's "
                               "default); full: the same with a rank-one term in each factor's precision "
                               "(a full-covariance posterior); recurrent: a GRU over the transitions in "
                               "order (best with algorithm.context_episodes, which keeps them in order)")


class RecurrentEncoder(nn.Module):
    """``(μ, σ²)`` of ``q(z | c)`` from a GRU over the context ``[T, N, context_size]``: two embedding
    layers, a GRU of ``hidden`` units, a linear head on its last state (σ² through a softplus)."""

    def __init__(self, context_size: int, hidden: int, latent_size: int):
        super().__init__()
        self.embed = nn.Sequential(mlp([context_size, hidden, hidden]), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * latent_size)
        self.latent_size = latent_size

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = context.shape[:-2]
        x = self.embed(context.reshape(-1, *context.shape[-2:]))
        _, last = self.gru(x)
        out = self.head(last[0]).reshape(*lead, 2 * self.latent_size)
        variance = nn.functional.softplus(out[..., self.latent_size:]).clamp(min=VARIANCE_FLOOR)
        return out[..., :self.latent_size], variance


@register("model", "pearl-networks")
class PEARLNetworks(nn.Module):
    """The encoder, twin Q-functions, value function (and its target) and policy of PEARL for
    observations of ``observation_size`` and actions of ``action_size`` entries."""

    Options = PEARLNetworksOptions

    def __init__(self, observation_size: int, action_size: int, latent_size: int = 5, hidden: int = 300,
                 encoder_hidden: int = 200, next_observation: bool = True, encoder: str = "product"):
        super().__init__()
        self.observation_size, self.action_size, self.latent_size = observation_size, action_size, latent_size
        self.next_observation = next_observation
        self.context_size = observation_size * (2 if next_observation else 1) + action_size + 1
        self.encoder_kind = encoder
        if encoder == "recurrent":
            self.encoder = RecurrentEncoder(self.context_size, encoder_hidden, latent_size)
        else:
            outputs = (3 if encoder == "full" else 2) * latent_size
            self.encoder = mlp([self.context_size, *[encoder_hidden] * 3, outputs])
        s, a, z, h = observation_size, action_size, latent_size, hidden
        self.qf1, self.qf2 = mlp([s + a + z, h, h, h, 1]), mlp([s + a + z, h, h, h, 1])
        self.vf = mlp([s + z, h, h, h, 1])
        self.target_vf = mlp([s + z, h, h, h, 1])
        self.target_vf.load_state_dict(self.vf.state_dict())
        self.target_vf.requires_grad_(False)
        self.policy_body = mlp([s + z, h, h, h])
        self.policy_mean, self.policy_log_std = nn.Linear(h, a), nn.Linear(h, a)
        for layer in (self.policy_mean, self.policy_log_std):  # rlkit's small initial heads
            nn.init.uniform_(layer.weight, -1e-3, 1e-3)
            nn.init.uniform_(layer.bias, -1e-3, 1e-3)
        self.hidden, self.encoder_hidden = hidden, encoder_hidden

    @classmethod
    def from_options(cls, options: PEARLNetworksOptions, input_shape: tuple[int, ...],
                     outputs: int) -> PEARLNetworks:
        """``input_shape``: one observation's shape; ``outputs``: the action size."""
        return cls(math.prod(input_shape), outputs, options.latent_size, options.hidden,
                   options.encoder_hidden, options.next_observation, options.encoder)

    def describe(self) -> str:
        recurrent = self.encoder_kind == "recurrent"
        kind = {"recurrent": "a recurrent context encoder (GRU of ",
                "full": "a context encoder with full-covariance factors ("}.get(self.encoder_kind,
                                                                               "a context encoder (")
        size = f"{self.encoder_hidden}" + ("" if recurrent else "×3")
        return (f"PEARL's networks: {kind}{size}, z of {self.latent_size}), "
                f"twin Q-functions, a value function with a target copy and a tanh-Gaussian policy "
                f"({self.hidden}×3 each)")

    # ----- the encoder ---------------------------------------------------------------------------------
    def context(self, obs, actions, rewards, next_obs) -> torch.Tensor:
        """Transitions as the encoder reads them: ``[…, context_size]``."""
        parts = [obs, actions, rewards[..., None]] + ([next_obs] if self.next_observation else [])
        return torch.cat(parts, -1)

    def posterior(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | c)`` for contexts ``[T, N, context_size]``: mean and variance ``[T, latent]`` (with
        ``encoder: full``, the covariance ``[T, latent, latent]``). An empty context (``N = 0``) gives
        the prior ``N(0, I)`` (its diagonal)."""
        if context.shape[-2] == 0:
            zeros = context.new_zeros(*context.shape[:-2], self.latent_size)
            return zeros, torch.ones_like(zeros)
        if self.encoder_kind == "recurrent":
            return self.encoder(context)
        out, n = self.encoder(context), self.latent_size
        mu, var = out[..., :n], nn.functional.softplus(out[..., n:2 * n])
        if self.encoder_kind == "full":
            return product_of_full_gaussians(mu, var, out[..., 2 * n:])
        return product_of_gaussians(mu, var)

    # ----- the actor-critic ----------------------------------------------------------------------------
    def act(self, obs: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None):
        """The tanh-Gaussian policy at ``(obs, z)``: ``(action, mean, log_std, log_prob, pre_tanh)``;
        ``noise`` (standard normal, the shape of the action) draws ``u = mean + σ·noise`` with the
        reparameterisation; ``None`` takes the mean action ``tanh(mean)`` (log_prob then None)."""
        h = torch.relu(self.policy_body(torch.cat([obs, z], -1)))
        mean = self.policy_mean(h)
        log_std = self.policy_log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        if noise is None:
            return torch.tanh(mean), mean, log_std, None, mean
        pre_tanh = mean + log_std.exp() * noise
        return torch.tanh(pre_tanh), mean, log_std, tanh_gaussian_log_prob(pre_tanh, mean, log_std), pre_tanh

    def q(self, obs, actions, z) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, actions, z], -1)
        return self.qf1(x)[..., 0], self.qf2(x)[..., 0]

    def v(self, obs, z, target: bool = False) -> torch.Tensor:
        return (self.target_vf if target else self.vf)(torch.cat([obs, z], -1))[..., 0]

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak averaging ``θ_target ← (1 − τ) θ_target + τ θ``."""
        for target, source in zip(self.target_vf.parameters(), self.vf.parameters()):
            target.lerp_(source, tau)
