"""Sample efficiency side by side: the environment steps PEARL, RL² and MAML-RL need, in meta-training,
to reach 80% of the oracle's return on PEARL's point robot (Rakelly et al. 2019 claim PEARL needs
20–100× fewer than the others).

    python benchmarks/sample_efficiency.py --runs runs/sample-efficiency [--minutes 60]

Trains each method from its recipe (configs/rl/{pearl,rl2,maml-rl}-point-robot.yaml, with the CPU
settings below) with the same seed and the same 100 validation goals (the trainer draws them from its
own validation stream, the same for every recipe of one family and seed), one thread each, one after
the other, unless its run directory already holds a finished run (``--reuse`` accepts one made by hand
with the same seed and validation goals). Each method's validation curve is its adapted return on those
goals: PEARL's third episode of a trial (after two of posterior sampling), RL²'s third episode of a
trial, MAML-RL's return after its policy-gradient step. The score is normalised between a uniformly
random policy and the oracle that heads straight for the goal, both measured on the same goals,

    score = (R − R_random) / (R_oracle − R_random),

and a method "reaches" a fraction f at the environment steps of its first validation with score ≥ f.
Writes RUNS/sample_efficiency.json and RUNS/sample_efficiency.png and prints the table with the ratios.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
RECIPES = HERE.parent / "configs" / "rl"
SEED, VAL_TASKS = 0, 100

#: method: (recipe, the validation key of its adapted return, overrides for a CPU run)
METHODS = {
    "pearl": ("pearl-point-robot.yaml", "return",
              ["model.encoder=full", "algorithm.context_episodes=2", "algorithm.context_episodes_share=0.5",
               "model.hidden=64", "model.encoder_hidden=64", "algorithm.batch_size=64",
               "train.meta_batch_size=8", "algorithm.gradient_steps=500", "train.iterations=100000",
               "train.val_every=5"]),
    "rl2": ("rl2-point-robot.yaml", "return_last", ["train.val_every=10"]),
    "maml-rl": ("maml-rl-point-robot.yaml", "return", ["train.val_every=5"]),
}


def train(method: str, run: Path, minutes: float, extra: list[str]) -> None:
    recipe, _, overrides = METHODS[method]
    command = [sys.executable, "-m", "metadapt", "train", str(RECIPES / recipe), *overrides, *extra,
               f"train.seed={SEED}", f"train.val_tasks={VAL_TASKS}", "train.threads=1",
               f"train.time_limit_s={60 * minutes:g}", "--run-dir", str(run)]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def finished(run: Path) -> bool:
    return (run / "summary.json").is_file() and (run / "metrics.jsonl").is_file()


def reference_returns(run: Path) -> tuple[float, float]:
    """Mean return of the oracle and of uniformly random actions on the run's validation goals."""
    from metadapt.experience import rollout
    from metadapt.training import load
    from metadapt.training.trainer import VAL_SEED_OFFSET

    loaded = load(run)
    cfg = loaded.config.train
    stream = torch.Generator().manual_seed(cfg.seed + VAL_SEED_OFFSET)   # the trainer's validation goals
    env = loaded.family.tasks("val").sample(cfg.val_tasks, stream)
    g = torch.Generator().manual_seed(12_345)

    def uniform(obs, last, carry):
        return 2 * torch.rand(*obs.shape[:-1], env.action_dim, generator=g) - 1, {}, carry

    traj, _ = rollout(env, uniform, 100, 1, g)
    total = float(traj.episode_returns.mean())
    return float(env.oracle_return().mean()), total


def curve(run: Path, key: str) -> list[tuple[float, float, float]]:
    """``(environment steps, minutes, adapted return)`` at each validation of ``run``."""
    from metadapt.evaluation.rl import env_steps_at

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = env_steps_at(rows)
    out = []
    for r in rows:
        if r.get("split") == "val" and key in r:
            done = [k for k in steps if k <= r["step"]]
            if done:
                out.append((steps[max(done)], r.get("seconds", float("nan")) / 60, float(r[key])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/sample-efficiency"))
    parser.add_argument("--minutes", type=float, default=60.0, help="training time of each method")
    parser.add_argument("--fraction", type=float, default=0.8, help="the score to reach (0.8: 80%%)")
    parser.add_argument("--also", type=float, nargs="*", default=[0.5, 0.6, 0.7],
                        help="further scores to report the steps to")
    parser.add_argument("--reuse", nargs=2, action="append", default=[], metavar=("METHOD", "RUN"),
                        help="use RUN (same seed and validation goals) instead of training METHOD")
    parser.add_argument("--override", nargs=2, action="append", default=[], metavar=("METHOD", "KEY=VALUE"),
                        help="an extra override for METHOD's training run")
    args = parser.parse_args(argv)
    given = {m: Path(r) for m, r in args.reuse}
    for m in given:
        if m not in METHODS:
            parser.error(f"--reuse: unknown method {m}; one of {', '.join(METHODS)}")
    runs = {}
    for method in METHODS:
        run = given.get(method, args.runs / method)
        if not finished(run):
            if method in given:
                parser.error(f"--reuse {method} {run}: no finished run there")
            train(method, run, args.minutes, [v for m, v in args.override if m == method])
        runs[method] = run
    for method, run in runs.items():
        train_cfg = yaml.safe_load((run / "config.yaml").read_text()).get("train", {})
        if (train_cfg.get("seed"), train_cfg.get("val_tasks")) != (SEED, VAL_TASKS):
            print(f"note: {method}'s run {run} has seed {train_cfg.get('seed')} and "
                  f"{train_cfg.get('val_tasks')} validation goals, not {SEED} and {VAL_TASKS}")

    oracle, random = reference_returns(runs["pearl"])
    levels = sorted(set(args.also) | {args.fraction})
    results = {"oracle": oracle, "random": random, "fraction": args.fraction, "levels": levels,
               "threshold": random + args.fraction * (oracle - random), "methods": {}}
    for method, run in runs.items():
        points = curve(run, METHODS[method][1])
        score = lambda r: (r - random) / (oracle - random)  # noqa: E731
        best = max(points, key=lambda p: p[2]) if points else None
        reach = {}
        for level in levels:
            hit = next(((s, m) for s, m, r in points if score(r) >= level), None)
            reach[f"{level:g}"] = {"steps": hit[0] if hit else None, "minutes": hit[1] if hit else None}
        results["methods"][method] = {
            "run": str(run), "curve": points, "reach": reach,
            "steps_to_fraction": reach[f"{args.fraction:g}"]["steps"],
            "best_return": best[2] if best else None, "best_score": score(best[2]) if best else None,
            "env_steps_trained": points[-1][0] if points else None}
    print(f"\noracle {oracle:.2f}, random {random:.2f} ({VAL_TASKS} validation goals); "
          f"score = (R − R_random) / (R_oracle − R_random)")
    head = "".join(f"{f'steps to {100 * f:g}%':>20}" for f in levels)
    print(f"{'method':<10}{head}{'best score':>12}{'steps trained':>15}")
    for method, m in results["methods"].items():
        cells = ""
        for level in levels:
            steps = m["reach"][f"{level:g}"]["steps"]
            pearl = results["methods"]["pearl"]["reach"][f"{level:g}"]["steps"]
            text = "not reached" if steps is None else f"{steps:,.0f}"
            if steps is not None and pearl and method != "pearl":
                text += f" ({steps / pearl:.1f}×)"
            cells += f"{text:>20}"
        best = "—" if m["best_score"] is None else f"{m['best_score']:.2f}"
        trained = "—" if m["env_steps_trained"] is None else f"{m['env_steps_trained']:,.0f}"
        print(f"{method:<10}{cells}{best:>12}{trained:>15}")
    print("(×: the method's steps over PEARL's, where both reach the level)")
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "sample_efficiency.json").write_text(json.dumps(results, indent=1))
    plot(results, args.runs / "sample_efficiency.png")
    print(f"\nwrote {args.runs / 'sample_efficiency.json'} and {args.runs / 'sample_efficiency.png'}")
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oracle, random = results["oracle"], results["random"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    names = {"pearl": "PEARL", "rl2": "RL²", "maml-rl": "MAML-RL"}
    for method, m in results["methods"].items():
        if m["curve"]:
            ax.plot([p[0] for p in m["curve"]], [(p[2] - random) / (oracle - random) for p in m["curve"]],
                    marker="o", ms=3, label=names.get(method, method))
    ax.axhline(results["fraction"], color="k", ls="--", lw=1,
               label=f"{100 * results['fraction']:g}% of the oracle")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("environment steps of meta-training")
    ax.set_ylabel("score: (R − R_random) / (R_oracle − R_random)")
    ax.set_title("point robot: adapted return on 100 held-out goals", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
