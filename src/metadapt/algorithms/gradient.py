"""The inner loop shared by every gradient-based method, on any ``nn.Module``.

Adaptation of parameters ``θ`` to a task with support set ``(x_s, y_s)`` takes ``K`` steps

    θ_0 = θ,    θ_{k+1} = θ_k − α ⊙ ∇_θ L(f_{θ_k}(x_s), y_s),

generalised to any update rule (``update_rules.py``): plain SGD with a scalar ``α`` (MAML), a
learned tensor per parameter (Meta-SGD), or a user's rule. Only a chosen subset of parameters
moves (ANIL adapts the head alone); parameters with ``requires_grad=False`` never move, and a
parameter the support loss does not use gets a zero gradient. Parameters are plain dicts passed
through ``torch.func.functional_call``, so the user's module is never mutated.

Two task-parallel strategies compute the same numbers (a test checks it):

* ``"vmap"`` — one vectorised computation over the task axis; fastest for small models. In
  eager mode the forward passes are vmapped over per-task copies of the parameters and each
  inner gradient is one ``torch.autograd.grad`` for all tasks; under ``torch.compile`` and other
  ``torch.func`` transforms it is ``vmap`` of ``torch.func.grad``.
* ``"loop"`` — a Python loop over tasks with ``torch.autograd.grad``; faster for convolutional
  networks on CPU, where vmap turns per-task weights into grouped convolutions.

``"auto"`` picks ``loop`` when the model has a convolution or a BatchNorm layer and ``vmap``
otherwise. ``compile=True`` hands the meta-loss (inner loop, query loss and, through
AOTAutograd, its backward) to ``torch.compile``: one fused graph instead of hundreds of small
eager kernels, worth its compile time (tens of seconds) for small models trained for many
iterations (``benchmarks/peers.py`` measures it). ``vmap`` is refused for second-order
meta-gradients through BatchNorm: with torch 2.13 it returns wrong second-order gradients there (a
test shows it; the loop path is exact).

BatchNorm policy: normalisation uses the statistics of the batch it sees (the support set while
adapting, the query set when predicting). A BatchNorm layer that tracks running statistics would
have them moved in place by every task's inner steps, so it is refused with a message naming the
layer; :func:`use_batch_statistics` switches a model's BatchNorm layers to the policy.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from metadapt.algorithms.base import LOSSES, Adapted, Algorithm, Params
from metadapt.algorithms.update_rules import UpdateRule
from metadapt.errors import InvalidArgument, UserError
from metadapt.options import option
from metadapt.registry import lookup
from metadapt.resources import FLOAT_BYTES, parameter_count

STRATEGIES = ("auto", "vmap", "loop")


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters of the last submodule that owns parameters (the "head")."""
    owners = [name for name, module in model.named_modules()
              if any(True for _ in module.parameters(recurse=False))]
    if not owners:
        raise ValueError("the model has no parameters to adapt")
    head = owners[-1]
    prefix = f"{head}." if head else ""
    return [n for n, _ in model.named_parameters() if n.startswith(prefix) and "." not in n[len(prefix):]]


def resolve_strategy(strategy: str, model: nn.Module, first_order: bool = False) -> str:
    """The one place that decides how tasks run side by side: ``vmap`` or a ``loop``."""
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"task_parallel must be one of {STRATEGIES}, got {strategy!r}")
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    has_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if strategy == "vmap" and has_norm and not first_order:
        raise InvalidArgument("task_parallel=vmap gives wrong second-order gradients through BatchNorm in "
                              "this torch; use task_parallel=loop (or auto), or first-order adaptation")
    if strategy != "auto":
        return strategy
    return "loop" if has_conv or has_norm else "vmap"


def running_statistics_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]


def use_batch_statistics(model: nn.Module) -> nn.Module:
    """Switch every BatchNorm layer of ``model`` to metadapt's policy, in place: normalise with the
    statistics of the batch at hand and keep no running statistics (their buffers are removed)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return model


def select_adapted(model: nn.Module, adapt_only: str | Sequence[str] | None) -> list[str]:
    """Names of the parameters the inner loop moves: all trainable ones, the head's (``"head"``,
    ANIL) or those under the given name prefixes; frozen parameters (``requires_grad=False``) never."""
    named = [(n, p) for n, p in model.named_parameters()]
    names = [n for n, _ in named]
    if adapt_only is None:
        chosen = names
    elif adapt_only == "head":
        chosen = head_parameter_names(model)
    else:
        prefixes = [adapt_only] if isinstance(adapt_only, str) else list(adapt_only)
        chosen = [n for n in names if any(n == p or n.startswith(p.rstrip(".") + ".") for p in prefixes)]
        if not chosen:
            raise UserError(f"algorithm.adapt_only={prefixes} matches no parameter of the model; give name "
                            f"prefixes of its parameters, which are {', '.join(names)}")
    trainable = {n for n, p in named if p.requires_grad}
    return [n for n in chosen if n in trainable]


@dataclass
class GradientOptions:
    """Options of the gradient-based methods (the recipe's ``algorithm:`` keys)."""

    inner_lr: float = option(0.01, positive=True,
                             help="the inner loop's step size (initial value if learned)")
    inner_steps: int = option(1, low=1, high=1000,
                              help="adaptation steps in meta-training and, by default, at test time")
    adapt_only: str | list[str] | None = option(None,
                                                help='"head" (ANIL) or parameter name prefixes to adapt')
    task_parallel: str = option("auto", choices=STRATEGIES,
                                help="vmap, loop, or auto (loop for conv/BatchNorm)")


class GradientLearner(Algorithm):
    """Base of the gradient-based algorithms: holds the model and runs the inner loop.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to predictions.
        loss: a callable ``loss(prediction, target) -> scalar``, or ``"mse"`` / ``"cross_entropy"``.
        inner_lr: the step size ``α`` (the initial value of a learned one).
        inner_steps: ``K``, adaptation steps during meta-training and by default at test time.
        first_order: drop the second-derivative term of the meta-gradient.
        update_rule: ``"sgd"``, ``"metasgd"``, an import path, an :class:`UpdateRule` class or
            instance: how each inner step turns gradients into new parameters.
        adapt_only: names (or name prefixes) of the parameters the inner loop moves;
            ``None`` moves all, ``"head"`` the last layer's (ANIL).
        task_parallel: ``"auto"``, ``"vmap"`` or ``"loop"``.
        compile: run the meta-loss through ``torch.compile`` (same numbers, a test checks it).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | Callable = "mse",
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        update_rule: str | type | UpdateRule = "sgd",
        adapt_only: str | Sequence[str] | None = None,
        task_parallel: str = "auto",
        compile: bool = False,
    ):
        super().__init__()
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a callable")
        if inner_lr <= 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr}")
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
        tracking = running_statistics_layers(model)
        if tracking:
            raise UserError(
                f"model layer {tracking[0]!r} ({type(model.get_submodule(tracking[0])).__name__}) tracks "
                "running statistics, which every task's inner steps would move in place; build it with "
                "track_running_stats=False or pass the model through "
                "metadapt.algorithms.use_batch_statistics "
                "(BatchNorm then uses each support or query batch's own statistics, as MAML does)")
        self.model = model
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "loss")
        self.loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.strategy = resolve_strategy(task_parallel, model, first_order)
        self.compile = bool(compile)
        self._compiled_losses = None
        # functional_call resolves tied weights on every call (a walk over the module);
        # skip it when there are none
        self._tied = any(len(list(named(remove_duplicate=False))) != len(list(named()))
                         for named in (model.named_parameters, model.named_buffers))
        self.adapted_names = select_adapted(model, adapt_only)
        if not self.adapted_names:
            raise UserError(f"no trainable parameter is left to adapt (adapt_only={adapt_only!r}, frozen "
                            "parameters excluded); adapt other parameters or unfreeze some")
        if isinstance(update_rule, str):
            update_rule = lookup("update_rule", update_rule).target
        if isinstance(update_rule, type):
            moving = {n: p for n, p in model.named_parameters() if n in self.adapted_names}
            update_rule = update_rule(moving, self.inner_lr, self.inner_steps)
        self.update_rule = update_rule
        self._register_load_state_dict_pre_hook(_legacy_step_sizes)

    # ----- functional pieces --------------------------------------------------------------
    def meta_params(self) -> Params:
        return dict(self.model.named_parameters())

    def buffers_dict(self) -> Params:
        return dict(self.model.named_buffers())

    def model_output(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (params, self.buffers_dict()), (x,), tie_weights=self._tied)

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model_output(params, x), y)

    def _advance(self, params: Params, grads: Params, state: Any,
                 loss: torch.Tensor | None = None) -> tuple[Params, Any]:
        """Apply the update rule to the moving parameters; the others pass through. A rule that
        reads the support loss (``takes_loss``) gets it as a constant, with the tasks' leading axes."""
        moving = {n: params[n] for n in grads}
        if getattr(self.update_rule, "takes_loss", False):
            moved, state = self.update_rule.update(grads, state, moving, loss=loss.detach())
        else:
            moved, state = self.update_rule.update(grads, state, moving)
        return {**params, **moved}, state

    def _init_state(self, params: Params) -> Any:
        return self.update_rule.init({n: params[n] for n in self.adapted_names})

    def _step_functional(self, params: Params, state, x, y, first_order: bool) -> tuple[Params, Any]:
        """One inner step with ``torch.func.grad`` (usable under ``vmap``)."""
        moving = {n: params[n] for n in self.adapted_names}
        value = None
        if getattr(self.update_rule, "takes_loss", False):
            grads, value = grad_and_value(lambda m: self.loss({**params, **m}, x, y))(moving)
        else:
            grads = grad(lambda m: self.loss({**params, **m}, x, y))(moving)
        if first_order:
            grads = {n: g.detach() for n, g in grads.items()}
        return self._advance(params, grads, state, value)

    def _step_autograd(self, params: Params, state, x, y, first_order: bool,
                       create_graph: bool) -> tuple[Params, Any]:
        """One inner step with ``torch.autograd.grad`` (the per-task loop)."""
        moving = [params[n] for n in self.adapted_names]
        loss = self.loss(params, x, y)
        grads = torch.autograd.grad(loss, moving, create_graph=create_graph and not first_order,
                                    allow_unused=True, materialize_grads=True)
        return self._advance(params, dict(zip(self.adapted_names, grads)), state, loss)

    def adapt_one(self, params: Params, x, y, steps: int, first_order: bool, trajectory: bool = False):
        """Adapt ``params`` to one task (functional; vmap-able). Returns the last params or all."""
        out, state = [params], self._init_state(params)
        for _ in range(steps):
            new, state = self._step_functional(out[-1], state, x, y, first_order)
            out.append(new)
        return out if trajectory else out[-1]

    def task_losses(self, params: Params, batch, steps: int, first_order: bool,
                    per_step: bool = False) -> torch.Tensor:
        """Query loss of each task after adaptation, shape ``[T]`` (``per_step``: after each of the
        ``steps``, ``[T, steps]``), differentiable w.r.t. ``params``."""
        args = (params, batch.support_x, batch.support_y, batch.query_x, batch.query_y, steps, first_order)
        if per_step:
            args += (True,)
        if not self.compile:
            fn = self._batched_task_losses if self.strategy == "vmap" else self._task_losses
            if torch.is_grad_enabled():
                return fn(*args)
            with torch.enable_grad():  # the inner steps are gradients even when the caller wants none
                return fn(*args).detach()
        if self._compiled_losses is None:
            self._compiled_losses = torch.compile(self._task_losses, dynamic=False)
        return self._compiled_losses(*args)

    def _task_losses(self, params: Params, support_x, support_y, query_x, query_y, steps: int,
                     first_order: bool, per_step: bool = False) -> torch.Tensor:
        if self.strategy == "vmap":
            def one(p, sx, sy, qx, qy):
                if per_step:
                    path = self.adapt_one(p, sx, sy, steps, first_order, trajectory=True)
                    return torch.stack([self.loss(q, qx, qy) for q in path[1:]])
                return self.loss(self.adapt_one(p, sx, sy, steps, first_order), qx, qy)

            return vmap(one, in_dims=(None, 0, 0, 0, 0))(params, support_x, support_y, query_x, query_y)
        losses = []
        for i in range(support_x.shape[0]):
            p, state, path = params, self._init_state(params), []
            for _ in range(steps):
                p, state = self._step_autograd(p, state, support_x[i], support_y[i], first_order,
                                               create_graph=True)
                if per_step:
                    path.append(self.loss(p, query_x[i], query_y[i]))
            losses.append(torch.stack(path) if per_step else self.loss(p, query_x[i], query_y[i]))
        return torch.stack(losses)

    def _batched_task_losses(self, params: Params, support_x, support_y, query_x, query_y, steps: int,
                             first_order: bool, per_step: bool = False) -> torch.Tensor:
        """The eager ``vmap`` strategy: the same numbers as ``_task_losses``, faster. Only the
        forward passes are vmapped, over a copy of the parameters with a task axis; each inner
        gradient is one ``torch.autograd.grad`` of the summed task losses, which gives every task
        its own gradient because no task's loss depends on another task's copy."""
        tasks = support_x.shape[0]
        losses = vmap(self.loss)
        fast = {n: p.expand(tasks, *p.shape) for n, p in params.items()}
        state, path = self._init_state(fast), []
        for _ in range(steps):
            moving = [fast[n] for n in self.adapted_names]
            support_losses = losses(fast, support_x, support_y)
            grads = torch.autograd.grad(support_losses.sum(), moving,
                                        create_graph=not first_order, allow_unused=True,
                                        materialize_grads=True)
            fast, state = self._advance(fast, dict(zip(self.adapted_names, grads)), state, support_losses)
            if per_step:
                path.append(losses(fast, query_x, query_y))
        return torch.stack(path, dim=1) if per_step else losses(fast, query_x, query_y)

    def forward(self, support_x, support_y, query_x, query_y) -> torch.Tensor:
        """The mean query loss after ``inner_steps`` of adaptation (what ``torch.func`` transforms
        of the whole meta-loss, such as the compiled meta-step, differentiate)."""
        return self._task_losses(self.meta_params(), support_x, support_y, query_x, query_y,
                                 self.inner_steps, self.first_order).mean()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compiled_losses"] = None  # a compiled function is rebuilt on first use, not copied
        return state

    def supports(self, batch) -> bool:
        """A classifier's head fixes the number of ways it can be evaluated on."""
        if torch.is_floating_point(batch.support_y):
            return True
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        return not linears or linears[-1].out_features == int(batch.support_y.max()) + 1

    def describe(self) -> str:
        rule = type(self.update_rule).__name__
        return (f"`{self.name_in_config or self.name}`, inner lr {self.inner_lr}, "
                f"{self.inner_steps} inner step(s)"
                + (", first order" if self.first_order else "")
                + (f", update rule {rule}" if rule != "SGD" else ""))

    def memory_estimate(self, tasks: int, steps: int | None = None, trajectory: bool = False) -> float:
        """Bytes that adapting ``tasks`` tasks for ``steps`` steps must hold at least: per task, the
        fast parameters and their gradients at every step when second-order gradients keep the
        graph, else at one step; with the whole ``trajectory`` kept (evaluation), every step's
        parameters and one gradient."""
        steps = self.inner_steps if steps is None else steps
        params = parameter_count(self.model) * FLOAT_BYTES
        if trajectory:  # every step's parameters, and one gradient at a time
            return float(tasks) * (steps + 2) * params
        if self.strategy == "loop":
            tasks = 1  # meta_backward differentiates one task at a time
        held = 1 if self.first_order else steps + 1
        return float(tasks) * held * 2 * params

    # ----- adaptation at test time -----------------------------------------------------------
    def initial_params(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Params:
        """Parameters adaptation starts from for each task of ``support_x [T, ...]``, with a task
        axis (here the meta-learned initialization, shared)."""
        return {n: p.detach().expand(support_x.shape[0], *p.shape) for n, p in self.meta_params().items()}

    def adapt_tasks(self, support_x, support_y, steps=None, keep_steps: bool = True) -> Adapted:
        """Adapt to ``T`` tasks at once; builds no graph beyond each inner gradient. ``keep_steps``
        keeps the parameters after every step (for ``predict(step=k)``); without it only the start and
        the end are kept, so memory does not grow with the number of steps."""
        steps = self.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        start = self.initial_params(support_x, support_y)
        if self.strategy == "vmap":
            with torch.no_grad():
                fn = lambda p, x, y: self.adapt_one(p, x, y, steps, True, trajectory=keep_steps)  # noqa: E731
                traj = vmap(fn)(start, support_x, support_y)
            if not keep_steps:
                traj = [start, traj] if steps else [start]
        else:
            per_task = []
            for i in range(support_x.shape[0]):
                p = {n: v[i].detach().requires_grad_(n in self.adapted_names) for n, v in start.items()}
                path, state = [p], self._init_state(p)
                with torch.enable_grad():
                    for _ in range(steps):
                        p, state = self._step_autograd(p, state, support_x[i], support_y[i], True,
                                                       create_graph=False)
                        p = {n: v.detach().requires_grad_(n in self.adapted_names) for n, v in p.items()}
                        path = path + [p] if keep_steps else [path[0], p]
                per_task.append(path)
            traj = [{n: torch.stack([per_task[i][k][n].detach() for i in range(len(per_task))])
                     for n in start}
                    for k in range(len(per_task[0]))]
        kept = None if keep_steps else sorted({0, steps})
        return Adapted(self.model, traj, {n: b.detach() for n, b in self.buffers_dict().items()},
                       batched=True, loop=self.strategy == "loop", kept=kept)

    # ----- construction from a recipe -----------------------------------------------------
    @classmethod
    def from_config(cls, options, parts) -> GradientLearner:
        """Build from the recipe's options; ``parts`` gives the model and the loss. The model and then
        the update rule (whose learned parts may draw an initialization) are built under the run's seed."""
        return parts.seeded(lambda: cls(parts.model(), loss=parts.loss, **vars(options)))


def _legacy_step_sizes(state_dict, prefix, *args) -> None:
    """Checkpoints written before update rules held Meta-SGD's step sizes as ``inner_lrs.N``."""
    for key in [k for k in state_dict if k.startswith(prefix + "inner_lrs.")]:
        state_dict[key.replace(prefix + "inner_lrs.", prefix + "update_rule.lrs.")] = state_dict.pop(key)

