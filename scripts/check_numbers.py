"""Record the numbers every shipped recipe produces, or check that they have not changed.

A refactor must leave every number the library produces the same, bit for bit. This script runs
a short `metadapt train` of every recipe in configs/ (sinusoid ones for a few hundred
meta-iterations, Omniglot ones for a few on the real archives), then `metadapt eval` on a few test
tasks, `eval --compare` of MAML against pretrain (as the demo does), the compiled meta-step and
`metadapt adapt` on a CSV task, each in its own process with one thread. It collects every value of
`metrics.jsonl` (times excluded), `eval/results.json`, the final meta-parameters and the adapt
output into one JSON file.

    python scripts/check_numbers.py record numbers.json       # before the change
    python scripts/check_numbers.py check numbers.json        # after it: exit 1 on any difference

Omniglot cases need the archives: --omniglot DIR (default ../shared/data/omniglot); they are
skipped, and say so, when it does not exist. Numbers are bit-identical on one machine and build;
another CPU or torch build may round differently.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TIMES = {"seconds", "iterations_per_second"}
SINUSOID = ["train.iterations=200", "train.val_every=50", "train.val_tasks=50", "train.checkpoint_every=100",
            "train.log_every=25"]
OMNIGLOT = ["train.iterations=4", "train.val_every=2", "train.val_tasks=4", "train.checkpoint_every=2",
            "train.log_every=1", "train.meta_batch_size=2", "task.download=false"]


def cases(omniglot: Path | None) -> list[dict]:
    """Every recipe, plus the compiled step; each with its train overrides and eval options."""
    out = []
    for recipe in sorted((ROOT / "configs" / "sinusoid").glob("*.yaml")):
        out.append({"name": f"sinusoid-{recipe.stem}", "recipe": recipe, "overrides": SINUSOID,
                    "eval": ["--tasks", "50"]})
    out.append({"name": "sinusoid-maml-compiled", "recipe": ROOT / "configs/sinusoid/maml.yaml",
                "overrides": SINUSOID + ["train.compile=true", "train.iterations=50",
                                         "train.checkpoint_every=50"],
                "eval": ["--tasks", "20", "--steps", "3"]})
    if omniglot is not None:
        for recipe in sorted((ROOT / "configs" / "omniglot").glob("*.yaml")):
            out.append({"name": f"omniglot-{recipe.stem}", "recipe": recipe,
                        "overrides": OMNIGLOT + [f"task.data_dir={omniglot}"],
                        "eval": ["--tasks", "4", "--steps", "2"]})
    return out


def metadapt(*args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "metadapt", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"metadapt {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def parameters_digest(run: Path) -> dict[str, str]:
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["state"]
    return {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()[:16]
            for k, v in sorted(state.items())}


def collect(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "metrics": [{k: v for k, v in r.items() if k not in TIMES} for r in rows],
        "eval": json.loads((run / "eval" / "results.json").read_text()),
        "parameters": parameters_digest(run),
    }


def record(omniglot: Path | None) -> dict:
    numbers = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in cases(omniglot):
            run = tmp / case["name"]
            print(f"{case['name']} ...", flush=True)
            metadapt("train", str(case["recipe"]), *case["overrides"], "train.threads=1",
                     "--run-dir", str(run), "--no-progress")
            metadapt("eval", str(run), *case["eval"], "--no-progress")
            numbers[case["name"]] = collect(run)
        maml, pretrain = tmp / "sinusoid-maml", tmp / "sinusoid-pretrain"
        metadapt("eval", str(maml), "--compare", str(pretrain), "--tasks", "50", "--no-progress")
        numbers["sinusoid-maml-vs-pretrain"] = {
            "eval": json.loads((maml / "eval" / "results.json").read_text())}
        support, query = tmp / "support.csv", tmp / "query.csv"
        support.write_text("x,y\n" + "".join(f"{x / 2},{(x / 4) ** 2}\n" for x in range(-6, 7)))
        query.write_text("x\n" + "".join(f"{x / 3}\n" for x in range(-9, 10)))
        numbers["sinusoid-maml-adapt"] = {"output": metadapt("adapt", str(maml), "--support", str(support),
                                                             "--query", str(query), "--steps", "5")}
    return numbers


def differences(old, new, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = [f"{where}/{k}: only before" for k in old.keys() - new.keys()]
        out += [f"{where}/{k}: only after" for k in new.keys() - old.keys()]
        for k in old.keys() & new.keys():
            out += differences(old[k], new[k], f"{where}/{k}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return []  # NaN (a diverged task, or a CI over one task) is the same NaN
    return [] if old == new else [f"{where}: {old!r} before, {new!r} after"]


#: parameters renamed since the numbers were recorded (values must still match bit for bit)
RENAMED = {"inner_lrs.": "update_rule.lrs."}  # Meta-SGD's step sizes became an update rule's


def renamed(numbers: dict) -> dict:
    for case in numbers.values():
        if "parameters" in case:
            params = {}
            for key, digest in case["parameters"].items():
                for old, new in RENAMED.items():
                    key = new + key[len(old):] if key.startswith(old) else key
                params[key] = digest
            case["parameters"] = params
    return numbers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("record", "check"))
    parser.add_argument("path", help="the JSON file of numbers (written by record, read by check)")
    parser.add_argument("--omniglot", default=str(ROOT.parent / "shared" / "data" / "omniglot"),
                        help="folder with the Omniglot archives (cases skipped when absent)")
    parser.add_argument("--save", help="check: also write the numbers found to this file")
    args = parser.parse_args()
    omniglot = Path(args.omniglot).resolve()
    if not (omniglot / "images_background.zip").is_file():
        print(f"no Omniglot archives in {omniglot}: Omniglot recipes skipped")
        omniglot = None
    numbers = record(omniglot)
    if args.mode == "record":
        Path(args.path).write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(numbers)} cases in {args.path}")
        return 0
    if args.save:
        Path(args.save).write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    before = renamed(json.loads(Path(args.path).read_text()))
    if omniglot is None:
        before = {k: v for k, v in before.items() if not k.startswith("omniglot-")}
    found = differences(before, numbers)
    for line in found[:50]:
        print(line)
    print(f"{len(numbers)} cases compared with {args.path}: "
          + ("all bit-identical" if not found else f"{len(found)} differences"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
