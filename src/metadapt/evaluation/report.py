"""Text outputs of an evaluation: the comparison table (terminal and Markdown) and report.md."""
from __future__ import annotations

import math
from pathlib import Path

from metadapt.training.checkpoint import atomic_write_text


def _columns(steps: int) -> list[int]:
    return sorted({s for s in (0, 1, 2, 5, 10, steps) if s <= steps})


def _cell(m: dict, k: int) -> str:
    mean, ci = m["mean"][k], m["ci95"][k]
    if not math.isfinite(mean) or mean > 1e6:
        return "diverged"
    return f"{mean:.3f} ± {ci:.3f}"


def comparison_table(results: dict, markdown: bool = True) -> str:
    """One block per shot count: query MSE (95% CI) after selected numbers of steps."""
    cols = _columns(results["steps"])
    lines = []
    for shots, entry in results["shots"].items():
        head = [f"{shots}-shot ({entry['tasks']} tasks)"] + [f"{k} step{'s' if k != 1 else ''}" for k in cols]
        rows = [[name] + [_cell(m, k) for k in cols] for name, m in entry["methods"].items()]
        if markdown:
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
            lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append("")
    return "\n".join(lines)


def speed_table(results: dict, markdown: bool = True) -> str:
    """Steps each method needs before its mean query MSE reaches each target."""
    head = ["shots", "method"] + [f"steps to MSE ≤ {t:g}" for t in results["targets"]]
    rows = []
    for shots, entry in results["shots"].items():
        for name, m in entry["methods"].items():
            reached = [m["steps_to_target"][str(t)] for t in results["targets"]]
            rows.append([shots, name] + [str(r) if r is not None else f"> {results['steps']}" for r in reached])
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head] + rows)


def write_report(run_dir: Path, config: dict, training: dict | None, results: dict, figures: dict[str, str]) -> Path:
    a, t, tr = config["algorithm"], config["task"], config["train"]
    lines = [
        f"# {config['name']}: {a['name']} on sinusoid regression",
        "",
        f"- Tasks: preset `{t['preset']}`, {t['shots']} support + {t['queries']} query points per task in training.",
        f"- Model: MLP with hidden layers {config['model']['hidden']}.",
        f"- Algorithm: `{a['name']}`, inner lr {a['inner_lr']}, {a['inner_steps']} inner step(s), "
        f"meta-batch {tr['meta_batch_size']}, {tr['optimizer']} meta lr {tr['meta_lr']}, seed {tr['seed']}.",
    ]
    if training:
        lines.append(
            f"- Meta-training: {training['steps']} iterations in {training['seconds']:.1f} s "
            f"({training['iterations_per_second']:.0f} meta-iterations/s); best validation query MSE "
            f"{training['best_val_query_loss']:.3f}."
        )
    lines += [
        "",
        "## Query MSE after adaptation (mean ± 95% CI over test tasks)",
        "",
        f"Every method is adapted with plain gradient steps (inner lr {a['inner_lr']}) on the same "
        f"test tasks; `scratch` starts each task from a fresh random initialization.",
        "",
        comparison_table(results),
        "## Learning speed",
        "",
        speed_table(results),
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{title}]({rel})\n" for title, rel in figures.items()]
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
