"""A MAML-RL 2D-navigation run on the MAML paper's own 40 test goals, paired goal by goal with its results.

    python scripts/maml_rl_paper_goals.py RUN [--checkpoint best] [--repeats 25] [--out FILE.json]

Finn et al. (2017) released the per-goal returns behind their 2D-navigation table
(``icml/icml_point_results_maml.pkl`` in cbfinn/maml_rl; copied to
``scripts/finn2017_navigation_per_goal.json``): the average return per episode on each of 40 goals after
0 … 4 policy-gradient steps. Their test script draws those goals as ``numpy.random.seed(1);
numpy.random.uniform(-0.5, 0.5, size=(40, 2))``; the returns before adaptation confirm it (their
correlation with the goals' distances is −0.9996). These goals lie farther out than the square's
average (mean distance 0.401 against 0.382), so they are harder than ``metadapt eval``'s uniform ones.

Each goal is played ``--repeats`` times with the run's evaluation protocol (``adaptation_returns``:
its step sizes and sampling, from the recipe's eval seed), its returns averaged, and the difference
to the paper's return on the same goal gives a paired mean and 95% Student-t interval over the 40 goals
— tighter than comparing two means, because the goals' difficulty cancels. The paper's per-goal figures
are single evaluations, so their sampling noise is part of that interval.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).with_name("finn2017_navigation_per_goal.json")


def paper_goals() -> torch.Tensor:
    """The 40 goals of the released test script (numpy's legacy generator, seed 1)."""
    return torch.from_numpy(np.random.RandomState(1).uniform(-0.5, 0.5, size=(40, 2))).float()


def paper_returns() -> torch.Tensor:
    """``[steps + 1, 40]`` the paper's average return per episode on each goal after 0 … 4 steps."""
    return torch.tensor(json.loads(DATA.read_text())["returns"], dtype=torch.float64)


def compare(ours: torch.Tensor, paper: torch.Tensor) -> list[dict]:
    """Per step: our mean over the goals (``ours [40, S]``, each goal's average over repeats), the
    paper's, and the paired difference with its 95% interval."""
    from metadapt.evaluation.stats import mean_ci, paired_difference

    rows = []
    for k in range(min(ours.shape[1], paper.shape[0])):
        mean, ci = mean_ci(ours[:, k].double())
        difference, half = paired_difference(ours[:, k].double(), paper[k])
        rows.append({"steps": k, "ours": float(mean), "ours_ci95": float(ci),
                     "paper": float(paper[k].mean()), "difference": difference, "difference_ci95": half})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a MAML-RL run on navigation-2d (metadapt train's folder)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, step-N or a path")
    parser.add_argument("--repeats", type=int, default=25, help="plays of each goal, averaged (default 25)")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args(argv)

    from metadapt.cli import one_line
    from metadapt.envs.navigation import Navigation
    from metadapt.errors import UserError
    from metadapt.training import load

    try:
        if not 1 <= args.repeats <= 1000:
            raise UserError(f"--repeats must be 1 … 1000, got {args.repeats}")
        run = load(args.run, which=args.checkpoint, device="cpu")
        if run.config.task.family != "navigation-2d" or not hasattr(run.algorithm, "adaptation_returns"):
            raise UserError(f"{args.run!r} is a {run.config.algorithm.name} run on {run.config.task.family}; "
                            "this compares MAML-RL runs on navigation-2d")
        options = run.family.options
        paper_task = (-0.5, 0.5, 100, "distance")
        if (options.goal_low, options.goal_high, options.horizon, options.reward) != paper_task:
            raise UserError("the paper's task is goals in [-0.5, 0.5]², 100 steps, the distance reward; this "
                            "run was trained on another")
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    goals = paper_goals()
    env = Navigation(horizon=100, goals=goals.repeat(args.repeats, 1), squared=False)
    steps = run.algorithm.eval_steps
    generator = torch.Generator().manual_seed(run.config.eval.seed + 1)
    returns, _ = run.algorithm.adaptation_returns(env, steps, generator)
    per_goal = returns.reshape(args.repeats, len(goals), steps + 1).mean(0)       # [40, steps + 1]
    rows = compare(per_goal, paper_returns())
    print(f"{args.run} ({args.checkpoint}) on the paper's 40 goals, {args.repeats} plays each:")
    print("steps  ours             paper    ours − paper (paired, 95%)")
    for r in rows:
        print(f"{r['steps']:<6} {r['ours']:7.2f} ± {r['ours_ci95']:.2f}  {r['paper']:7.2f}  "
              f"{r['difference']:+.2f} ± {r['difference_ci95']:.2f}")
    if args.out:
        from metadapt.files import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({"run": str(args.run), "checkpoint": args.checkpoint,
                                                      "repeats": args.repeats, "rows": rows,
                                                      "per_goal": per_goal.tolist()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
