"""Validation score against training time for several runs, on one figure.

    python scripts/plot_time_curves.py --out curves.png "MAML++=runs/omniglot/maml++" \
        "Meta-LSTM=runs/omniglot/meta-lstm" --metric accuracy --target 0.95

Each ``LABEL=RUN`` reads ``RUN/metrics.jsonl`` (the trainer's validation rows and the training
seconds at each, as ``plots/training_curve.png`` uses) and draws ``--metric`` against minutes of
training; ``--target`` adds a dotted line. Accuracies are shown in percent.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metadapt.evaluation.plots import training_curve
from metadapt.files import atomic_write_bytes


def read_curve(run: Path, metric: str) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(seconds / 60, float(row[metric])) for seconds, row in training_curve(rows) if metric in row]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a label and a run directory")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--metric", default="accuracy", help="a key of the validation rows")
    parser.add_argument("--target", type=float, default=None, help="draw this value as a dotted line")
    parser.add_argument("--title", default="Validation against training time")
    args = parser.parse_args(argv)

    curves = {}
    for spec in args.runs:
        label, sep, run = spec.partition("=")
        if not sep or not label or not run:
            print(f"plot_time_curves.py: error: {spec!r} is not LABEL=RUN", file=sys.stderr)
            return 2
        path = Path(run)
        if not (path / "metrics.jsonl").is_file():
            print(f"plot_time_curves.py: error: {run} has no metrics.jsonl; give a run directory",
                  file=sys.stderr)
            return 2
        curves[label] = read_curve(path, args.metric)
        if not curves[label]:
            print(f"plot_time_curves.py: error: {run} has no validation rows with {args.metric!r}",
                  file=sys.stderr)
            return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    percent = args.metric == "accuracy"
    scale = 100 if percent else 1
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    for label, points in curves.items():
        minutes, values = zip(*points)
        ax.plot(minutes, [v * scale for v in values], marker="o", markersize=3, label=label)
    if args.target is not None:
        ax.axhline(args.target * scale, color="grey", linestyle=":", linewidth=1)
        ax.text(0.99, args.target * scale, f"target {args.target * scale:g}", va="bottom", ha="right",
                fontsize=8, color="grey", transform=ax.get_yaxis_transform())
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel(f"validation {args.metric}" + (" (%)" if percent else ""))
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(Path(args.out), lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
