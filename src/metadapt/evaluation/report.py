"""Text outputs of an evaluation: the comparison tables (terminal and Markdown) and report.md."""
from __future__ import annotations

import math
from pathlib import Path

from metadapt.files import atomic_write_text

UNITS = {"accuracy": "accuracy %", "mse": "MSE", "loss": "query loss"}


def _columns(steps: int) -> list[int]:
    return sorted({s for s in (0, 1, 2, 5, 10, steps) if s <= steps})


def _cell(m: dict, k: int, metric: str) -> str:
    if k >= len(m["mean"]):
        k = len(m["mean"]) - 1
    mean, ci = m["mean"][k], m["ci95"][k]
    if not math.isfinite(mean) or mean > 1e6:
        return "diverged"
    if metric == "accuracy":
        return f"{100 * mean:.1f} ± {100 * ci:.1f}"
    return f"{mean:.3f} ± {ci:.3f}"


def _render(head: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]


def comparison_table(results: dict, markdown: bool = True) -> str:
    """One block per setting: the query score (95% CI) after selected numbers of steps
    (a metric-based method's single score stands in every column)."""
    metric, cols = results["metric"], _columns(results["steps"])
    unit = UNITS.get(metric, metric)
    lines = []
    for label, entry in results["settings"].items():
        head = ([f"{label} ({entry['tasks']} tasks), {unit}"]
                + [f"{k} step{'s' if k != 1 else ''}" for k in cols])
        rows = [[name] + [_cell(m, k, metric) for k in cols] for name, m in entry["methods"].items()]
        lines += _render(head, rows, markdown) + [""]
    return "\n".join(lines)


def speed_table(results: dict, markdown: bool = True) -> str:
    """Steps each method needs before its mean query score reaches each target."""
    metric = results["metric"]
    sign = "≥" if metric == "accuracy" else "≤"
    word = {"accuracy": "accuracy", "mse": "MSE"}.get(metric, "loss")
    shown = [f"{100 * t:g}%" if metric == "accuracy" else f"{t:g}" for t in results["targets"]]
    head = ["setting", "method"] + [f"steps to {word} {sign} {t}" for t in shown]
    rows = []
    for label, entry in results["settings"].items():
        for name, m in entry["methods"].items():
            reached = [m["steps_to_target"][str(t)] for t in results["targets"]]
            rows.append([label, name]
                        + [str(r) if r is not None else f"> {len(m['mean']) - 1}" for r in reached])
    return "\n".join(_render(head, rows, markdown))


def paired_table(results: dict, markdown: bool = True) -> str:
    """The first method minus each other one on the same tasks (mean difference and its 95% CI):
    a difference whose interval excludes 0 is one the evaluation resolves."""
    metric = results["metric"]
    scale, unit = (100, " (points)") if metric == "accuracy" else (1, "")
    rows = []
    for label, entry in results["settings"].items():
        for name, d in entry.get("paired", {}).items():
            cells = [f"{scale * m:+.3f} ± {scale * c:.3f}" if metric != "accuracy" else
                     f"{scale * m:+.1f} ± {scale * c:.1f}" for m, c in zip(d["mean_difference"], d["ci95"])]
            cells += [""] * (2 - len(cells))
            rows.append([label, f"{d['against']} − {name}"] + cells)
    if not rows:
        return ""
    head = ["setting", f"paired difference{unit}", "before adapting", "after the last step"]
    return "\n".join(_render(head, rows, markdown))


def source_commit() -> str:
    """The git commit of the metadapt source that ran (``+ changes`` if the checkout differs from it)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "not a git checkout (an installed package)"
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def provenance(run, seed) -> list[str]:
    """What produced this report: versions, commit, the evaluation seed, and every run's config."""
    import platform
    import sys

    import torch
    import yaml

    from metadapt.version import __version__

    runs = [run, *getattr(run, "compared", [])]
    lines = ["## Provenance", "",
             f"- metadapt {__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}, "
             f"{platform.system()} {platform.machine()}; source commit {source_commit()}.",
             f"- Evaluation seed {seed} (the test tasks of every method are the same draws).",
             "- Runs: " + ", ".join(f"`{r.path}`" for r in runs) + ".", ""]
    for r in runs:
        lines += [f"<details><summary>config of <code>{r.path}</code></summary>", "", "```yaml",
                  yaml.safe_dump(r.config.to_dict(), sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return lines


def adapts_with(name: str, algorithm) -> str | None:
    """How a gradient-based method takes its steps, in the report's words (``None``: no steps)."""
    rule, inner_lr = getattr(algorithm, "update_rule", None), getattr(algorithm, "inner_lr", None)
    if rule is None:
        return None if inner_lr is None else f"{name}: gradient steps of lr {inner_lr}"
    kind = type(rule).__name__
    if kind == "SGD":
        return f"{name}: plain gradient steps of lr {inner_lr}"
    learned = any(True for _ in rule.parameters())
    return (f"{name}: its update rule {kind}" + (", meta-learned" if learned else f", step size {inner_lr}"))


def write_report(run, training: dict | None, results: dict, figures: dict[str, str],
                 methods: dict | None = None) -> Path:
    """``report.md`` of an evaluated run: what was trained (in its task family's, model's and
    algorithm's own words), the results tables and the figures."""
    config, algorithm = run.config, run.algorithm
    tr = config.train
    model = getattr(algorithm, "model", None) or getattr(algorithm, "encoder", None)
    describe_model = getattr(model, "describe", None)
    lines = [
        f"# {config.name}: {config.algorithm.name} on {config.task.family}",
        "",
        *run.family.describe(),
        f"- Model: {describe_model() if describe_model else type(model).__name__}.",
        f"- Algorithm: {algorithm.describe()}, meta-batch {tr.meta_batch_size}, {tr.optimizer} meta lr "
        f"{tr.meta_lr}, seed {tr.seed}.",
    ]
    if config.loss is not None:
        lines.append(f"- Loss: `{config.loss}`.")
    if training:
        lines.append(
            f"- Meta-training: {training['steps']} iterations in {training['seconds']:.1f} s "
            f"({training['iterations_per_second']:.1f} meta-iterations/s); best validation query loss "
            f"{training['best_val_query_loss']:.4f}."
        )
    score = {"accuracy": "accuracy (%)", "mse": "MSE"}.get(results["metric"], "loss")
    methods = methods or {config.algorithm.name: algorithm}
    for name, other in methods.items():
        if other is not algorithm and name != "scratch":
            lines.append(f"- Compared on the same tasks: {other.describe()}.")
    ways = [w for w in (adapts_with(n, m) for n, m in methods.items() if n != "scratch") if w]
    adapts = f"each with its own update rule ({'; '.join(ways)})" if ways else "with their own update rules"
    stepped = results["steps"] > 0 and any(len(m["mean"]) > 1 for entry in results["settings"].values()
                                           for m in entry["methods"].values())
    how = (f"Gradient-based methods are adapted {adapts} on the same test tasks; `scratch` starts each task "
           "from a fresh random initialization; metric-based methods take no steps." if stepped else
           "Every method classifies the query examples from the support set directly (no gradient steps), on "
           "the same test tasks.")
    after = "after adaptation " if stepped else ""
    lines += ["", f"## Query {score} {after}(mean ± 95% Student-t CI over test tasks)", "", how, "",
              comparison_table(results)]
    if stepped:
        lines += ["## Learning speed", "", speed_table(results), ""]
    paired = paired_table(results)
    if paired:
        lines += ["## Paired comparison on the same tasks (mean difference ± 95% CI)", "",
                  "Each method is scored on the same test tasks, so the difference is taken task by task; "
                  "an interval that excludes 0 is a difference this evaluation resolves ("
                  + ("positive: the first method is more accurate" if results["metric"] == "accuracy"
                     else "negative: the first method's error is lower") + ").", "", paired, ""]
    lines += [
        "## Figures",
        "",
    ]
    lines += [f"![{title}]({rel})\n" for title, rel in figures.items()]
    compared = Path(run.path) / "optimizers.md"  # written by benchmarks/learned_optimizer.py
    if compared.is_file():
        lines += ["## Against hand-designed optimizers", "", compared.read_text(), "",
                  "![objective against steps](optimizers.png)", ""]
    lines += provenance(run, results.get("seed", run.config.eval.seed))
    path = Path(run.outputs) / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
