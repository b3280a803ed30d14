"""Figures: adaptation curves and example fits (the style of the MAML paper's Figure 2)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from metadapt.algorithms import Algorithm  # noqa: E402
from metadapt.files import atomic_write_bytes  # noqa: E402
from metadapt.tasks import SinusoidTasks  # noqa: E402

#: Okabe & Ito's colour-blind-safe palette, by the method's position
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]


def _save(fig, path: Path) -> None:
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_scores(results: dict, path: Path) -> dict[str, list[float]]:
    """Methods that take no adaptation steps (metric-based, or ``eval.steps: 0``): their query score
    in every setting as grouped bars with 95% CI error bars; returns the bar heights drawn."""
    labels = list(results["settings"])
    names = list(dict.fromkeys(name for entry in results["settings"].values() for name in entry["methods"]))
    accuracy = results["metric"] == "accuracy"
    scale = 100 if accuracy else 1
    # about 1.4 inches per setting, so that "20-way 5-shot (1000 tasks)" labels never overlap
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(labels) * max(1.0, len(names) ** 0.5)), 3.6))
    width = 0.8 / max(1, len(names))
    drawn = {}
    for i, name in enumerate(names):
        xs, heights, errors = [], [], []
        for j, label in enumerate(labels):
            m = results["settings"][label]["methods"].get(name)
            if m is not None:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                heights.append(scale * m["mean"][-1])
                errors.append(scale * m["ci95"][-1])
        ax.bar(xs, heights, width * 0.95, yerr=errors, capsize=3, label=name,
               color=PALETTE[i % len(PALETTE)], hatch=["", "//", "..", "xx", "\\\\", "++"][i % 6],
               edgecolor="white")
        for x, h, e in zip(xs, heights, errors):  # the value above its error bar, clear of both
            ax.text(x, h + e, f"{h:.1f}" if accuracy else f"{h:.3f}", ha="center", va="bottom", fontsize=8)
        drawn[name] = heights
    ticks = [f"{label}\n({results['settings'][label]['tasks']} tasks)" for label in labels]
    ax.set_xticks(range(len(labels)), ticks)
    unit = {"accuracy": "accuracy %", "mse": "MSE"}.get(results["metric"], "loss")
    ax.set_ylabel(f"query {unit} (mean, 95% CI)")
    if accuracy:
        ax.set_ylim(0, 110)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title("Query score on new tasks (no adaptation steps)")
    _save(fig, path)
    return drawn


def plot_adaptation_curves(results: dict, path: Path) -> None:
    """Query score against adaptation steps, one panel per setting, 95% CI bands. A method
    that takes no steps (metric-based) is drawn as a flat line at its score; when no method takes
    steps, the scores are drawn as bars (:func:`plot_scores`)."""
    if all(len(m["mean"]) == 1 for entry in results["settings"].values() for m in entry["methods"].values()):
        plot_scores(results, path)
        return
    labels = list(results["settings"])
    accuracy = results["metric"] == "accuracy"
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.6), squeeze=False)
    names = list(dict.fromkeys(name for entry in results["settings"].values() for name in entry["methods"]))
    for ax, label in zip(axes[0], labels):
        entry = results["settings"][label]
        for name, m in entry["methods"].items():
            mean, ci = torch.tensor(m["mean"]), torch.tensor(m["ci95"])
            if accuracy:
                mean, ci = 100 * mean, 100 * ci
            color = PALETTE[names.index(name) % len(PALETTE)]
            if len(mean) == 1:
                steps = [0, results["steps"]]
                mean, ci = mean.repeat(2), ci.repeat(2)
                ax.plot(steps, mean, "--", label=f"{name} (no steps)", color=color)
            else:
                steps = list(range(len(mean)))
                ax.plot(steps, mean, marker="o", ms=3, label=name, color=color)
            ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2, color=color)
        ax.set_title(f"{label}, {entry['tasks']} test tasks")
        ax.set_xlabel("adaptation steps")
        if not accuracy:
            ax.set_yscale("log")
            # a diverging method leaves the plot instead of flattening the rest
            start = max(m["mean"][0] for m in entry["methods"].values())
            finite = [v for m in entry["methods"].values() for v in m["mean"] if 0 < v < float("inf")]
            ax.set_ylim(0.7 * min(finite), 3 * start)
        ax.grid(alpha=0.3, which="both")
    unit = {"accuracy": "accuracy %", "mse": "MSE"}.get(results["metric"], "loss")
    axes[0][0].set_ylabel(f"query {unit} (mean, 95% CI)")
    axes[0][-1].legend()
    fig.suptitle("Learning speed on new tasks", y=1.04)
    _save(fig, path)


def training_curve(rows: list[dict]) -> list[tuple[float, dict]]:
    """``(training seconds, validation row)`` for every validation row of a ``metrics.jsonl``.
    Rows written before the trainer logged ``seconds`` get ``step / iterations_per_second`` of
    the nearest training row instead (the same clock, read from the throughput)."""
    train = [r for r in rows if r.get("split") == "train" and r.get("iterations_per_second")]
    out = []
    for r in rows:
        if r.get("split") != "val":
            continue
        if "seconds" in r:
            out.append((float(r["seconds"]), r))
        elif train:
            near = min(train, key=lambda t: abs(t["step"] - r["step"]))
            out.append((r["step"] / near["iterations_per_second"], r))
    return out


def plot_training_curve(rows: list[dict], path: Path, title: str) -> dict | None:
    """Meta-training against meta-iterations (training time on the top axis): the training and the
    validation query loss (RL: return per trial) and, for classification, the validation accuracy
    beside them. Returns the series drawn (``None`` when the log has no validation rows)."""
    curve = training_curve(rows)
    if not curve:
        return None
    accuracy = all("accuracy" in r for _, r in curve)
    rewarded = all("return" in r for _, r in curve)  # reinforcement learning: the return, higher is better
    key = "return" if rewarded else "query_loss"
    finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    train = [(r["step"], r[key]) for r in rows if r.get("split") == "train" and finite(r.get(key))]
    val = [(r["step"], r[key]) for _, r in curve if finite(r.get(key))]
    series = {"train": train, "val": val}
    fig, axes = plt.subplots(1, 2 if accuracy else 1, figsize=(10 if accuracy else 5.5, 3.6), squeeze=False,
                             sharex=True)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), color=PALETTE[0], lw=1, alpha=0.8, label="training (meta-batch)")
    if val:
        ax.plot(*zip(*val), color=PALETTE[1], marker="o", ms=3, label="validation (held-out tasks)")
    ax.set_ylabel("return per trial" if rewarded else "query loss after adaptation")
    if not rewarded and all(v > 0 for _, v in train + val):
        ax.set_yscale("log")
    if accuracy:
        series["val_accuracy"] = [(r["step"], 100 * r["accuracy"]) for _, r in curve]
        axes[0][1].plot(*zip(*series["val_accuracy"]), color=PALETTE[1], marker="o", ms=3)
        axes[0][1].set_ylabel("validation query accuracy %")
    seconds = [(r["step"], t) for t, r in curve if r["step"] > 0]
    for a in axes[0]:
        a.set_xlabel("meta-iterations")
        a.grid(alpha=0.3, which="both")
        if seconds and seconds[-1][1] > 0:  # training time on the top axis (the run's average pace)
            per_step = seconds[-1][1] / seconds[-1][0] / 60
            top = a.secondary_xaxis("top", functions=(lambda s, k=per_step: s * k,
                                                      lambda m, k=per_step: m / k))
            top.set_xlabel("minutes", fontsize=8)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10, y=1.06)
    _save(fig, path)
    return series


def _show_image(ax, image: torch.Tensor) -> None:
    """A ``[C, H, W]`` image in [0, 1]: RGB as it is; one channel as dark strokes on white
    (Omniglot's strokes are stored bright)."""
    if image.shape[0] == 3:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    else:
        ax.imshow(image[0].numpy(), cmap="gray_r")


@torch.no_grad()
def plot_example_episodes(algorithm: Algorithm, batch, path: Path, num_episodes: int = 2,
                          queries_shown: int = 10) -> dict:
    """For a few test episodes: the support images, one column per class (headed "class c"), then
    query images placed in the column of their *true* class, each marked ✓ (blue) when predicted
    right and ✗ with the predicted class (orange) when wrong — shape and a colour-blind-safe colour.
    Returns ``{episode: [(true, predicted), …]}`` of the queries shown."""
    device = next(algorithm.parameters()).device
    batch = batch[:num_episodes]
    adapted = algorithm.adapt_tasks(batch.support_x.to(device), batch.support_y.to(device))
    predicted = adapted.predict(batch.query_x.to(device)).argmax(-1).cpu()
    ways = int(batch.support_y.max()) + 1
    shots = batch.support_x.shape[1] // ways
    per_class = max(1, min(-(-queries_shown // ways), batch.query_x.shape[1] // ways))
    rows_per_episode = shots + per_class
    fig, axes = plt.subplots(num_episodes * rows_per_episode, ways,
                             figsize=(1.25 * ways, 1.3 * num_episodes * rows_per_episode + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shown: dict = {}
    for e in range(num_episodes):
        top = e * rows_per_episode
        for i in range(shots * ways):
            c, k = int(batch.support_y[e, i]), i % shots
            ax = axes[top + k][c]
            _show_image(ax, batch.support_x[e, i])
            head = f"episode {e + 1}, class {c}" if c == 0 else f"class {c}"
            ax.set_title(head if k == 0 else "", fontsize=8)
        filled = [0] * ways
        shown[e] = []
        for index in range(batch.query_x.shape[1]):
            truth = int(batch.query_y[e, index])
            if filled[truth] >= per_class:
                continue
            guess = int(predicted[e, index])
            ax = axes[top + shots + filled[truth]][truth]
            filled[truth] += 1
            shown[e].append((truth, guess))
            _show_image(ax, batch.query_x[e, index])
            right = guess == truth
            ax.set_title("✓ query" if right else f"✗ said {guess}", fontsize=8, fontweight="bold",
                         color=PALETTE[0] if right else PALETTE[3])
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(PALETTE[0] if right else PALETTE[3])
                spine.set_linestyle("-" if right else "--")
                spine.set_linewidth(1.5 if right else 2.5)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    name = algorithm.name_in_config or algorithm.name
    fig.suptitle(f"{name}: example {ways}-way {shots}-shot test episodes\ntop rows: support images of each "
                 "class; below: queries in their true class's column", fontsize=9)
    _save(fig, path)
    return shown


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
    shades = PALETTE[:4]
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
            if row == len(methods) - 1:  # the x axes are shared: label the bottom row only
                ax.set_xlabel("x")
            ax.set_ylabel("y")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper right")
    _save(fig, path)
