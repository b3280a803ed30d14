"""Sine-wave regression tasks (Finn et al., 2017, "Model-Agnostic Meta-Learning", §5.1).

Each task is a curve ``y = A · sin(x ∓ φ)`` with amplitude ``A ~ U[a_lo, a_hi]`` and phase
``φ ~ U[p_lo, p_hi]``; inputs ``x ~ U[x_lo, x_hi]``. Preset ``"maml"`` (the default) is the MAML
paper's code: ``A · sin(x − φ)``, ``A ∈ [0.1, 5.0]``, ``φ ∈ [0, π]``, ``x ∈ [−5, 5]``. Preset
``"founding"`` is the founding article's task: ``A · sin(x + φ)`` with the same ranges and
``x ∈ [−π, π]``. With ``φ ~ U[0, π]`` the two signs are different task distributions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metadapt.options import option
from metadapt.registry import register
from metadapt.tasks.batch import TaskBatch
from metadapt.tasks.family import TaskFamily

PRESETS: dict[str, dict] = {
    "maml": {"amplitude": (0.1, 5.0), "phase": (0.0, math.pi), "x_range": (-5.0, 5.0), "phase_sign": -1.0},
    "founding": {"amplitude": (0.1, 5.0), "phase": (0.0, math.pi), "x_range": (-math.pi, math.pi),
                 "phase_sign": 1.0},
}


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=generator)


@dataclass(frozen=True)
class SinusoidTasks:
    """Task source for sine-wave regression: ``sample(n, generator) -> TaskBatch``.

    Tensors are float32 with shape ``[T, S, 1]`` / ``[T, Q, 1]``; ``info`` holds the
    per-task ``amplitude`` and ``phase`` so plots can draw the true curve.
    """

    shots: int = 10
    queries: int = 10
    amplitude: tuple[float, float] = PRESETS["maml"]["amplitude"]
    phase: tuple[float, float] = PRESETS["maml"]["phase"]
    x_range: tuple[float, float] = PRESETS["maml"]["x_range"]
    phase_sign: float = -1.0  # y = A · sin(x + phase_sign · φ)

    def __post_init__(self) -> None:
        if self.shots < 1 or self.queries < 1:
            raise ValueError(f"sinusoid tasks need shots >= 1 and queries >= 1, got {self.shots} and "
                             f"{self.queries}")
        for name in ("amplitude", "phase", "x_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"sinusoid {name} range must have low <= high, got ({lo}, {hi})")

    @classmethod
    def preset(cls, name: str, shots: int = 10, queries: int = 10) -> SinusoidTasks:
        if name not in PRESETS:
            raise ValueError(f"unknown sinusoid preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(shots=shots, queries=queries, **PRESETS[name])

    def curve(self, x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """The true function of a task (broadcasts over a leading task axis)."""
        return amplitude * torch.sin(x + self.phase_sign * phase)

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        amplitude = _uniform((num_tasks, 1, 1), self.amplitude, generator)
        phase = _uniform((num_tasks, 1, 1), self.phase, generator)
        support_x = _uniform((num_tasks, self.shots, 1), self.x_range, generator)
        query_x = _uniform((num_tasks, self.queries, 1), self.x_range, generator)
        return TaskBatch(
            support_x=support_x,
            support_y=self.curve(support_x, amplitude, phase),
            query_x=query_x,
            query_y=self.curve(query_x, amplitude, phase),
            info={"amplitude": amplitude.view(-1), "phase": phase.view(-1)},
        )


@dataclass
class SinusoidOptions:
    preset: str = option("maml", choices=tuple(PRESETS),
                         help='"maml": A·sin(x − φ), x ~ U[-5, 5] (the MAML code); "founding": A·sin(x + φ), '
                              'x ~ U[-pi, pi] (the founding article)')
    shots: int = option(10, positive=True, high=100_000, help="support points per task in meta-training")
    queries: int = option(10, positive=True, high=100_000, help="query points per task in meta-training")


@register("task", "sinusoid")
class SinusoidFamily(TaskFamily):
    """Sine-wave regression: one distribution of curves serves training, validation and test."""

    Options = SinusoidOptions
    default_model = "mlp"
    models = ("mlp",)

    def tasks(self, split="train", shots=None, queries=None, ways=None) -> SinusoidTasks:
        o = self.options
        return SinusoidTasks.preset(o.preset, shots=o.shots if shots is None else shots,
                                    queries=o.queries if queries is None else queries)

    def example_figures(self, methods, settings, run_dir, steps, eval_config):
        from metadapt.evaluation.plots import plot_example_fits

        figures = {}
        for shots in eval_config.shots[:2]:
            rel = f"plots/example_fits_{shots}shot.png"
            plot_example_fits(methods, self.tasks(shots=shots), run_dir / rel,
                              steps=tuple(s for s in (1, 10) if s <= steps) or (steps,),
                              seed=eval_config.seed)
            figures[f"Example fits, {shots}-shot"] = rel
        return figures

    def describe(self) -> list[str]:
        o = self.options
        return [f"- Tasks: sinusoid preset `{o.preset}`, {o.shots} support + {o.queries} query points per "
                "task in training."]
