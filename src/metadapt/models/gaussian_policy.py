"""A Gaussian policy over continuous actions, ``a ~ N(μ_θ(s), diag(σ²))``: an MLP for the mean and a
learned, state-independent log standard deviation — the policy of MAML for RL (Finn et al. 2017,
§5.3: two hidden layers of 100 ReLU units).

It is evaluated functionally, ``log_prob(params, obs, actions)``, with every tensor in ``params``
either shared or carrying a leading task axis, so the fast parameters of many tasks are one batched
computation (``torch.einsum``), not a loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metadapt.options import option
from metadapt.registry import register

Params = dict[str, torch.Tensor]


@dataclass
class GaussianPolicyOptions:
    hidden: list[int] = option([100, 100], positive=True, high=100_000,
                               help="units of each hidden layer (MAML: 100, 100)")
    init_std: float = option(1.0, positive=True, help="initial standard deviation of every action entry")
    init: str = option("torch", choices=("torch", "xavier"),
                       help="torch: PyTorch's default initialization of the layers; xavier: Xavier-uniform "
                            "weights and zero biases, as rllab (MAML's released RL code) initialises them")


@register("model", "gaussian-policy")
class GaussianPolicy(nn.Module):
    Options = GaussianPolicyOptions

    def __init__(self, observation_size: int, action_size: int, hidden: list[int] = (100, 100),
                 init_std: float = 1.0, init: str = "torch"):
        super().__init__()
        if init not in ("torch", "xavier"):
            raise ValueError(f"init must be torch or xavier, not {init!r}")
        sizes = [observation_size, *hidden, action_size]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))
        self.hidden, self.init_std, self.init = list(hidden), init_std, init
        if init == "xavier":
            self._xavier()

    def _xavier(self) -> None:
        with torch.no_grad():
            for layer in self.layers:
                nn.init.xavier_uniform_(layer.weight)
                layer.bias.zero_()

    def reset_parameters(self) -> None:
        """A fresh draw of the layers (the policy's initialization) and the initial σ."""
        for layer in self.layers:
            layer.reset_parameters()
        if self.init == "xavier":
            self._xavier()
        with torch.no_grad():
            self.log_std.fill_(math.log(self.init_std))

    @classmethod
    def from_options(cls, options: GaussianPolicyOptions, input_shape, outputs) -> GaussianPolicy:
        size = 1
        for d in input_shape:
            size *= int(d)
        return cls(size, outputs, options.hidden, options.init_std, options.init)

    def describe(self) -> str:
        return (f"a Gaussian policy: an MLP ({'-'.join(map(str, self.hidden))} ReLU) for the mean and a "
                "learned log standard deviation")

    def params(self) -> Params:
        return dict(self.named_parameters())

    @staticmethod
    def mean(params: Params, obs: torch.Tensor, tasks: bool) -> torch.Tensor:
        """``μ(s)`` for ``obs [T, …, D]``; with ``tasks`` the weights carry a leading task axis ``T``."""
        n = sum(1 for k in params if k.endswith(".weight"))
        x = obs
        for i in range(n):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            if tasks:
                shape = x.shape
                x = torch.einsum("tni,toi->tno", x.reshape(shape[0], -1, shape[-1]), w) + b[:, None, :]
                x = x.reshape(*shape[:-1], -1)
            else:
                x = x @ w.T + b
            if i < n - 1:
                x = torch.relu(x)
        return x

    @classmethod
    def log_prob(cls, params: Params, obs: torch.Tensor, actions: torch.Tensor, tasks: bool) -> torch.Tensor:
        """``log π(a | s)`` summed over action entries, shape ``obs.shape[:-1]``."""
        mu = cls.mean(params, obs, tasks)
        log_std = params["log_std"]
        if tasks:
            log_std = log_std.reshape(log_std.shape[0], *([1] * (mu.dim() - 2)), -1)
        z = (actions - mu) * torch.exp(-log_std)
        return (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @classmethod
    def kl(cls, old: Params, new: Params, obs: torch.Tensor, tasks: bool) -> torch.Tensor:
        """``KL(π_old(·|s) ‖ π_new(·|s))`` per observation."""
        mu_old, mu_new = cls.mean(old, obs, tasks), cls.mean(new, obs, tasks)
        ls_old, ls_new = old["log_std"], new["log_std"]
        if tasks:
            ls_old = ls_old.reshape(ls_old.shape[0], *([1] * (mu_old.dim() - 2)), -1)
            ls_new = ls_new.reshape(ls_new.shape[0], *([1] * (mu_new.dim() - 2)), -1)
        var_old, var_new = torch.exp(2 * ls_old), torch.exp(2 * ls_new)
        return (ls_new - ls_old + (var_old + (mu_old - mu_new) ** 2) / (2 * var_new) - 0.5).sum(-1)

    @classmethod
    def sample(cls, params: Params, obs: torch.Tensor, tasks: bool,
               generator: torch.Generator) -> torch.Tensor:
        mu = cls.mean(params, obs, tasks)
        log_std = params["log_std"]
        if tasks:
            log_std = log_std.reshape(log_std.shape[0], *([1] * (mu.dim() - 2)), -1)
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(log_std) * noise
