"""Write ``benchmarks/RESULTS.md`` and ``benchmarks/speed.png`` from the ``results-*.json`` files
that ``benchmarks/peers.py`` leaves (one per device)."""
from __future__ import annotations

import json
from pathlib import Path

CASE_TITLES = {
    "sine-2nd-1": "sinusoid MAML, 2nd order, 1 step", "sine-2nd-5": "sinusoid MAML, 2nd order, 5 steps",
    "sine-1st-1": "sinusoid MAML, 1st order, 1 step", "sine-1st-5": "sinusoid MAML, 1st order, 5 steps",
    "conv-2nd-1": "Conv-4 MAML, 2nd order, 1 step", "conv-2nd-5": "Conv-4 MAML, 2nd order, 5 steps",
    "conv-1st-1": "Conv-4 MAML, 1st order, 1 step", "conv-1st-5": "Conv-4 MAML, 1st order, 5 steps",
    "proto": "ProtoNet 5-way 1-shot, 15 queries",
}
UNIT = {"proto": "episodes/s"}


def _speed(row: dict) -> float:
    return 1.0 / row["seconds_per_iteration"]


def _table(record: dict) -> list[str]:
    rows = [r for r in record["rows"] if "error" not in r]
    failed = [r for r in record["rows"] if "error" in r]
    cases = [c for c in CASE_TITLES if any(r["case"] == c for r in record["rows"])]
    lines = [
        "| case | contender | meta-iterations/s (median) | min–max | × learn2learn | peak memory MB "
        "| first call s |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        here = [r for r in rows if r["case"] == case]
        base = next((r for r in here if r["contender"] == "learn2learn"), None)
        reference = base or next((r for r in here if r["contender"] == "plain-loop"), None)
        for r in sorted(here, key=_speed, reverse=True):
            ratio = f"{_speed(r) / _speed(base):.1f}×" if base else "–"
            if case == "proto" and reference:
                ratio = f"{_speed(r) / _speed(reference):.2f}× plain loop"
            unit = UNIT.get(case, "")
            lines.append(
                f"| {CASE_TITLES[case]} | {r['contender']} | {_speed(r):.3g} {unit} | "
                f"{1 / r['max']:.3g}–{1 / r['min']:.3g} | {ratio} | {r['peak_memory_mb']:.0f} | "
                f"{r['first_call_s']:.2f} |")
        for r in failed:
            if r["case"] == case:
                lines.append(f"| {CASE_TITLES[case]} | {r['contender']} | failed: {r['error']} | | | | |")
    return lines


def _growth(record: dict) -> list[str]:
    if not record.get("growth"):
        return []
    unit = "allocated MB" if record["device"].startswith("cuda") else "resident MB"
    lines = ["", f"Memory over a long run ({unit} after 100 and after 1,000 meta-iterations or adaptations):",
             "", "| run | after 100 | after 1,000 | growth |", "|---|---|---|---|"]
    for g in record["growth"]:
        lines.append(f"| {g['label']} | {g['mb_100']:.0f} | {g['mb_1000']:.0f} | {100 * g['growth']:+.1f}% |")
    return lines


def _checks(record: dict) -> list[str]:
    if not record.get("checks"):
        return []
    lines = ["", "Agreement: largest difference of each contender's first meta-gradient from metadapt's,",
             "relative to its largest entry (float32):", ""]
    for case, diffs in record["checks"].items():
        lines.append(f"- {CASE_TITLES[case]}: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    return lines


def _chart(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    record = records[0]
    rows = [r for r in record["rows"] if "error" not in r]
    cases = [c for c in CASE_TITLES if c != "proto" and any(r["case"] == c for r in rows)]
    order = ["metadapt-compiled", "metadapt", "jax", "plain-loop", "torchopt", "higher",
             "learn2learn-keepmem", "learn2learn"]
    contenders = [c for c in order
                  if any(r["contender"] == c for r in rows)]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(len(contenders), 1)
    for k, name in enumerate(contenders):
        values = []
        for case in cases:
            here = {r["contender"]: r for r in rows if r["case"] == case}
            base = here.get("learn2learn")
            values.append(_speed(here[name]) / _speed(base) if name in here and base else np.nan)
        ax.bar(np.arange(len(cases)) + (k - (len(contenders) - 1) / 2) * width, values, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(cases)), [CASE_TITLES[c].replace(", ", "\n", 1) for c in cases], fontsize=8)
    ax.set_ylabel("meta-iterations/s, × learn2learn (log)")
    ax.set_title(f"Meta-training speed relative to learn2learn — {record['machine']}", fontsize=10)
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_report(folder: Path) -> Path:
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("results-*.json"))]
    records.sort(key=lambda r: r["device"] != "cpu")
    lines = ["# Benchmarks: metadapt beside learn2learn, higher, TorchOpt and JAX", "",
             "Written by `benchmarks/peers.py` (see its docstring for the method); rebuild with the command",
             "under each table. "
             "A meta-iteration is the meta-gradient over the whole meta-batch plus one Adam step.",
             "Sinusoid: MLP 1-40-40-1, meta-batch 25, 10 support + 10 query points, "
             "inner lr 0.01. Conv-4: 64",
             "filters, BatchNorm on batch statistics, meta-batch 32, 5 support + 75 query images of 1×28×28,",
             "inner lr 0.4. "
             "ProtoNet: Conv-4 embedding, 5-way 1-shot, 15 queries per class, one episode per step.",
             "Median of the timed repeats after warm-up "
             "(each repeat at least a second of consecutive meta-iterations),",
             "the repeats of a case alternating between its contenders' processes; "
             "min–max is the slowest and fastest",
             "repeat; peak memory is sampled on one more, untimed repeat; "
             "\"first call\" includes any compile time",
             "(short when Inductor's cache is warm from an earlier run). "
             "metadapt runs as its trainer does (fused Adam,",
             "`train.keep_freed_memory`); "
             "learn2learn-keepmem is learn2learn in a process with those allocator settings.", ""]
    for record in records:
        title = "CPU" if record["device"] == "cpu" else f"GPU ({record['machine']})"
        versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
        lines += [f"## {title}", "",
                  f"Machine: {record['machine']}; threads per contender: {record.get('threads', 'default')}, "
                  f"CPU cores used: {record.get('affinity', '?')}. Date: {record['date']}. "
                  f"Versions: {versions}.",
                  f"Command: `{record['command']}`.", ""]
        lines += _table(record) + _checks(record) + _growth(record) + [""]
    if not any(r["device"] != "cpu" for r in records):
        lines += ["## GPU", "", "Not measured yet: on a machine with a GPU, run",
                  "`python benchmarks/peers.py --device cuda` in the benchmark environment; "
                  "it adds this table.", ""]
    if records:
        _chart(records, folder / "speed.png")
        lines += ["![speed relative to learn2learn](speed.png)", ""]
    out = folder / "RESULTS.md"
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)
    return out
