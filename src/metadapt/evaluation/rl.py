"""Evaluate a meta-reinforcement-learning run: the total reward of one trial on many held-out tasks,
for the meta-learned agent and every hand-designed strategy, all on the same tasks.

A trial is what the agent gets to learn a new task in: ``n`` pulls of a bandit, ``n`` episodes of an
MDP. Results hold, per method, the mean total reward per trial with its 95% interval, the learning
curve within the trial (mean reward per pull, or mean return per episode) and the oracle's (the
policy that knows the task). Strategies with a constant (UCB1's ``c``, ε-greedy's ``ε``) have it
chosen by a grid search on separate tuning tasks, as the RL² paper tuned them per setting.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

from metadapt.algorithms.rl.bandit_strategies import STRATEGIES
from metadapt.algorithms.rl.gittins import finite_horizon_gittins
from metadapt.algorithms.rl.mdp_strategies import MDP_STRATEGIES
from metadapt.envs import Bandits, TabularMDPs
from metadapt.evaluation.plots import plot_training_curve
from metadapt.evaluation.report import provenance
from metadapt.evaluation.stats import mean_ci
from metadapt.experience import rollout
from metadapt.files import atomic_write_text, strict_json
from metadapt.progress import track

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

TUNING_SEED_OFFSET = 77_777  # tuning tasks: never the test tasks
#: the RL² authors' grids (their evaluate_bandits.py): c and ε over 0, 0.1, …, 1
UCB_GRID = tuple(i / 10 for i in range(11))
EPSILON_GRID = tuple(i / 10 for i in range(11))

_BANDIT_COLUMNS = ("random", "gittins", "thompson", "ots", "ucb1", "epsilon-greedy", "greedy", "rl2")
_MDP_COLUMNS = ("random", "psrl", "opsrl", "ucrl2", "beb", "epsilon-greedy", "greedy", "rl2")
#: RL² paper (Duan et al. 2016), Tables 1 and 2: average total reward per trial over 1,000 trials
PUBLISHED: dict[tuple, dict[str, float]] = {
    **{("bandits", n, k): dict(zip(_BANDIT_COLUMNS, row)) for (n, k), row in {
        (10, 5): (5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7),
        (10, 10): (5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7),
        (10, 50): (5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8),
        (100, 5): (49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7),
        (100, 10): (49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5),
        (100, 50): (49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9),
        (500, 5): (249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6),
        (500, 10): (249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5),
        (500, 50): (249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9)}.items()},
    **{("tabular-mdp", n): dict(zip(_MDP_COLUMNS, row)) for n, row in {
        10: (100.1, 138.1, 144.1, 146.6, 150.2, 132.8, 134.8, 156.2),
        25: (250.2, 408.8, 425.2, 424.1, 427.8, 377.3, 368.8, 445.7),
        50: (499.7, 904.4, 930.7, 918.9, 917.8, 823.3, 769.3, 936.1),
        75: (749.9, 1417.1, 1449.2, 1427.6, 1422.6, 1293.9, 1172.9, 1428.8),
        100: (999.4, 1939.5, 1973.9, 1942.1, 1935.1, 1778.2, 1578.5, 1913.7)}.items()},
    #: MAML (Finn et al. 2017), 2D navigation: average return after 0, 1, 2, 3 policy-gradient steps
    ("navigation-2d",): {"maml-rl": [-40.41, -11.68, -3.33, -3.23]},
}


def trial_rewards(act, env, episodes: int, generator: torch.Generator) -> torch.Tensor:
    """``[T, E, H]`` rewards of one trial of ``act`` in each task of ``env``."""
    return trial(act, env, episodes, generator).rewards[:, 0].cpu()


def trial(act, env, episodes: int, generator: torch.Generator):
    """One trial of ``act`` in each task of ``env``: its trajectories ``[T, 1, E, H, …]``."""
    traj, _ = rollout(env, act, 1, episodes, generator)
    return traj


def _tune(make, grid, env, episodes, seed) -> tuple[float, float]:
    """The constant of ``grid`` with the highest mean total reward on ``env``, the tuning tasks drawn
    from ``seed``; their trials are played from ``seed + 1``, as the test tasks' are, since playing
    from the tasks' own seed would replay the draws that made the tasks as the draws of the rewards."""
    scores = []
    for value in grid:
        g = torch.Generator().manual_seed(seed + 1)
        scores.append(float(trial_rewards(make(value, g).act, env, episodes, g).sum((1, 2)).mean()))
    best = max(range(len(grid)), key=lambda i: scores[i])
    return grid[best], scores[best]


def strategies(env, tuning_env, episodes: int, seed: int) -> dict[str, tuple]:
    """``{name: (make(generator) -> strategy, note)}`` of the hand-designed strategies for ``env``."""
    if isinstance(env, Bandits):
        k, n = env.arms, env.horizon
        c, _ = _tune(lambda v, g: STRATEGIES["ucb1"](k, g, c=v), UCB_GRID, tuning_env, episodes, seed)
        eps, _ = _tune(lambda v, g: STRATEGIES["epsilon-greedy"](k, g, epsilon=v), EPSILON_GRID, tuning_env,
                       episodes, seed)
        table = finite_horizon_gittins(n)
        return {
            "random": (lambda g: STRATEGIES["random"](k, g), ""),
            "gittins": (lambda g: STRATEGIES["gittins"](k, g, table), "finite-horizon Gittins index"),
            "thompson": (lambda g: STRATEGIES["thompson"](k, g), ""),
            "ucb1": (lambda g: STRATEGIES["ucb1"](k, g, c=c), f"c = {c:g}, tuned"),
            "epsilon-greedy": (lambda g: STRATEGIES["epsilon-greedy"](k, g, epsilon=eps),
                               f"ε = {eps:g}, tuned"),
            "greedy": (lambda g: STRATEGIES["greedy"](k, g), "posterior mean"),
        }
    if isinstance(env, TabularMDPs):
        s, a, h = env.states, env.actions, env.horizon
        return {name: (lambda g, cls=cls: cls(s, a, h, g), "") for name, cls in MDP_STRATEGIES.items()}
    return {}


def evaluate_rl(run, compare=(), tasks: int | None = None, progress: bool = True,
                scratch: bool = True) -> dict:
    """Total reward per trial of ``run``'s agent, each ``compare`` run's and every hand-designed
    strategy's on the same held-out tasks; writes ``eval/results.json``, figures and ``report.md``."""
    if hasattr(run.algorithm, "adaptation_returns"):
        return evaluate_adaptation(run, compare, tasks, progress, scratch)
    cfg = run.config.eval
    tasks = cfg.tasks if tasks is None else tasks
    family, device = run.family, run.device
    env = family.sample(tasks, torch.Generator().manual_seed(cfg.seed)).to(device)
    tuning = family.sample(tasks, torch.Generator().manual_seed(cfg.seed + TUNING_SEED_OFFSET)).to(device)
    episodes = family.episodes_per_trial
    agents = {run.config.algorithm.name: run.algorithm}
    for other in compare:
        name = other.config.algorithm.name
        agents[name if name not in agents else f"{name}:{other.path.name}"] = other.algorithm
    baselines = strategies(env, tuning, episodes, cfg.seed + TUNING_SEED_OFFSET)
    results = {"kind": "reinforcement", "family": run.config.task.family, "tasks": tasks, "seed": cfg.seed,
               "episodes": episodes, "horizon": env.horizon, "unit": family.trial_unit, "methods": {}}
    jobs = list(agents) + list(baselines)
    for name in track(jobs, desc="evaluate", unit="method", enabled=progress):
        g = torch.Generator().manual_seed(cfg.seed + 1)
        if name in agents:
            traj = agents[name].play(env, g, trials=1)
            note = "meta-learned"
        else:
            make, note = baselines[name]
            traj = trial(make(g).act, env, episodes, g)
        rewards = traj.rewards[:, 0].cpu()
        total = rewards.sum((1, 2))
        mean, ci = mean_ci(total)
        curve = rewards.flatten(1) if episodes == 1 else rewards.sum(-1)   # per pull, or per episode
        results["methods"][name] = {"mean": float(mean), "ci95": float(ci), "note": note,
                                    "curve": curve.mean(0).tolist()}
        if hasattr(env, "best_arm_share"):
            share = env.best_arm_share(traj.actions[:, 0].flatten(1))   # per pull
            results["methods"][name]["best_arm"] = share.cpu().tolist()
    oracle = env.oracle_return()
    if oracle is not None:
        results["oracle"] = float(oracle.mean()) * episodes
    key = published_key(run.config)
    if key in PUBLISHED:
        results["published"] = PUBLISHED[key]
    figures = {"Learning within a trial": "plots/trial_curves.png"}
    plot_trial_curves(results, run.outputs / figures["Learning within a trial"])
    return _write_outputs(run, results, figures, agents)


def env_steps_at(rows: list[dict]) -> dict[int, float]:
    """Environment steps taken by the end of each logged training step: the logged running total
    where there is one, else the sum of the per-step counts (exact when every step is logged,
    otherwise each logged count stands for the steps since the previous one)."""
    total, previous, out = 0.0, 0, {}
    for r in rows:
        if r.get("split") != "train" or "env_steps" not in r:
            continue
        if "env_steps_total" in r:
            total = float(r["env_steps_total"])
        else:
            total += float(r["env_steps"]) * (r["step"] - previous)
        previous = r["step"]
        out[r["step"]] = total
    return out


def plot_sample_efficiency(rows: list[dict], oracle: float | None, path: Path, title: str) -> bool:
    """Validation return against environment steps and against training time (the learning curve
    of sample efficiency), the oracle's return as a line; False when the log cannot say."""
    steps = env_steps_at(rows)
    val = [r for r in rows if r.get("split") == "val" and "return" in r and "seconds" in r]
    points = [(steps[max(k for k in steps if k <= r["step"])], r["seconds"] / 60, r["return"])
              for r in val if any(k <= r["step"] for k in steps)]
    if len(points) < 2:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, i, label in ((axes[0], 0, "environment steps"), (axes[1], 1, "training time (minutes)")):
        ax.plot([p[i] for p in points], [p[2] for p in points], marker="o", ms=3, color="C1",
                label="validation (held-out tasks)")
        if oracle is not None:
            ax.axhline(oracle, color="k", ls="--", lw=1, label="oracle")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].xaxis.set_major_formatter(EngFormatter(sep=""))   # 200k, 1.5M: no overlap
    axes[0].set_ylabel("return")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _write_outputs(run, results: dict, figures: dict[str, str], agents: dict) -> dict:
    """``eval/results.json``, the training-curve figures and ``report.md`` of an evaluated run."""
    atomic_write_text(run.outputs / "eval" / "results.json", strict_json(results, indent=1))
    if plot_training_curve(run.metrics(), run.outputs / "plots/training_curve.png",
                           f"{run.config.name}: meta-training"):
        figures["Meta-training: training and validation"] = "plots/training_curve.png"
    efficiency = "plots/sample_efficiency.png"
    if plot_sample_efficiency(run.metrics(), results.get("oracle"), run.outputs / efficiency,
                              f"{run.config.name}: validation return against experience and time"):
        figures["Sample efficiency: return against environment steps and time"] = efficiency
    training = run.summary()
    write_rl_report(run, training, results, figures, agents)
    return results


def evaluate_adaptation(run, compare=(), tasks: int | None = None, progress: bool = True,
                        scratch: bool = True) -> dict:
    """For agents adapted by gradient steps (MAML for RL): the mean return after 0, 1, …, ``eval_steps``
    steps on the same held-out tasks, for the run, each ``compare`` run (e.g. the pretrained policy)
    and training from scratch with the same steps."""
    cfg = run.config.eval
    tasks = cfg.tasks if tasks is None else tasks
    env = run.family.sample(tasks, torch.Generator().manual_seed(cfg.seed)).to(run.device)
    steps = run.algorithm.eval_steps
    agents = {run.config.algorithm.name: run.algorithm}
    for other in compare:
        pretrained = getattr(other.algorithm, "inner_steps", 1) == 0
        name = "pretrained" if pretrained else other.config.algorithm.name
        agents[name if name not in agents else f"{name}:{other.path.name}"] = other.algorithm
    if scratch:
        agents["scratch"] = run.algorithm.scratch(cfg.seed)
    results = {"kind": "reinforcement", "family": run.config.task.family, "tasks": tasks, "seed": cfg.seed,
               "episodes": 1, "horizon": env.horizon,
               "unit": getattr(run.algorithm, "adaptation_unit", "adaptation steps"), "steps": steps,
               "methods": {}}
    paths = {}
    for name in track(list(agents), desc="evaluate", unit="method", enabled=progress):
        g = torch.Generator().manual_seed(cfg.seed + 1)
        returns, trajs = agents[name].adaptation_returns(env, steps, g)
        mean, ci = mean_ci(returns.cpu())
        results["methods"][name] = {"mean": float(mean[-1]), "ci95": float(ci[-1]), "curve": mean.tolist(),
                                    "curve_ci95": ci.tolist(),
                                    "note": "meta-learned" if agents[name] is run.algorithm else ""}
        if getattr(env, "reports_success", False):
            reached = torch.stack([env.reached(t.next_observations[:, 0, 0]) for t in trajs], 1).float()
            results["methods"][name]["success"] = reached.mean(0).tolist()   # per episode / step
        paths[name] = [t.first_episode_observations()[:3].cpu() for t in trajs]   # [3 tasks, H, 2] per step
    sparse = getattr(getattr(run.algorithm, "options", None), "sparse_context", False)
    oracle = (env.with_reward(sparse=True) if sparse else env).oracle_return()   # of the returns reported
    if oracle is not None:
        results["oracle"] = float(oracle.mean())
    key = published_key(run.config)
    if key in PUBLISHED:
        results["published"] = PUBLISHED[key]
    figures = {"Return after each adaptation step": "plots/adaptation_returns.png"}
    plot_adaptation_returns(results, run.outputs / figures["Return after each adaptation step"])
    if hasattr(env, "forward_velocity"):
        title = "Forward velocity before and after adaptation"
        figures[title] = "plots/velocity.png"
        velocities = {name: [env.forward_velocity(p) for p in per] for name, per in paths.items()}
        plot_velocities(velocities, env, run.outputs / figures[title], results)
    elif tuple(env.observation_shape) == (2,):  # a point in the plane
        figures["Paths before and after adaptation"] = "plots/paths.png"
        goals = env.goals[:3].cpu() if hasattr(env, "goals") else None
        radius = env.goal_radius if getattr(env, "reports_success", False) else None
        plot_paths(paths, goals, run.outputs / figures["Paths before and after adaptation"], results, radius)
    return _write_outputs(run, results, figures, agents)


def plot_adaptation_returns(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, m in results["methods"].items():
        x = list(range(len(m["curve"])))
        ax.errorbar(x, m["curve"], yerr=m["curve_ci95"], marker="o", ms=4, capsize=3, label=name,
                    lw=2 if m["note"] == "meta-learned" else 1)
    for name, values in results.get("published", {}).items():
        ax.plot(range(len(values)), values, ls=":", marker="x", color="k", label=f"{name} (paper)")
    if "oracle" in results:
        ax.axhline(results["oracle"], color="k", ls="--", lw=1, label="oracle")
    episodes = results.get("unit") == "episodes"
    ax.set_xlabel("episode of a trial on the new task (posterior sampling)" if episodes
                  else "policy-gradient steps on the new task")
    ax.set_ylabel("mean return")
    ax.set_xticks(range(results["steps"] + 1),
                  [step_label(results, k, short=True) for k in range(results["steps"] + 1)])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{results['family']}: return after adaptation ({results['tasks']} test tasks)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def step_label(results: dict, k: int, short: bool = False) -> str:
    """What column ``k`` of an adaptation curve is: ``k`` policy-gradient steps, or episode ``k + 1``."""
    if results.get("unit") == "episodes":
        return f"{k + 1}" if short else f"episode {k + 1}"
    return f"{k}" if short else f"{k} step{'s' if k != 1 else ''}"


def plot_paths(paths: dict, goals: torch.Tensor | None, path: Path, results: dict | None = None,
               radius: float | None = None) -> None:
    """One panel per method: a trajectory of the first test task after each number of steps (MAML's
    Figure 4) or in each episode of a trial (PEARL's Figure 5), the goal as a star (and the circle within
    which a sparse reward is paid)."""
    results = results or {}
    fig, axes = plt.subplots(1, len(paths), figsize=(3.4 * len(paths), 3.4), squeeze=False)
    for ax, (name, per_step) in zip(axes[0], paths.items()):
        # each panel its own square around its paths, so a policy that wanders does not shrink the others
        reach = max([0.55] + [float(p[0].abs().max()) for p in per_step]
                    + ([float(goals[0].abs().max())] if goals is not None else []))
        for k, positions in enumerate(per_step):
            xy = positions[0]
            ax.plot(xy[:, 0], xy[:, 1], lw=1.5, label=step_label(results, k))
        if goals is not None:
            ax.plot(goals[0, 0], goals[0, 1], marker="*", ms=14, color="k", ls="none", label="goal")
            if radius is not None:
                ax.add_patch(plt.Circle((float(goals[0, 0]), float(goals[0, 1])), radius, fill=False,
                                        ls=":", color="k"))
        ax.set_title(name, fontsize=10)
        ax.set_xlim(-1.1 * reach, 1.1 * reach)
        ax.set_ylim(-1.1 * reach, 1.1 * reach)
        ax.set_aspect("equal")
        for axis in (ax.xaxis, ax.yaxis):  # a few ticks, so labels such as −0.50 and −0.25 never touch
            axis.set_major_locator(MaxNLocator(5))
        ax.grid(alpha=0.3)
        ax.set_xlabel("x")
    axes[0][0].set_ylabel("y")
    axes[0][0].legend(fontsize=7, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_velocities(velocities: dict, env, path: Path, results: dict) -> None:
    """One panel per method: the forward velocity of the first test task's episode after each number of
    steps (or in each episode of a trial), against the goal velocity or direction."""
    fig, axes = plt.subplots(1, len(velocities), figsize=(3.8 * len(velocities), 3.2), squeeze=False,
                             sharey=True)
    goal = float(env.goal[0])
    for ax, (name, per_step) in zip(axes[0], velocities.items()):
        for k, v in enumerate(per_step):
            ax.plot(v[0].cpu(), lw=1.2, label=step_label(results, k))
        if env.task_kind == "velocity":
            ax.axhline(goal, color="k", ls="--", lw=1, label="goal velocity")
        else:
            ax.axhline(0, color="k", lw=0.6)
            ax.set_title(f"{name} (goal: run {'forward' if goal > 0 else 'backward'})", fontsize=10)
        if env.task_kind == "velocity":
            ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("forward velocity")
    axes[0][0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def published_key(config) -> tuple:
    t = config.task
    if t.family == "bandits":
        return ("bandits", t.pulls, t.arms)
    if t.family == "tabular-mdp":
        return ("tabular-mdp", t.episodes)
    return (t.family,)


def rl_table(results: dict, markdown: bool = True) -> str:
    """Total reward per trial (mean ± 95% CI) of every method, beside the paper's where known; for
    gradient-adapted agents, the return after each number of adaptation steps."""
    published = results.get("published", {})
    if "steps" in results:
        head = ["method"] + [step_label(results, k) for k in range(results["steps"] + 1)]
        rows = [[name] + [f"{m:.2f} ± {c:.2f}" for m, c in zip(v["curve"], v["curve_ci95"])]
                for name, v in results["methods"].items()]
        rows += [[f"{name} (paper)"] + [f"{x:g}" for x in values] for name, values in published.items()]
        rows += [[f"{name}: reached the goal"] + [f"{100 * x:.1f}%" for x in v["success"]]
                 for name, v in results["methods"].items() if "success" in v]
        if "oracle" in results:
            rows.append(["oracle (knows the goal)"] + [f"{results['oracle']:.2f}"] * (results["steps"] + 1))
        return _render(head, rows, markdown)
    head = ["method", f"total reward per trial ({results['tasks']} tasks)", "paper", "note"]
    rows = [[name, f"{m['mean']:.2f} ± {m['ci95']:.2f}",
             f"{published[name]:g}" if name in published else "", m["note"]]
            for name, m in results["methods"].items()]
    shares = {name: m["best_arm"] for name, m in results["methods"].items() if "best_arm" in m}
    if shares:  # bandits: how often the last tenth of the pulls went to the best arm
        head.insert(2, "on the best arm, last 10% of pulls")
        for row, name in zip(rows, results["methods"]):
            share = shares.get(name)
            tail = share[-max(1, len(share) // 10):] if share else None
            row.insert(2, f"{100 * sum(tail) / len(tail):.1f}%" if tail else "")
    if "oracle" in results:
        oracle = ["oracle (knows the task)", f"{results['oracle']:.2f}", "", "the best possible"]
        if shares:
            oracle.insert(2, "100.0%")
        rows.append(oracle)
    return _render(head, rows, markdown)


def _render(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows)


def plot_trial_curves(results: dict, path: Path) -> None:
    """Cumulative regret against pulls (bandits: the oracle's expected reward per pull minus the
    method's) beside the share of tasks whose pull went to the best arm, or the mean return of each
    episode of the trial beside the oracle's (MDPs)."""
    shares = all("best_arm" in m for m in results["methods"].values())
    fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(11 if shares else 6, 3.8), squeeze=False)
    ax = axes[0][0]
    per_pull = results["episodes"] == 1
    points = len(next(iter(results["methods"].values()))["curve"])
    oracle = results.get("oracle")
    for name, m in results["methods"].items():
        curve = torch.tensor(m["curve"])
        x = torch.arange(1, len(curve) + 1)
        width = 2 if m["note"] == "meta-learned" else 1
        if per_pull and oracle is not None:
            ax.plot(x, torch.cumsum(oracle / points - curve, 0), label=name, lw=width)
        else:
            ax.plot(x, curve, label=name, marker="o", ms=3, lw=width)
    if per_pull:
        ax.set_xlabel("pull")
        ax.set_ylabel("cumulative regret (lower is better)" if oracle is not None else "mean reward")
    else:
        if oracle is not None:
            ax.axhline(oracle / results["episodes"], color="k", ls="--", lw=1, label="oracle")
        ax.set_xlabel("episode of the trial")
        ax.set_ylabel("mean return of the episode")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{results['family']}: learning within a trial ({results['tasks']} test tasks)", fontsize=10)
    if shares:
        right = axes[0][1]
        for name, m in results["methods"].items():
            share = torch.tensor(m["best_arm"])
            right.plot(torch.arange(1, len(share) + 1), 100 * share, label=name,
                       lw=2 if m["note"] == "meta-learned" else 1)
        right.set_xlabel("pull")
        right.set_ylabel("pulls on the task's best arm (%)")
        right.set_ylim(0, 100)
        right.grid(alpha=0.3)
        right.set_title("finding the best arm", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_rl_report(run, training: dict | None, results: dict, figures: dict[str, str], agents: dict) -> Path:
    config, tr = run.config, run.config.train
    model = getattr(run.algorithm, "policy", None) or getattr(run.algorithm, "networks", None)
    lines = [f"# {config.name}: {config.algorithm.name} on {config.task.family}", "", *run.family.describe(),
             f"- Policy: {model.describe() if hasattr(model, 'describe') else type(model).__name__}.",
             f"- Algorithm: {run.algorithm.describe()}; {tr.meta_batch_size} tasks per meta-update, "
             + (f"{tr.optimizer} lr {tr.meta_lr}, " if getattr(run.algorithm, "uses_meta_lr", True) else "")
             + f"seed {tr.seed}."]
    if training:
        steps = [r["env_steps"] for r in run.metrics() if r.get("split") == "train" and "env_steps" in r]
        rate = (f", {sum(steps) / len(steps) * training['iterations_per_second']:,.0f} environment steps/s"
                if steps else "")
        lines.append(f"- Meta-training: {training['steps']} iterations in {training['seconds']:.1f} s "
                     f"({training['iterations_per_second']:.2f} meta-iterations/s{rate}); best validation "
                     f"return {-training['best_val_query_loss']:.2f}.")
    for agent in agents.values():
        if agent is not run.algorithm:
            lines.append(f"- Compared on the same tasks: {agent.describe()}.")
    what = ("Total reward per trial" if "steps" not in results
            else "Return in each episode of a trial" if results.get("unit") == "episodes"
            else "Return after each adaptation step")
    lines += ["", f"## {what} (mean ± 95% CI over {results['tasks']} test tasks, evaluation "
              f"seed {results['seed']})", "", rl_table(results), "", "## Figures", ""]
    lines += [f"![{title}]({rel})\n" for title, rel in figures.items()]
    lines += provenance(run, results["seed"])
    path = Path(run.outputs) / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
