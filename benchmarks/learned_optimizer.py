"""A trained learned optimizer against the hand-designed ones, side by side (Andrychowicz et al.
2016, Figure 2 for quadratics, Figure 4 for a neural network).

    python benchmarks/learned_optimizer.py runs/learned-optimizer-quadratic

Each hand-designed optimizer (SGD, momentum, Nesterov, RMSprop, Adam: ``metadapt``'s update rules
of those names, equal to ``torch.optim``'s) gets its step size from a grid search on *training*
problems (``--grid-tasks`` of them, drawn apart from the test problems): the step size with the
lowest mean objective after ``--horizon`` steps (the learned optimizer's training horizon). Then
every optimizer, the learned one included, runs for ``--steps`` steps on the same ``--tasks``
held-out problems from the same starting points (``LearnedOptimizer.initial_params``). Written to
the run directory: ``optimizers.json`` (every curve's mean and 95% interval, the grid), ``optimizers.md``
(the table) and ``optimizers.png`` (the mean objective against steps on a log scale, with a band
from the first to the third quartile over problems).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import metadapt
from metadapt.algorithms.learned_optimizer import optimize
from metadapt.errors import UserError
from metadapt.files import atomic_write_text
from metadapt.registry import lookup

BASELINES = ("sgd", "momentum", "nesterov", "rmsprop", "adam")


def grid(low: float, high: float, per_decade: int) -> list[float]:
    n = round(math.log10(high / low) * per_decade)
    return [float(f"{low * 10 ** (i / per_decade):.3g}") for i in range(n + 1)]


def curve_stats(losses: torch.Tensor) -> dict:
    """Mean and 95% half-width (normal) of the objective at every step, over tasks."""
    losses = losses.double()
    mean = losses.mean(0)
    half = 1.96 * losses.std(0) / math.sqrt(losses.shape[0])
    quartiles = torch.nanquantile(losses, torch.tensor([0.25, 0.75], dtype=losses.dtype), dim=0)
    return {"mean": mean.tolist(), "ci95": half.tolist(), "median": losses.median(0).values.tolist(),
            "q25": quartiles[0].tolist(), "q75": quartiles[1].tolist(),
            "diverged": int((~torch.isfinite(losses[:, -1])).sum())}


def heldout(algorithm, points: list, problems, *steps: int) -> dict:
    """For classification problems: accuracy on each problem's held-out query set after ``steps``."""
    if torch.is_floating_point(problems.query_y):
        return {}
    out = {}
    with torch.no_grad():
        for k in steps:
            prediction = torch.func.vmap(algorithm.model_output)(points[k], problems.query_x)
            out[f"accuracy_{k}"] = float((prediction.argmax(-1) == problems.query_y).float().mean())
    return out


def finite_mean(losses: torch.Tensor) -> float:
    value = float(losses.double().mean())
    return value if math.isfinite(value) else math.inf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run trained with algorithm.name: learned-optimizer")
    parser.add_argument("--tasks", type=int, default=1000, help="held-out test problems")
    parser.add_argument("--grid-tasks", type=int, default=1000, help="training problems for the grid search")
    parser.add_argument("--horizon", type=int, default=None, help="steps the grid search scores (default: "
                                                                   "the run's inner_steps)")
    parser.add_argument("--steps", type=int, default=None, help="steps on the test problems (default: "
                                                                 "twice the horizon)")
    parser.add_argument("--grid", default="1e-4:3:4", help="LOW:HIGH:PER_DECADE of the step-size grid")
    parser.add_argument("--seed", type=int, default=None, help="test problems' seed (default: eval.seed)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which of the run's checkpoints to compare")
    args = parser.parse_args(argv)

    try:
        run = metadapt.load(args.run, which=args.checkpoint)
    except UserError as err:
        print(f"learned_optimizer.py: error: {err}", file=sys.stderr)
        return 2
    algorithm, family = run.algorithm, run.family
    if not hasattr(algorithm, "unroll_losses"):
        print(f"{args.run} was trained with {run.config.algorithm.name}, not learned-optimizer",
              file=sys.stderr)
        return 2
    algorithm.eval()
    horizon = args.horizon or algorithm.inner_steps
    steps = args.steps or 2 * horizon
    seed = run.config.eval.seed if args.seed is None else args.seed
    low, high, per_decade = args.grid.split(":")
    rates = grid(float(low), float(high), int(per_decade))
    train_problems = family.tasks("train").sample(args.grid_tasks, torch.Generator().manual_seed(seed + 7919))
    test_problems = family.tasks("test").sample(args.tasks, torch.Generator().manual_seed(seed))
    moving = {n: p for n, p in algorithm.model.named_parameters() if n in algorithm.adapted_names}

    results: dict = {"run": str(args.run), "horizon": horizon, "steps": steps, "tasks": args.tasks,
                     "grid_tasks": args.grid_tasks, "grid": rates, "optimizers": {}}
    started = time.perf_counter()
    for name in BASELINES:
        cls = lookup("update_rule", name).target
        scores = {}
        for lr in rates:
            curve = optimize(algorithm, cls(moving, lr, steps), train_problems, horizon)
            scores[lr] = finite_mean(curve[:, -1])
        best = min(scores, key=scores.get)
        if best in (rates[0], rates[-1]):
            print(f"warning: {name}'s best step size {best} is at the edge of the grid; widen --grid",
                  file=sys.stderr)
        test, points = optimize(algorithm, cls(moving, best, steps), test_problems, steps, trajectory=True)
        results["optimizers"][name] = entry = {"lr": best, "grid_scores": scores, **curve_stats(test),
                                               **heldout(algorithm, points, test_problems, horizon, steps)}
        print(f"{name:>9}: lr {best:<7g} objective after {horizon} steps {entry['mean'][horizon]:.4g}")
    with torch.no_grad():
        learned, points = optimize(algorithm, algorithm.update_rule, test_problems, steps, trajectory=True)
    results["optimizers"]["learned"] = entry = {"lr": None, **curve_stats(learned),
                                                **heldout(algorithm, points, test_problems, horizon, steps)}
    print(f"  learned: objective after {horizon} steps {entry['mean'][horizon]:.4g}")
    results["seconds"] = time.perf_counter() - started

    out = Path(args.run)
    atomic_write_text(out / "optimizers.json", json.dumps(results, indent=1))
    atomic_write_text(out / "optimizers.md", table(results))
    plot(results, out / "optimizers.png")
    print(table(results))
    return 0


def table(results: dict) -> str:
    h, s = results["horizon"], results["steps"]
    classification = f"accuracy_{h}" in results["optimizers"]["learned"]
    lines = [f"Objective on {results['tasks']} held-out problems (mean ± 95% CI); step sizes from a grid "
             f"search on {results['grid_tasks']} training problems ({len(results['grid'])} values, "
             f"{results['grid'][0]:g} to {results['grid'][-1]:g}), scored after {h} steps.",
             "",
             f"| optimizer | step size | after {h} steps | after {s} steps | mean over steps 1-{h} | "
             f"median after {h} | diverged by {s} |"
             + (f" held-out accuracy % after {h} / {s} |" if classification else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if classification else "")]
    for name, r in results["optimizers"].items():
        area = sum(r["mean"][1:h + 1]) / h
        lr = "learned" if r["lr"] is None else f"{r['lr']:g}"
        accuracy = (f" {100 * r[f'accuracy_{h}']:.1f} / {100 * r[f'accuracy_{s}']:.1f} |"
                    if f"accuracy_{h}" in r else "")
        lines.append(f"| {name} | {lr} | {r['mean'][h]:.4g} ± {r['ci95'][h]:.2g} | {r['mean'][s]:.4g} ± "
                     f"{r['ci95'][s]:.2g} | {area:.4g} | {r['median'][h]:.4g} | {r['diverged']} |{accuracy}")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    for name, r in results["optimizers"].items():
        mean = torch.tensor(r["mean"])
        half = torch.tensor(r["ci95"])
        steps = range(len(mean))
        style = {"color": "black", "linewidth": 2.2} if name == "learned" else {"linewidth": 1.3}
        label = "learned (LSTM)" if name == "learned" else f"{name} (lr {r['lr']:g})"
        (line,) = ax.plot(steps, mean, label=label, **style)
        if "q25" in r:  # the middle half of the problems: readable on a log scale, where mean ± CI is not
            low, high = torch.tensor(r["q25"]), torch.tensor(r["q75"])
        else:
            low, high = (mean - half).clamp_min(mean.min() / 10), mean + half
        ax.fill_between(steps, low, high, alpha=0.15, color=line.get_color(), linewidth=0)
    ax.axvline(results["horizon"], color="grey", linestyle=":", linewidth=1)
    ax.text(results["horizon"], ax.get_ylim()[1], " training horizon", va="top", fontsize=8, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("optimization step")
    band = ("the middle half of the problems" if "q25" in results["optimizers"]["learned"]
            else "95% CI of the mean")
    ax.set_ylabel(f"objective: mean over held-out problems\n(band: {band})")
    ax.set_title("Learned optimizer vs hand-designed ones (best step sizes)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
