"""Choose MAML-RL's test-time step sizes on goals of their own, never on the test goals.

    python scripts/maml_rl_step_sizes.py RUN [RUN ...] --schedules 0.5,0.25,0.25 0.5,0.2,0.1 [--goals 300]

Each run (its best checkpoint, or ``--checkpoint``) adapts to the same ``--goals`` tasks, drawn from
``--seed`` — which must differ from the run's ``eval.seed``, the seed of ``metadapt eval``'s test tasks
— once per schedule ``α_1,…,α_K``: the return after 0 … K policy-gradient steps, the k-th of size α_k
(``adaptation_returns``, the run's own sampling and trajectories). Every schedule plays from the same
stream (common random numbers), so the schedules' differences are sharper than their intervals. The
schedule ranked first has the best adaptation curve: the highest mean, over the runs and over the
adapted steps 1 … K alike, of the return after each step (a table reports every one of them); set it
with ``algorithm.eval_lrs=[…]`` and evaluate with ``metadapt eval``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

STREAM = 24_680  # the actions' stream, the same for every schedule


def parse_schedule(text: str) -> list[float]:
    from metadapt.errors import UserError

    try:
        sizes = [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--schedules {text!r}: give step sizes separated by commas, e.g. 0.5,0.25,0.25"
                        ) from None
    if not sizes or not all(0 < s < 100 for s in sizes):
        raise UserError(f"--schedules {text!r}: every step size must be in (0, 100)")
    return sizes


def rank(table: dict[str, list[list[float]]]) -> list[str]:
    """Schedules (keys of ``table``: per run, the mean return after 0 … K steps) best first: by the
    return after steps 1 … K averaged over those steps and over the runs."""
    def key(name):
        return sum(sum(r[1:]) / (len(r) - 1) for r in table[name]) / len(table[name])
    return sorted(table, key=key, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="MAML-RL runs (metadapt train's folders)")
    parser.add_argument("--schedules", nargs="+", required=True, metavar="A1,A2,…",
                        help="step-size schedules to compare, each as many sizes as steps")
    parser.add_argument("--goals", type=int, default=300, help="tasks to adapt to (default 300)")
    parser.add_argument("--seed", type=int, default=97_531, help="seed of those tasks (not the eval seed)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, step-N or a path")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args(argv)

    from metadapt.cli import one_line
    from metadapt.errors import UserError
    from metadapt.evaluation.stats import mean_ci
    from metadapt.training import load

    try:
        schedules = [parse_schedule(s) for s in args.schedules]
        if len({len(s) for s in schedules}) != 1:
            raise UserError("--schedules: give every schedule the same number of steps")
        if not 2 <= args.goals <= 100_000:
            raise UserError(f"--goals must be 2 … 100000, got {args.goals}")
        runs = []
        for path in args.runs:
            run = load(path, which=args.checkpoint, device="cpu")
            if not hasattr(run.algorithm, "adaptation_returns"):
                raise UserError(f"{path!r} is a {run.config.algorithm.name} run; this compares MAML-RL runs")
            if args.seed == run.config.eval.seed:
                raise UserError(f"--seed {args.seed} is {path!r}'s eval.seed, which draws its test tasks; "
                                "choose step sizes on other tasks")
            runs.append(run)
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2

    table: dict[str, list[list[float]]] = {}
    intervals: dict[str, list[list[float]]] = {}
    steps = len(schedules[0])
    for path, run in zip(args.runs, runs):
        env = run.family.sample(args.goals, torch.Generator().manual_seed(args.seed))
        for sizes in schedules:
            name = ",".join(f"{s:g}" for s in sizes)
            run.algorithm.eval_lrs = list(sizes)
            returns, _ = run.algorithm.adaptation_returns(env, steps, torch.Generator().manual_seed(STREAM))
            stats = [mean_ci(returns[:, k].double()) for k in range(steps + 1)]
            table.setdefault(name, []).append([float(m) for m, _ in stats])
            intervals.setdefault(name, []).append([float(c) for _, c in stats])
            print(f"{path}  [{name}]  " + "  ".join(f"{m:7.2f} ± {c:.2f}" for m, c in stats), flush=True)
    order = rank(table)
    print(f"\nmean over {len(runs)} run(s), {args.goals} tasks from seed {args.seed}; best first:")
    print("schedule".ljust(24) + "".join(f"{k} step{'s' * (k != 1)}".rjust(10) for k in range(steps + 1)))
    for name in order:
        means = [sum(r[k] for r in table[name]) / len(runs) for k in range(steps + 1)]
        print(name.ljust(24) + "".join(f"{m:10.2f}" for m in means))
    print(f"\nnext: algorithm.eval_lrs=[{order[0]}] in the recipe, then metadapt eval")
    if args.out:
        from metadapt.files import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(
            {"runs": args.runs, "checkpoint": args.checkpoint, "goals": args.goals, "seed": args.seed,
             "returns": table, "ci95": intervals, "ranking": order}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
