"""Results across training seeds: one table of the mean over seeds and its spread.

``metadapt train RECIPE --seeds 0,1,2`` trains ``DIR/seed-0``, ``DIR/seed-1``, … (``DIR`` is
``--run-dir`` or ``runs/<name>``); ``metadapt eval DIR`` evaluates each on the same test tasks and
aggregates: for every setting, method and number of steps, the mean over seeds of the per-seed mean
score, with the Student-t 95% interval across seeds (the spread a reader should expect from a new
seed, not the per-task interval of one run), written to ``DIR/seeds.md`` and ``DIR/seeds.json``.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from metadapt.errors import UserError
from metadapt.evaluation.report import UNITS, _columns, _render
from metadapt.evaluation.stats import mean_ci
from metadapt.files import atomic_write_text, strict_json

SEED_DIR = re.compile(r"seed-(\d+)")


def seed_runs(folder: Path) -> list[Path]:
    """The ``seed-N`` runs inside ``folder``, by seed; empty if ``folder`` is not a seeds folder."""
    if not folder.is_dir() or (folder / "config.yaml").exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := SEED_DIR.fullmatch(p.name)) and (p / "config.yaml").is_file()]
    return [p for _, p in sorted(found)]


def aggregate(per_seed: dict[str, dict]) -> dict:
    """``{seed label: results}`` → the mean over seeds and its 95% interval for every setting, method and
    step of the supervised results (every seed evaluated with the same settings)."""
    first = next(iter(per_seed.values()))
    if first.get("kind") == "reinforcement":
        methods = {}
        for name in first["methods"]:
            values = torch.tensor([r["methods"][name]["mean"] for r in per_seed.values()],
                                  dtype=torch.float64)
            mean, ci = mean_ci(values)
            methods[name] = {"mean": float(mean), "ci95": float(ci), "per_seed": values.tolist()}
        return {"kind": "reinforcement", "seeds": list(per_seed), "methods": methods}
    out = {"metric": first["metric"], "steps": first["steps"], "seeds": list(per_seed), "settings": {}}
    for label, entry in first["settings"].items():
        out["settings"][label] = {"methods": {}}
        for name in entry["methods"]:
            try:
                curves = torch.tensor([r["settings"][label]["methods"][name]["mean"]
                                       for r in per_seed.values()], dtype=torch.float64)
            except (KeyError, ValueError, TypeError):
                raise UserError(f"the seed runs were evaluated differently ({label}, {name} is missing or "
                                "has another length in one of them); evaluate them with the same settings"
                                ) from None
            mean, ci = mean_ci(curves)
            out["settings"][label]["methods"][name] = {"mean": mean.tolist(), "ci95": ci.tolist(),
                                                       "per_seed_final": curves[:, -1].tolist()}
    return out


def seeds_table(summary: dict, markdown: bool = True) -> str:
    """The aggregate as a table: mean over seeds ± 95% interval across seeds."""
    n = len(summary["seeds"])
    if summary.get("kind") == "reinforcement":
        rows = [[name, f"{m['mean']:.2f} ± {m['ci95']:.2f}", ", ".join(f"{v:.2f}" for v in m["per_seed"])]
                for name, m in summary["methods"].items()]
        return "\n".join(_render([f"method ({n} seeds)", "return", "per seed"], rows, markdown))
    metric, cols = summary["metric"], _columns(summary["steps"])
    scale = 100 if metric == "accuracy" else 1
    lines = []
    for label, entry in summary["settings"].items():
        head = [f"{label}, {UNITS.get(metric, metric)} ({n} seeds)"] + [f"{k} steps" for k in cols]
        rows = []
        for name, m in entry["methods"].items():
            cells = []
            for k in cols:
                k = min(k, len(m["mean"]) - 1)
                mean, ci = scale * m["mean"][k], scale * m["ci95"][k]
                cells.append(f"{mean:.1f} ± {ci:.1f}" if metric == "accuracy" else f"{mean:.3f} ± {ci:.3f}")
            rows.append([name] + cells)
        lines += _render(head, rows, markdown) + [""]
    return "\n".join(lines)


def write_seeds(folder: Path, summary: dict) -> None:
    atomic_write_text(folder / "seeds.json", strict_json(summary, indent=1))
    title = f"# {folder.name}: {len(summary['seeds'])} training seeds\n\n"
    what = "Mean over seeds of each seed's mean score, ± the Student-t 95% interval across seeds.\n\n"
    atomic_write_text(folder / "seeds.md", title + what + seeds_table(summary) + "\n")
