"""Time per PEARL gradient step against the meta-batch size: metadapt's update, one batched
computation for all tasks of the meta-batch, against the same update as a loop over the tasks (each
task's losses computed and back-propagated on its own, the gradients averaged — how a per-task
implementation runs it), measured in one run.

    python benchmarks/pearl.py [--sizes 1 4 16 64] [--updates 20] [--threads 1]   # about two minutes

Both sides use the recipe configs/rl/pearl-point-robot.yaml with its networks (3×300, encoder 3×200)
unless ``--hidden`` is given, on buffers filled by the same collection. Writes benchmarks/pearl.json
and prints a table with the ratio.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metadapt.build import build_algorithm, build_family
from metadapt.config import config_from_file
from metadapt.training.distributed import Context
from metadapt.training.pearl_step import PEARLStep

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "configs/rl/pearl-point-robot.yaml"


def loop_update(step: PEARLStep, index: torch.Tensor, generator: torch.Generator) -> None:
    """``PEARLStep.update`` with every loss computed task by task (the mean over tasks of each
    task's mean is the batched mean: the tasks have equal batches)."""
    a, o, opt = step.algorithm, step.algorithm.options, step.optimizers
    rows = step.rl.sample(index, o.batch_size, generator)
    context = a.context_of(step.encoder.sample(index, o.context_size, generator))
    for name in ("q", "context", "v", "policy"):
        opt[name].zero_grad(set_to_none=True)
    parts = []
    for i in range(len(index)):
        part = a.losses(rows[i:i + 1], context[i:i + 1], generator)
        ((part["critic"] + part["kl"]) / len(index)).backward()
        parts.append(part)
    opt["q"].step()
    opt["context"].step()
    actors = [a.actor_losses(p["obs"], p["z"], generator) for p in parts]
    sum(x["value"] for x in actors).div(len(index)).backward(retain_graph=True)
    opt["v"].step()
    a.networks.update_target(o.tau)
    opt["policy"].zero_grad(set_to_none=True)
    sum(x["policy"] for x in actors).div(len(index)).backward()
    opt["policy"].step()


def timed(fn, step, size: int, updates: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    train_tasks = step.algorithm.options.train_tasks
    for _ in range(2):
        fn(step, torch.randint(train_tasks, (size,), generator=g), g)
    start = time.perf_counter()
    for _ in range(updates):
        fn(step, torch.randint(train_tasks, (size,), generator=g), g)
    return (time.perf_counter() - start) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=0, help="network width (0: the recipe's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"model.hidden={args.hidden}", f"model.encoder_hidden={args.hidden}"] if args.hidden else []
    config = config_from_file(RECIPE, overrides)
    family = build_family(config)
    rows = []
    for size in args.sizes:
        seconds = {}
        for name, fn in (("batched", PEARLStep.update), ("loop", loop_update)):
            algorithm = build_algorithm(config, family)
            step = PEARLStep(algorithm, Context(), size, torch.device("cpu"))
            g = torch.Generator().manual_seed(0)
            step.tasks = family.tasks("train").sample(algorithm.options.train_tasks, g)
            step._collect(torch.arange(algorithm.options.train_tasks), 200, False, True, g)
            seconds[name] = timed(fn, step, size, args.updates, 1)
        row = {"meta_batch": size, "batched_ms": 1e3 * seconds["batched"], "loop_ms": 1e3 * seconds["loop"],
               "ratio": seconds["loop"] / seconds["batched"]}
        rows.append(row)
        print(f"meta-batch {size:3d}: batched {row['batched_ms']:8.1f} ms, loop {row['loop_ms']:8.1f} ms, "
              f"loop / batched {row['ratio']:.2f}×", flush=True)
    out = {"threads": args.threads, "hidden": args.hidden or config.model.options.hidden,
           "torch": torch.__version__, "rows": rows}
    (HERE / "pearl.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
