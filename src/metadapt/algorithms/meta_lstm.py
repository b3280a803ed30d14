"""The Meta-Learner LSTM (Ravi & Larochelle, "Optimization as a model for few-shot learning",
ICLR 2017): an LSTM whose cell state *is* the learner's parameters, the "learned optimizer" of
the founding article (its "Metro").

Gradient descent ``θ_t = θ_{t−1} − α ∇_t`` is an LSTM cell update ``c_t = f_t ⊙ c_{t−1} + i_t ⊙ c̃_t``
with ``c_t = θ_t``, ``f_t = 1``, ``i_t = α`` and ``c̃_t = −∇_t``. The Meta-Learner learns the gates,
coordinate by coordinate (every parameter entry shares the LSTM's weights):

    x_t = [preprocess(L_t), preprocess(∇_t)]                  (4 numbers per coordinate)
    h_t = LSTM₁(x_t, h_{t−1})                                   (a standard LSTM cell, 20 units)
    f_t = σ(W_F · [h_t, θ_{t−1}, f_{t−1}] + b_F)                (forget gate: shrink θ)
    i_t = σ(W_I · [h_t, θ_{t−1}, i_{t−1}] + b_I)                (input gate: the step size)
    θ_t = f_t ⊙ θ_{t−1} − i_t ⊙ ∇_t

``preprocess`` is Andrychowicz et al.'s (2016, appendix A; ``preprocess`` below); ``L_t`` and
``∇_t`` are the learner's support loss and gradient at ``θ_{t−1}``, both treated as constants: the
meta-gradient has no second derivatives (the paper's §3.2, "we ignore the gradient's dependence on
the meta-learner's parameters"). The initial cell state ``c_0`` is learned and is the learner's
initialization: here, the model's meta-learned parameters, as in MAML. The paper's gate-bias
initialization starts the learner near small-step gradient descent: ``b_F ~ U[4, 6]`` (``f ≈ 1``)
and ``b_I ~ U[−5, −4]`` (``i ≈ 0.01``); here ``b_I`` is drawn within ``±0.5`` of ``logit(inner_lr)``,
which is the paper's interval for the default ``inner_lr = 0.01``. ``W_F, W_I ~ U[−0.01, 0.01]``;
``f_0 = i_0 = 0``, ``h_0 = 0``.

BatchNorm, as in the paper: the learner normalises with each batch's own statistics, in training
and at test time (no running averages; metadapt's policy for every gradient-based method). The
reference code clips the meta-gradient's norm at 0.25 (``train.clip_grad_norm``).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from metadapt.algorithms.maml import MAML
from metadapt.algorithms.update_rules import Params, UpdateRule
from metadapt.registry import register


def preprocess(x: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al. (2016, appendix A): each entry ``x`` becomes two,
    ``(log|x| / p, sign x)`` if ``|x| ≥ e^{−p}`` and ``(−1, e^p x)`` otherwise (continuous at the
    boundary; the scale of gradients spans many orders of magnitude, their log does not)."""
    big = x.abs() >= math.exp(-p)
    magnitude = torch.where(big, x.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(x, -1.0))
    direction = torch.where(big, x.sign(), x * math.exp(p))
    return torch.stack([magnitude, direction], dim=-1)


def lstm_cell(cell: nn.LSTMCell, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``cell``'s update on inputs with any leading axes ``[..., input]`` (``nn.LSTMCell`` takes one)."""
    h, c = state
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def expand_loss(loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The loss ``[*lead]`` broadcast to every coordinate of ``grad [*lead, *shape]``."""
    return loss.reshape(*loss.shape, *([1] * (grad.dim() - loss.dim()))).expand_as(grad)


@register("update_rule", "meta-lstm")
class MetaLSTM(UpdateRule):
    """The Meta-Learner LSTM's update (see the module docstring): two layers, coordinate-wise."""

    takes_loss = True

    def __init__(self, params: Params, lr: float, steps: int = 1, hidden: int = 20):
        super().__init__(params, lr, steps)
        self.hidden = hidden
        self.lstm = nn.LSTMCell(4, hidden)
        self.w_forget = nn.Parameter(torch.empty(hidden + 2).uniform_(-0.01, 0.01))
        self.w_input = nn.Parameter(torch.empty(hidden + 2).uniform_(-0.01, 0.01))
        self.b_forget = nn.Parameter(torch.empty(()).uniform_(4.0, 6.0))
        centre = math.log(lr / (1 - lr)) if 0 < lr < 1 else -4.5
        self.b_input = nn.Parameter(torch.empty(()).uniform_(centre - 0.5, centre + 0.5))

    def init(self, params: Params):
        """Per parameter: the first layer's ``(h, c)`` and the previous gates ``(f, i)``, all zero."""
        return {n: (p.new_zeros(*p.shape, self.hidden), p.new_zeros(*p.shape, self.hidden),
                    torch.zeros_like(p), torch.zeros_like(p)) for n, p in params.items()}

    def gates(self, h: torch.Tensor, theta: torch.Tensor, f_prev: torch.Tensor, i_prev: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        H = self.hidden
        f = torch.sigmoid(h @ self.w_forget[:H] + theta * self.w_forget[H] + f_prev * self.w_forget[H + 1]
                          + self.b_forget)
        i = torch.sigmoid(h @ self.w_input[:H] + theta * self.w_input[H] + i_prev * self.w_input[H + 1]
                          + self.b_input)
        return f, i

    def update(self, grads, state, params, loss=None):
        new_params, new_state = {}, {}
        for n, g in grads.items():
            h, c, f_prev, i_prev = state[n]
            g = g.detach()
            x = torch.cat([preprocess(expand_loss(loss.detach(), g)), preprocess(g)], dim=-1)
            h, c = lstm_cell(self.lstm, x, (h, c))
            f, i = self.gates(h, params[n], f_prev, i_prev)
            new_params[n] = f * params[n] - i * g
            new_state[n] = (h, c, f, i)
        return new_params, new_state

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}"


@register("algorithm", "meta-lstm", update_rule="meta-lstm", first_order=True)
class MetaLearnerLSTM(MAML):
    """The paper's method: MAML's inner loop with the Meta-Learner LSTM as its update rule, first
    order; the LSTM and the learner's initialization are meta-learned together."""

    name = "meta-lstm"
    compilable = False
