"""Returns and advantages over time, for every trajectory of a batch at once.

All functions take tensors whose last axis is time (``[..., N]``) and a ``mask`` that is 1 on the
steps that happened and 0 after an episode terminated, so early termination needs no ragged arrays.
"""
from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, gamma: float, mask: torch.Tensor | None = None,
                       dones: torch.Tensor | None = None) -> torch.Tensor:
    """``G_t = Σ_{k≥t} γ^{k-t} r_k`` over the steps that happened (a reversed loop over time); with
    ``dones`` (1 on the last step of each episode) the sum stops at the end of the step's episode,
    for episodes packed one after another: ``G_t = r_t + γ (1 − d_t) G_{t+1}``."""
    if mask is not None:
        rewards = rewards * mask
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        if dones is not None:
            running = running * (1 - dones[..., t])
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    return returns


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float,
        mask: torch.Tensor | None = None, last_value: torch.Tensor | None = None) -> torch.Tensor:
    """Generalized advantage estimation (Schulman et al., ICLR 2016):
    ``δ_t = r_t + γ V_{t+1} − V_t``, ``A_t = Σ_k (γλ)^k δ_{t+k}``, with ``V_{t+1} = 0`` past the
    last step that happened (``last_value`` bootstraps a sequence cut off rather than ended)."""
    if mask is None:
        mask = torch.ones_like(rewards)
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    zero = torch.zeros_like(rewards[..., 0])
    next_value, next_mask = (zero, zero) if last_value is None else (last_value, torch.ones_like(zero))
    for t in range(rewards.shape[-1] - 1, -1, -1):
        delta = rewards[..., t] + gamma * next_value * next_mask - values[..., t]
        running = delta + gamma * lam * next_mask * running
        advantages[..., t] = running * mask[..., t]
        next_value, next_mask = values[..., t], mask[..., t]
    return advantages
