"""A learned optimizer (Andrychowicz, Denil, Gómez, Hoffman, Pfau, Schaul, Shillingford & de Freitas,
"Learning to learn by gradient descent by gradient descent", NeurIPS 2016, arXiv:1606.04474).

The optimizee's parameters move by the output of a recurrent network ``m`` with parameters ``φ``:

    θ_{t+1} = θ_t + g_t,      [g_t; h_{t+1}] = m(∇_t, h_t; φ),      ∇_t = ∇_θ f(θ_t),

where ``m`` is a two-layer LSTM of 20 units applied coordinate-wise (every entry of ``θ`` has its
own hidden state and all share ``φ``), fed the preprocessed gradient (``meta_lstm.preprocess``) and
read out by a linear layer scaled by ``output_scale``. ``φ`` is trained on a distribution of
problems ``f`` by minimising ``L(φ) = E_f [Σ_{t=1}^{T} f(θ_t)]`` over ``T`` steps (``inner_steps``, the
paper's 100), with the gradients ``∇_t`` treated as constants (the paper's §2, no second
derivatives) and back-propagation truncated: every ``unroll`` steps (the paper's 20) the partial
sum is differentiated, ``φ`` takes one step of the meta-optimizer, and the optimization goes on from
the point reached with the graph cut (:class:`TruncatedUnrollStep`).

Every problem starts from a fresh draw of the model's own initialization (``fresh_init``), as in
the paper, so ``φ`` cannot specialise to one starting point. The draw is seeded by the task's data:
a task always starts from the same point, in training, validation, evaluation and in the
hand-designed optimizers' runs it is compared with.

With ``minibatch`` = ``b`` each step's gradient is taken on ``b`` examples of the task's support drawn
afresh (the paper's MNIST problems: stochastic minibatches of 128), ``∇_t = ∇_θ f_{B_t}(θ_t)``, and
training minimises ``Σ_t f_{B_{t+1}}(θ_{t+1})``, an unbiased estimate of ``Σ_t f(θ_{t+1})`` on the whole
support; the curves compared (validation, benchmark) are the whole support's objective. The draws are
seeded by the task too (:class:`StepBatches`), so every optimizer compared on a task sees the same
sequence of minibatches.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import vmap
from torch.utils._pytree import tree_map

from metadapt.algorithms.base import Adapted
from metadapt.algorithms.gradient import GradientLearner, GradientOptions
from metadapt.algorithms.meta_lstm import lstm_cell, preprocess
from metadapt.algorithms.update_rules import Params, UpdateRule
from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.batch import TaskBatch
from metadapt.training.steps import GradientStep, StepResult


@register("update_rule", "lstm-optimizer")
class LSTMOptimizer(UpdateRule):
    """The coordinate-wise LSTM optimizer of Andrychowicz et al. (2016): ``θ ← θ + s · W h``,
    ``h`` the top layer of a ``layers``-deep LSTM over ``preprocess(∇)`` (see the module docstring).
    ``inner_lr`` is not used: the step is learned."""

    def __init__(self, params: Params, lr: float, steps: int = 1, hidden: int = 20, layers: int = 2,
                 output_scale: float = 0.1, p: float = 10.0):
        super().__init__(params, lr, steps)
        self.hidden, self.output_scale, self.p = hidden, float(output_scale), float(p)
        self.cells = nn.ModuleList(nn.LSTMCell(2 if i == 0 else hidden, hidden) for i in range(layers))
        self.out = nn.Linear(hidden, 1)

    def init(self, params: Params):
        """Per parameter, each layer's ``(h, c)`` at zero."""
        return {n: [(p.new_zeros(*p.shape, self.hidden), p.new_zeros(*p.shape, self.hidden))
                    for _ in self.cells] for n, p in params.items()}

    def update(self, grads, state, params):
        new_params, new_state = {}, {}
        for n, g in grads.items():
            x, layers = preprocess(g.detach(), self.p), []
            for cell, hc in zip(self.cells, state[n]):
                hc = lstm_cell(cell, x, hc)
                layers.append(hc)
                x = hc[0]
            new_params[n] = params[n] + self.output_scale * self.out(x).squeeze(-1)
            new_state[n] = layers
        return new_params, new_state

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, layers={len(self.cells)}, output_scale={self.output_scale}"


@dataclass
class LearnedOptimizerOptions(GradientOptions):
    inner_steps: int = option(100, low=1, high=100_000,
                              help="steps of each optimization (the paper's horizon T = 100)")
    update_rule: str = option("lstm-optimizer",
                              help="lstm-optimizer (learned), or a hand-designed rule: sgd, momentum, "
                                   "nesterov, rmsprop, adam (their step size is inner_lr)")
    unroll: int = option(20, positive=True, high=10_000,
                         help="steps per truncated unroll, each one meta-update (the paper's 20)")
    fresh_init: bool = option(True, help="each task starts from a new draw of the model's initialization, "
                                         "seeded by the task (else from the model's fixed parameters)")
    minibatch: int = option(0, low=0, help="examples of the support each step's gradient is taken on, drawn "
                                           "afresh every step (the paper's MNIST minibatches of 128); "
                                           "0: the whole support every step")


def task_seed(*tensors: torch.Tensor) -> int:
    """A 63-bit seed from the bytes of a task's tensors: the same task, the same seed, on any run."""
    digest = hashlib.blake2b(digest_size=8)
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1


class StepBatches:
    """The data each optimization step's gradient is taken on, for a batch of tasks (``x [T, N, …]``):
    the whole support every step (``size`` 0), or ``size`` of its ``N`` examples drawn without
    replacement afresh for every step, from a generator per task seeded by the task's data (so every
    optimizer run on a task sees the same minibatches). ``current()`` is this step's data;
    ``advance()`` moves to the next step's."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int = 0):
        if size > x.shape[1]:
            raise UserError(f"algorithm.minibatch={size} is larger than the {x.shape[1]} examples of each "
                            "task's support; make it at most that, or 0 for the whole support")
        self.x, self.y, self.size = x, y, int(size)
        if self.size:
            self.generators = [torch.Generator().manual_seed(task_seed(x[i], y[i]) ^ 0x6D696E69)
                               for i in range(x.shape[0])]
            self.rows = torch.arange(x.shape[0], device=x.device)[:, None]
            self._draw()

    def _draw(self) -> None:
        n = self.x.shape[1]
        picks = torch.stack([torch.randperm(n, generator=g)[:self.size] for g in self.generators])
        picks = picks.to(self.x.device)
        self._current = self.x[self.rows, picks], self.y[self.rows, picks]

    def current(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._current if self.size else (self.x, self.y)

    def advance(self) -> None:
        if self.size:
            self._draw()


def _detached(tree):
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


@register("algorithm", "learned-optimizer")
class LearnedOptimizer(GradientLearner):
    """Learns the update rule alone (the model's parameters are never meta-learned): see the module
    docstring. Meta-training is :class:`TruncatedUnrollStep`; adaptation and evaluation run the
    learned rule for ``inner_steps`` (or any number of) steps from each task's own starting point."""

    name = "learned-optimizer"
    Options = LearnedOptimizerOptions

    def __init__(self, model: nn.Module, unroll: int = 20, fresh_init: bool = True,
                 update_rule="lstm-optimizer", inner_steps: int = 100, minibatch: int = 0, **kwargs):
        super().__init__(model, update_rule=update_rule, inner_steps=inner_steps, first_order=True, **kwargs)
        self.unroll, self.fresh_init, self.minibatch = int(unroll), bool(fresh_init), int(minibatch)
        self._init_source = [copy.deepcopy(model)]  # in a list: not a submodule, not in checkpoints

    # ----- where each task starts --------------------------------------------------------------
    def draw_initialization(self, seed: int) -> Params:
        """The model's own initialization (``reset_parameters`` of each layer) under ``seed``."""
        source = self._init_source[0]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for module in source.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
            return {n: p.detach().clone() for n, p in source.named_parameters()}

    def initial_params(self, support_x, support_y) -> Params:
        if not self.fresh_init:
            return super().initial_params(support_x, support_y)
        starts = [self.draw_initialization(task_seed(support_x[i], support_y[i]))
                  for i in range(support_x.shape[0])]
        like = dict(self.model.named_parameters())
        return {n: torch.stack([s[n] for s in starts]).to(like[n]) for n in starts[0]}

    # ----- the optimization, differentiable w.r.t. the rule ----------------------------------
    def step_batches(self, x: torch.Tensor, y: torch.Tensor) -> StepBatches:
        return StepBatches(x, y, self.minibatch)

    def unroll_losses(self, params: Params, state, batches: StepBatches, steps: int):
        """``steps`` steps of every task (``params`` with a task axis) from ``state``, each on
        ``batches.current()`` (advanced after every step): returns the objective after each step on the
        next step's data ``[T, steps]``, differentiable w.r.t. the rule's parameters (the gradients
        ``∇_t`` are constants), and the parameters and state reached."""
        losses, path = vmap(self.loss), []
        for _ in range(steps):
            point = {n: v.detach().requires_grad_(n in self.adapted_names) for n, v in params.items()}
            with torch.enable_grad():
                objective = losses(point, *batches.current())
                grads = torch.autograd.grad(objective.sum(), [point[n] for n in self.adapted_names])
            params, state = self._advance(params, dict(zip(self.adapted_names, grads)), state, objective)
            batches.advance()
            path.append(losses(params, *batches.current()))
        return torch.stack(path, dim=1), params, state

    def meta_loss(self, batch):
        """The paper's ``Σ_t f(θ_t)`` over the whole horizon, averaged over steps and tasks (not
        truncated: for validation and for users; training truncates)."""
        params = self.initial_params(batch.support_x, batch.support_y)
        batches = self.step_batches(batch.support_x, batch.support_y)
        losses, _, _ = self.unroll_losses(params, self._init_state(params), batches, self.inner_steps)
        return losses.mean(), {"query_loss": losses[:, -1].mean().item()}

    def validation_metrics(self, batch) -> dict[str, float]:
        """Validation scores the objective the rule minimises, ``f(θ_T)`` after ``inner_steps``
        (the support loss; a network's query loss can grow while its training loss falls, and the
        best checkpoint is the best optimizer, not the best-generalising network), and the query
        loss (and accuracy) beside it."""
        with torch.no_grad():
            curve, points = optimize(self, self.update_rule, batch, self.inner_steps, trajectory=True)
            prediction = vmap(lambda p, x: self.model_output(p, x))(points[-1], batch.query_x)
            query = vmap(self.loss_fn)(prediction, batch.query_y)
        metrics = {"query_loss": float(curve[:, -1].mean()), "heldout_loss": float(query.mean())}
        if not torch.is_floating_point(batch.query_y):
            metrics["accuracy"] = float((prediction.argmax(-1) == batch.query_y).float().mean())
        return metrics

    def adapt_tasks(self, support_x, support_y, steps=None, keep_steps: bool = True) -> Adapted:
        """The rule steps every task at once (as in training; vmapping the rule's many small
        operations per task is several times slower)."""
        steps = self.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        batch = TaskBatch(support_x, support_y, support_x[:, :1], support_y[:, :1])
        _, points = optimize(self, self.update_rule, batch, steps, trajectory=True)
        return Adapted(self.model, points, {n: b.detach() for n, b in self.buffers_dict().items()},
                       batched=True)

    def describe(self) -> str:
        rule = type(self.update_rule).__name__
        start = "a fresh initialization per task" if self.fresh_init else "the model's fixed parameters"
        lr = "" if isinstance(self.update_rule, LSTMOptimizer) else f", step size {self.inner_lr}"
        data = f" on minibatches of {self.minibatch}" if self.minibatch else ""
        return (f"`{self.name_in_config or self.name}`: update rule {rule}{lr}, {self.inner_steps} "
                f"steps{data} from {start}, truncated unrolls of {self.unroll} steps")

    def outer_step(self, config, context, device):
        kind = torch.optim.SGD if config.train.optimizer == "sgd" else torch.optim.Adam
        optimizer = kind(self.update_rule.parameters(), lr=config.train.meta_lr)
        return TruncatedUnrollStep(self, optimizer, context, config.train.meta_batch_size, device,
                                   config.train.clip_grad_norm)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.algorithm.options.unroll > config.algorithm.options.inner_steps:
            raise UserError(f"algorithm.unroll={config.algorithm.options.unroll} is longer than the "
                            f"optimization (algorithm.inner_steps={config.algorithm.options.inner_steps}); "
                            "make it at most inner_steps")
        support = getattr(config.task.options, "support", None)
        if support is not None and config.algorithm.options.minibatch > support:
            raise UserError(f"algorithm.minibatch={config.algorithm.options.minibatch} is larger than the "
                            f"task's support (task.support={support}); make it at most that, or 0 for the "
                            "whole support")


class TruncatedUnrollStep(GradientStep):
    """One meta-iteration of the learned optimizer: a fresh meta-batch of problems optimized for
    ``inner_steps`` steps; after every ``unroll`` steps the mean over tasks of ``Σ f(θ_t)`` over those
    steps is differentiated w.r.t. the rule, the meta-optimizer steps (the meta-gradient clipped to
    ``train.clip_grad_norm`` if set), and the unroll continues from the reached point and LSTM state
    with the graph cut. The updates happen inside ``step``; a non-finite unroll ends the iteration
    before its update (the trainer's ``on_nonfinite`` policy then applies; earlier unrolls' updates
    stand)."""

    def __init__(self, algorithm: LearnedOptimizer, optimizer, context, meta_batch_size, device,
                 clip_grad_norm=0.0):
        if context.world_size > 1:
            raise UserError("algorithm.name=learned-optimizer trains in one process; run it without torchrun")
        if not any(True for _ in algorithm.update_rule.parameters()):
            raise UserError(f"algorithm.update_rule={type(algorithm.update_rule).__name__} has nothing to "
                            "learn; train the learned optimizer (update_rule: lstm-optimizer) and compare "
                            "hand-designed rules with benchmarks/learned_optimizer.py")
        super().__init__(algorithm, optimizer, context, meta_batch_size, device, 0, clip_grad_norm)

    def step(self, tasks, generator) -> StepResult:
        a = self.algorithm
        batch = tasks.sample(self.meta_batch_size, generator).to(self.device)
        params = a.initial_params(batch.support_x, batch.support_y)
        state, done, total, last = a._init_state(params), 0, 0.0, float("nan")
        batches = a.step_batches(batch.support_x, batch.support_y)
        while done < a.inner_steps:
            k = min(a.unroll, a.inner_steps - done)
            losses, params, state = a.unroll_losses(params, state, batches, k)
            objective = losses.sum(1).mean()
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            finite = bool(torch.isfinite(objective)) and all(
                p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.parameters)
            if not finite:
                last = float(losses[:, -1].detach().mean())
                return StepResult(float(objective), {"query_loss": last}, False)
            if self.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_grad_norm)
            self.optimizer.step()
            params, state = _detached(params), _detached(state)
            losses = losses.detach()
            total, done, last = total + float(losses.sum()), done + k, float(losses[:, -1].mean())
        return StepResult(total / (done * batch.num_tasks), {"query_loss": last}, True)

    def commit(self) -> None:
        pass  # every unroll's update was applied inside the step


def optimize(algorithm: GradientLearner, rule: UpdateRule, batch, steps: int,
             trajectory: bool = False) -> torch.Tensor | tuple[torch.Tensor, list]:
    """Run ``rule`` for ``steps`` steps on every task of ``batch`` (``support_x [T, …]``) from the
    algorithm's starting points, each step's gradient on the algorithm's ``step_batches`` (the whole
    support, or seeded minibatches of it); returns the objective on the whole support before and
    after each step, ``[T, steps + 1]`` (no graph), and with ``trajectory`` the parameters after each
    step too. The rule steps all tasks at once on parameters with a task axis (only the model's
    forward is vmapped), so the learned rule runs as in training. The hand-designed optimizers and
    the learned one are compared with it."""
    params = algorithm.initial_params(batch.support_x, batch.support_y)
    losses, names = vmap(algorithm.loss), algorithm.adapted_names
    batches = algorithm.step_batches(batch.support_x, batch.support_y)
    state, path, points = rule.init({n: params[n] for n in names}), [], [params]
    for _ in range(steps):
        point = {n: v.detach().requires_grad_(n in names) for n, v in params.items()}
        with torch.enable_grad():
            objective = losses(point, *batches.current())
            grads = torch.autograd.grad(objective.sum(), [point[n] for n in names])
        if batches.size:
            with torch.no_grad():
                path.append(losses(point, batch.support_x, batch.support_y))
        else:
            path.append(objective.detach())
        batches.advance()
        with torch.no_grad():
            moving = {n: point[n].detach() for n in names}
            if getattr(rule, "takes_loss", False):
                moved, state = rule.update(dict(zip(names, grads)), state, moving, loss=objective.detach())
            else:
                moved, state = rule.update(dict(zip(names, grads)), state, moving)
            params = {**{n: v.detach() for n, v in params.items()}, **moved}
        points.append(params)
    with torch.no_grad():
        path.append(losses(params, batch.support_x, batch.support_y))
    curve = torch.stack(path, dim=1)
    return (curve, points) if trajectory else curve
