"""The inner loop shared by every gradient-based method, on any ``nn.Module``.

Adaptation of parameters ``θ`` to a task with support set ``(x_s, y_s)`` takes ``K`` steps

    θ_0 = θ,    θ_{k+1} = θ_k − α ⊙ ∇_θ L(f_{θ_k}(x_s), y_s),

where ``α`` is a scalar (MAML) or a learned tensor per parameter (Meta-SGD), and only a chosen
subset of parameters may move (ANIL adapts the head alone). Parameters are plain dicts passed
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
iterations (``benchmarks/peers.py`` measures it). ``vmap`` is refused for second-order meta-gradients through BatchNorm: with torch
2.13 it returns wrong second-order gradients there (a test shows it; the loop path is exact).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from metadapt.algorithms.base import LOSSES, Adapted, Algorithm, Params

STRATEGIES = ("auto", "vmap", "loop")


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters of the last submodule that owns parameters (the "head")."""
    owners = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    if not owners:
        raise ValueError("the model has no parameters to adapt")
    head = owners[-1]
    prefix = f"{head}." if head else ""
    return [n for n, _ in model.named_parameters() if n.startswith(prefix) and "." not in n[len(prefix):]]


def resolve_strategy(strategy: str, model: nn.Module, first_order: bool = False) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"task_parallel must be one of {STRATEGIES}, got {strategy!r}")
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    has_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if strategy == "vmap" and has_norm and not first_order:
        raise ValueError("task_parallel=vmap gives wrong second-order gradients through BatchNorm in this torch; "
                         "use task_parallel=loop (or auto), or first-order adaptation")
    if strategy != "auto":
        return strategy
    return "loop" if has_conv or has_norm else "vmap"


class GradientLearner(Algorithm):
    """Base of the gradient-based algorithms: holds the model and runs the inner loop.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to predictions.
        loss: ``"mse"`` or ``"cross_entropy"``.
        inner_lr: the step size ``α`` (the initial value when ``learn_inner_lr``).
        inner_steps: ``K``, adaptation steps during meta-training and by default at test time.
        first_order: drop the second-derivative term of the meta-gradient.
        learn_inner_lr: meta-learn one step size per parameter entry (Meta-SGD).
        adapt_only: names (or name prefixes) of the parameters the inner loop moves;
            ``None`` moves all, ``"head"`` the last layer's (ANIL).
        task_parallel: ``"auto"``, ``"vmap"`` or ``"loop"``.
        compile: run the meta-loss through ``torch.compile`` (same numbers, a test checks it).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "mse",
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        adapt_only: str | Sequence[str] | None = None,
        task_parallel: str = "auto",
        compile: bool = False,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        if inner_lr <= 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr}")
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
        self.model = model
        self.loss_name = loss
        self.loss_fn = LOSSES[loss]
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.strategy = resolve_strategy(task_parallel, model, first_order)
        self.compile = bool(compile)
        self._compiled_losses = None
        # functional_call resolves tied weights on every call (a walk over the module); skip it when there are none
        self._tied = any(len(list(named(remove_duplicate=False))) != len(list(named()))
                         for named in (model.named_parameters, model.named_buffers))
        names = [n for n, _ in model.named_parameters()]
        if adapt_only is None:
            self.adapted_names = names
        elif adapt_only == "head":
            self.adapted_names = head_parameter_names(model)
        else:
            prefixes = [adapt_only] if isinstance(adapt_only, str) else list(adapt_only)
            self.adapted_names = [n for n in names if any(n == p or n.startswith(p.rstrip(".") + ".") for p in prefixes)]
            if not self.adapted_names:
                raise ValueError(f"adapt_only={prefixes} matches no parameter; the model has {names}")
        self.inner_lrs = (
            nn.ParameterList(
                nn.Parameter(torch.full_like(p, self.inner_lr)) for n, p in model.named_parameters() if n in self.adapted_names
            )
            if learn_inner_lr
            else None
        )

    # ----- functional pieces --------------------------------------------------------------
    def meta_params(self) -> Params:
        return dict(self.model.named_parameters())

    def buffers_dict(self) -> Params:
        return dict(self.model.named_buffers())

    def step_sizes(self) -> dict[str, torch.Tensor | float]:
        if self.inner_lrs is None:
            return {n: self.inner_lr for n in self.adapted_names}
        return dict(zip(self.adapted_names, self.inner_lrs))

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(functional_call(self.model, (params, self.buffers_dict()), (x,), tie_weights=self._tied), y)

    def _step_functional(self, params: Params, lrs, x, y, first_order: bool) -> Params:
        """One inner step with ``torch.func.grad`` (usable under ``vmap``)."""
        moving = {n: params[n] for n in self.adapted_names}
        grads = grad(lambda m: self.loss({**params, **m}, x, y))(moving)
        new = dict(params)
        for n, g in grads.items():
            new[n] = params[n] - lrs[n] * (g.detach() if first_order else g)
        return new

    def _step_autograd(self, params: Params, lrs, x, y, first_order: bool, create_graph: bool) -> Params:
        """One inner step with ``torch.autograd.grad`` (the per-task loop)."""
        moving = [params[n] for n in self.adapted_names]
        grads = torch.autograd.grad(self.loss(params, x, y), moving, create_graph=create_graph and not first_order)
        new = dict(params)
        for n, g in zip(self.adapted_names, grads):
            new[n] = params[n] - lrs[n] * g
        return new

    def adapt_one(self, params: Params, lrs, x, y, steps: int, first_order: bool, trajectory: bool = False):
        """Adapt ``params`` to one task (functional; vmap-able). Returns the last params or all."""
        out = [params]
        for _ in range(steps):
            out.append(self._step_functional(out[-1], lrs, x, y, first_order))
        return out if trajectory else out[-1]

    def task_losses(self, params: Params, batch, steps: int, first_order: bool) -> torch.Tensor:
        """Query loss of each task after adaptation, shape ``[T]``, differentiable w.r.t. ``params``."""
        args = (params, batch.support_x, batch.support_y, batch.query_x, batch.query_y, steps, first_order)
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
                     first_order: bool) -> torch.Tensor:
        lrs = self.step_sizes()
        if self.strategy == "vmap":
            def one(p, sx, sy, qx, qy):
                return self.loss(self.adapt_one(p, lrs, sx, sy, steps, first_order), qx, qy)

            return vmap(one, in_dims=(None, 0, 0, 0, 0))(params, support_x, support_y, query_x, query_y)
        losses = []
        for i in range(support_x.shape[0]):
            p = params
            for _ in range(steps):
                p = self._step_autograd(p, lrs, support_x[i], support_y[i], first_order, create_graph=True)
            losses.append(self.loss(p, query_x[i], query_y[i]))
        return torch.stack(losses)

    def _batched_task_losses(self, params: Params, support_x, support_y, query_x, query_y, steps: int,
                             first_order: bool) -> torch.Tensor:
        """The eager ``vmap`` strategy: the same numbers as ``_task_losses``, faster. Only the
        forward passes are vmapped, over a copy of the parameters with a task axis; each inner
        gradient is one ``torch.autograd.grad`` of the summed task losses, which gives every task
        its own gradient because no task's loss depends on another task's copy."""
        lrs = self.step_sizes()
        tasks = support_x.shape[0]
        losses = vmap(self.loss)
        fast = {n: p.expand(tasks, *p.shape) for n, p in params.items()}
        for _ in range(steps):
            moving = [fast[n] for n in self.adapted_names]
            grads = torch.autograd.grad(losses(fast, support_x, support_y).sum(), moving,
                                        create_graph=not first_order)
            for n, g in zip(self.adapted_names, grads):
                fast[n] = fast[n] - lrs[n] * g
        return losses(fast, query_x, query_y)

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

    # ----- adaptation at test time -----------------------------------------------------------
    def initial_params(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Params:
        """Parameters adaptation starts from for each task of ``support_x [T, ...]``, with a task
        axis (here the meta-learned initialization, shared)."""
        return {n: p.detach().expand(support_x.shape[0], *p.shape) for n, p in self.meta_params().items()}

    def adapt_tasks(self, support_x, support_y, steps=None) -> Adapted:
        """Adapt to ``T`` tasks at once; builds no graph beyond each inner gradient."""
        steps = self.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        start = self.initial_params(support_x, support_y)
        lrs = {n: (v.detach() if torch.is_tensor(v) else v) for n, v in self.step_sizes().items()}
        if self.strategy == "vmap":
            with torch.no_grad():
                fn = lambda p, x, y: self.adapt_one(p, lrs, x, y, steps, True, trajectory=True)  # noqa: E731
                traj = vmap(fn)(start, support_x, support_y)
        else:
            per_task = []
            for i in range(support_x.shape[0]):
                p = {n: v[i].detach().requires_grad_(n in self.adapted_names) for n, v in start.items()}
                path = [p]
                with torch.enable_grad():
                    for _ in range(steps):
                        p = self._step_autograd(p, lrs, support_x[i], support_y[i], True, create_graph=False)
                        p = {n: v.detach().requires_grad_(n in self.adapted_names) for n, v in p.items()}
                        path.append(p)
                per_task.append(path)
            traj = [{n: torch.stack([per_task[i][k][n].detach() for i in range(len(per_task))]) for n in start}
                    for k in range(steps + 1)]
        return Adapted(self.model, traj, {n: b.detach() for n, b in self.buffers_dict().items()}, batched=True)
