"""Figures: adaptation curves and example fits (the style of the MAML paper's Figure 2)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from metadapt.algorithms import Algorithm  # noqa: E402
from metadapt.tasks import SinusoidTasks  # noqa: E402
from metadapt.training.checkpoint import atomic_write_bytes  # noqa: E402

COLORS = {"maml": "tab:blue", "fomaml": "tab:cyan", "metasgd": "tab:purple", "anil": "tab:olive",
          "reptile": "tab:green", "pretrain": "tab:orange", "scratch": "tab:gray"}


def _save(fig, path: Path) -> None:
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_adaptation_curves(results: dict, path: Path) -> None:
    """Query MSE against adaptation steps, one panel per shot count, 95% CI bands."""
    shots = list(results["shots"])
    fig, axes = plt.subplots(1, len(shots), figsize=(4.2 * len(shots), 3.6), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], shots):
        entry = results["shots"][k]
        for name, m in entry["methods"].items():
            steps = range(len(m["mean"]))
            mean, ci = torch.tensor(m["mean"]), torch.tensor(m["ci95"])
            ax.plot(steps, mean, marker="o", ms=3, label=name, color=COLORS.get(name.split(":")[0]))
            ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2, color=COLORS.get(name.split(":")[0]))
        ax.set_title(f"{k}-shot, {entry['tasks']} test tasks")
        ax.set_xlabel("adaptation steps")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("query MSE (mean, 95% CI)")
    axes[0][-1].legend()
    fig.suptitle("Learning speed on new sine-wave tasks", y=1.04)
    _save(fig, path)


@torch.no_grad()
def plot_example_fits(methods: dict[str, Algorithm], tasks: SinusoidTasks, path: Path,
                      num_examples: int = 3, steps: tuple[int, ...] = (1, 10), seed: int = 0) -> None:
    """For a few test tasks: true curve, support points, and each method's prediction before
    adaptation and after ``steps`` gradient steps."""
    batch = tasks.sample(num_examples, torch.Generator().manual_seed(seed))
    lo, hi = tasks.x_range
    grid = torch.linspace(lo, hi, 200).view(1, -1, 1).expand(num_examples, -1, -1)
    truth = tasks.curve(grid, batch.info["amplitude"].view(-1, 1, 1), batch.info["phase"].view(-1, 1, 1))
    fig, axes = plt.subplots(len(methods), num_examples, figsize=(4.2 * num_examples, 3.2 * len(methods)),
                             squeeze=False, sharex=True)
    shades = ["tab:red", "tab:green", "tab:blue", "tab:purple"]
    for row, (name, algorithm) in enumerate(methods.items()):
        device = next(algorithm.parameters()).device
        adapted = algorithm.adapt_tasks(batch.support_x.to(device), batch.support_y.to(device), max(steps))
        curves = {k: adapted.predict(grid.to(device), step=k).cpu() for k in (0, *steps)}
        for col in range(num_examples):
            ax = axes[row][col]
            ax.plot(grid[col, :, 0], truth[col, :, 0], color="black", lw=1.5, label="ground truth")
            ax.plot(grid[col, :, 0], curves[0][col, :, 0], ":", color="gray", label="pre-update")
            for shade, k in zip(shades, steps):
                ax.plot(grid[col, :, 0], curves[k][col, :, 0], "--", color=shade,
                        label=f"{k} grad step{'s' if k > 1 else ''}")
            ax.scatter(batch.support_x[col, :, 0], batch.support_y[col, :, 0], marker="^", color="black",
                       zorder=5, label=f"{tasks.shots} support points")
            ax.set_title(f"{name}, task {col + 1}")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper right")
    _save(fig, path)
