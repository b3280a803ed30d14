"""``metadapt train | eval | adapt | demo``.

Errors in what the user gave (recipe, overrides, CSV files, run directories, checkpoints) are
printed as one line, exit status 2, no traceback unless ``--debug``.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import time
from pathlib import Path

import torch

from metadapt.allocator import keep_freed_memory
from metadapt.config import apply_overrides, build_config, config_from_file
from metadapt.errors import UserError
from metadapt.training.trainer import Interrupted

PAPER_MAML_5SHOT = {1: 0.67, 5: 0.38, 10: 0.35}      # Finn et al. 2017, Fig. 2 / §5.1, K=5
PAPER_PRETRAIN_5SHOT = {1: 2.41, 5: 2.23, 10: 2.19}


def _path(text: str) -> Path:
    """A path as the user wrote it, with ``~`` expanded as a shell would."""
    return Path(text).expanduser()


def _split_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    overrides = [v for v in values if "=" in v]
    return [v for v in values if "=" not in v], overrides


def cmd_train(args) -> int:
    from metadapt.training import train
    from metadapt.training.run import read_run_config

    positional, overrides = _split_overrides(args.items)
    if len(positional) > 1:
        raise UserError(f"train takes one recipe file, got {positional}; overrides look like key=value")
    recipe = _path(positional[0]) if positional else None
    resume = args.resume or args.resume_from is not None
    if args.seeds is not None:
        if recipe is None:
            raise UserError("--seeds needs the recipe (each seed's run is resumed or written from it)")
        config = config_from_file(recipe, overrides)
        return _train_seeds(args, config, _path(args.run_dir) if args.run_dir else Path("runs") / config.name,
                            resume)
    if resume:
        if args.run_dir is None and recipe is None:
            raise UserError("--resume needs the run: pass --run-dir RUN or the recipe it was trained from")
        given = config_from_file(recipe, overrides) if recipe is not None else None
        run_dir = _path(args.run_dir) if args.run_dir is not None else Path("runs") / given.name
        # the recipe, or the run's own config, with e.g. train.iterations=50000 to extend it; the
        # trainer refuses any change a resume cannot make
        config = given if given is not None else apply_overrides(read_run_config(run_dir), overrides)
    else:
        if recipe is None:
            raise UserError("train needs a recipe file, e.g. metadapt train configs/sinusoid/maml.yaml")
        config = config_from_file(recipe, overrides)
        run_dir = _path(args.run_dir) if args.run_dir else Path("runs") / config.name
    summary = train(config, run_dir, resume=resume, overwrite=args.overwrite, progress=not args.no_progress,
                    resume_from=args.resume_from)
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(f"trained {config.algorithm.name} for {summary['steps']} meta-iterations in "
          f"{summary['seconds']:.1f} s ({summary['iterations_per_second']:.3g} it/s); "
          f"best validation query loss {summary['best_val_query_loss']:.4f}")
    print(f"run directory: {run_dir}   next: metadapt eval {run_dir}")
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got {text[:40]!r}"
                        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or len(seeds) > 100:
        raise UserError(f"--seeds takes 1 to 100 different seeds >= 0, e.g. 0,1,2; got {text!r}")
    return seeds


def _train_seeds(args, config, folder: Path, resume: bool) -> int:
    """One run per seed, ``folder/seed-N``, each with ``train.seed=N``; the others as given."""
    from metadapt.config import apply_overrides
    from metadapt.training import train

    if args.resume_from is not None:
        raise UserError("--resume-from names one checkpoint of one run; resume the seeds with --resume")
    seeds = _seed_list(args.seeds)
    configs = {s: apply_overrides(config, [f"train.seed={s}"]) for s in seeds}  # all checked first
    for seed, seeded in configs.items():
        print(f"[seeds] seed {seed}: {folder / f'seed-{seed}'}")
        summary = train(seeded, folder / f"seed-{seed}", resume=resume, overwrite=args.overwrite,
                        progress=not args.no_progress)
        print(f"[seeds] seed {seed}: {summary['steps']} meta-iterations, best validation query loss "
              f"{summary['best_val_query_loss']:.4f}")
    print(f"runs: {folder}/seed-{{{','.join(map(str, seeds))}}}   next: metadapt eval {folder}")
    return 0


def cmd_eval(args) -> int:
    from metadapt.evaluation import evaluate_run
    from metadapt.evaluation.report import comparison_table, paired_table, speed_table
    from metadapt.training import load

    from metadapt.evaluation.seeds import aggregate, seed_runs, seeds_table, write_seeds

    seeded = seed_runs(_path(args.run))
    if seeded:  # a folder of seed-N runs: evaluate each on the same tasks, then aggregate
        if args.compare:
            raise UserError("--compare takes single runs; evaluate a seeds folder on its own")
        per_seed = {}
        for path in seeded:
            print(f"[seeds] evaluating {path.name}")
            per_seed[path.name] = evaluate_run(load(path, which=args.checkpoint), [], tasks=args.tasks,
                                               steps=args.steps, progress=not args.no_progress,
                                               scratch=not args.no_scratch)
        summary = aggregate(per_seed)
        write_seeds(_path(args.run), summary)
        print(seeds_table(summary, markdown=False))
        print(f"\nseeds: {_path(args.run) / 'seeds.md'}   each run's report: {seeded[0] / 'report.md'} …")
        return 0
    run = load(args.run, which=args.checkpoint)
    if run.config.train.keep_freed_memory:
        keep_freed_memory()
    compare = [load(path) for path in args.compare]
    results = evaluate_run(run, compare, tasks=args.tasks, steps=args.steps, progress=not args.no_progress,
                           scratch=not args.no_scratch)
    if results.get("kind") == "reinforcement":
        from metadapt.evaluation.rl import rl_table

        print(rl_table(results, markdown=False))
    else:
        print(comparison_table(results, markdown=False))
        if any(len(m["mean"]) > 1 for e in results["settings"].values() for m in e["methods"].values()):
            print(speed_table(results, markdown=False))  # no steps taken: nothing to count
        paired = paired_table(results, markdown=False)
        if paired:
            print("\n" + paired)
    print(f"\nreport: {run.path / 'report.md'}   figures: {run.path / 'plots'}")
    return 0


def cmd_adapt(args) -> int:
    from metadapt.csvio import column_names, read_table, split_columns, write_table
    from metadapt.training import load
    from metadapt.training.run import check_steps

    output = _path(args.output) if args.output is not None else None
    if output is not None:
        if output.exists() and not args.overwrite:
            raise UserError(f"{args.output!r} already exists; pass --overwrite to replace it or choose "
                            "another --output")
        if output.is_dir():
            raise UserError(f"--output {args.output!r} is a folder; name a file")
        folder = output.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"cannot write --output {args.output!r}: {str(folder)!r} is not a writable "
                            "folder")
    steps = check_steps(args.steps)
    run = load(args.run)
    if run.family.classification or len(run.family.input_shape) != 1:
        raise UserError(f"adapt reads CSV regression tasks (rows of numbers); {args.run!r} is a "
                        f"{run.config.task.family} run (use the Python API: "
                        "metadapt.load(run).adapt(support_x, support_y))")
    n_in, n_out = int(run.family.input_shape[0]), int(run.family.outputs)
    support, support_header = read_table(args.support, None, "support")
    sx, sy = split_columns(support, support_header, n_in, n_out, args.support, "support", True)
    query, query_header = read_table(args.query, None, "query")
    qx, qy = split_columns(query, query_header, n_in, n_out, args.query, "query", False)
    steps = run.config.eval.steps if steps is None else steps  # as evaluation adapts, by default
    adapted = run.adapt(sx, sy, steps=steps, keep_steps=False)
    prediction = adapted.predict(qx.to(run.device)).cpu()
    header = query_header or (column_names("x", n_in) + (column_names("y", n_out) if qy is not None else []))
    text = write_table(args.output, header, query, prediction)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"adapted on {len(sx)} support examples for {adapted.steps} step(s); "
              f"{len(qx)} predictions written to {args.output}")
    if qy is not None:
        mse = float(torch.nn.functional.mse_loss(prediction, qy))
        print(f"query MSE: {mse:.4f}", file=sys.stderr if args.output is None else sys.stdout)
    return 0


def _mse(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "diverged"


def _compiler(device: str) -> str | None:
    """Why the demo's meta-step can be compiled here (a C++ compiler for Inductor's CPU code, Triton
    for CUDA), or None."""
    import shutil

    if device.startswith("cuda"):
        import importlib.util

        return "Triton" if importlib.util.find_spec("triton") else None
    # the compilers Inductor itself looks for: $CXX, else g++ (clang++ on macOS)
    for name in (os.environ.get("CXX"), "clang++" if sys.platform == "darwin" else "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cmd_demo(args) -> int:
    from metadapt.evaluation import evaluate_run
    from metadapt.evaluation.report import comparison_table, speed_table
    from metadapt.training import load, train

    out = _path(args.out)
    started = time.perf_counter()
    compiler = _compiler(args.device) if args.compile is None else ("requested" if args.compile else None)
    if compiler:
        print(f"[demo] MAML's meta-step is compiled (torch.compile, Inductor; {compiler}); "
              "the first steps include compiling it")
    else:
        why = ("--no-compile" if args.compile is False else "Triton is not installed"
               if args.device.startswith("cuda") else "no C++ compiler found ($CXX or g++)")
        print(f"[demo] MAML's meta-step runs eagerly ({why}): meta-training takes about four times as long")
    summaries, how = {}, "eager"
    # MAML with the paper code's inner step size (cbfinn/maml's update_lr default, 0.001; README): its
    # 1-, 5- and 10-step figures beat the paper's in every seed measured, where steps of the text's
    # 0.01 beyond the first overshoot on some tasks. The pretrained network is fine-tuned with steps
    # of the paper's 0.01, its better step size.
    plan = {"maml": (args.iterations, 0.001), "pretrain": (max(1, args.iterations // 7), 0.01)}
    for name, (iterations, inner_lr) in plan.items():
        overrides = [
            f"algorithm.name={name}", f"algorithm.inner_lr={inner_lr}", f"train.iterations={iterations}",
            f"train.seed={args.seed}", f"train.val_every={max(1, iterations // 10)}",
            f"train.checkpoint_every={max(1, iterations // 10)}", f"train.device={args.device}",
        ]
        compiled = bool(compiler) and name == "maml"
        config = build_config({"name": f"demo-{name}"},
                              [*overrides, f"train.compile={str(compiled).lower()}"])
        print(f"[demo] meta-training {name} on sine-wave regression ({iterations} meta-iterations, "
              f"meta-batch {config.train.meta_batch_size}, {config.task.shots}-shot tasks, "
              f"inner lr {inner_lr})")
        try:
            summaries[name] = train(config, out / name, overwrite=True, progress=not args.no_progress)
            how = "compiled" if compiled else how
        except (UserError, Interrupted):
            raise
        except Exception as err:  # a compiler that is present but fails: the eager step gives the same run
            if not compiled or args.compile:
                raise
            print(f"[demo] compiling the meta-step failed ({type(err).__name__}); meta-training eagerly")
            config = build_config({"name": f"demo-{name}"}, [*overrides, "train.compile=false"])
            summaries[name] = train(config, out / name, overwrite=True, progress=not args.no_progress)
    print("[demo] evaluating on fresh test tasks (MAML, pretrain-then-fine-tune, training from scratch)")
    results = evaluate_run(load(out / "maml"), [load(out / "pretrain")], progress=not args.no_progress)
    print()
    print(comparison_table(results, markdown=False))
    print(speed_table(results, markdown=False))
    five = results["settings"].get("5-shot")
    if five:
        m, p = five["methods"]["maml"]["mean"], five["methods"]["pretrain"]["mean"]
        steps = [k for k in (1, 5, 10) if k < len(m)]
        print("\n5-shot query MSE after 1 / 5 / 10 steps:")
        print("  MAML      ours " + " / ".join(_mse(m[k]) for k in steps)
              + "   paper " + " / ".join(f"{PAPER_MAML_5SHOT[k]:.2f}" for k in steps))
        print("  pretrain  ours " + " / ".join(_mse(p[k]) for k in steps)
              + "   paper " + " / ".join(f"{PAPER_PRETRAIN_5SHOT[k]:.2f}" for k in steps))
        behind = [str(k) for k in steps if not m[k] <= PAPER_MAML_5SHOT[k]]
        print("  MAML is at or below the paper's figure after every step count" if not behind else
              f"  MAML is above the paper's figure after {' / '.join(behind)} step(s)")
    s = summaries["maml"]
    print(f"\nMAML meta-training: {s['steps']} meta-iterations in {s['seconds']:.1f} s = "
          f"{s['iterations_per_second']:.0f} meta-iterations/s ({how}, {torch.get_num_threads()} threads)")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; report: {out / 'maml' / 'report.md'}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from metadapt.version import __version__

    parser = argparse.ArgumentParser(prog="metadapt", description="Meta-learning on PyTorch.")
    python = sys.version.split()[0]
    parser.add_argument("--version", action="version",
                        version=f"metadapt {__version__} (torch {torch.__version__}, Python {python})")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    # accepted after the subcommand too (metadapt train … --debug); SUPPRESS keeps the value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    no_progress = "no progress bar (without a terminal, progress is plain log lines anyway)"

    p = sub.add_parser("train", parents=[common], help="meta-train from a YAML recipe")
    p.add_argument("items", nargs="*", metavar="RECIPE|key=value",
                   help="recipe file, then overrides such as train.iterations=5000 (metadapt config RECIPE "
                        "lists every key)")
    p.add_argument("--run-dir", help="where to write the run (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--resume-from", metavar="CHECKPOINT",
                   help="continue from another kept checkpoint: best, step-N or a path (later ones are "
                        "moved aside, not deleted)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory (only a metadapt run is ever deleted)")
    p.add_argument("--seeds", metavar="S1,S2,…",
                   help="train one run per seed, RUN_DIR/seed-N (train.seed=N); metadapt eval RUN_DIR then "
                        "aggregates them")
    p.add_argument("--no-progress", action="store_true", help=no_progress)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[common],
                       help="learning-speed evaluation of a trained run against the baselines")
    p.add_argument("run", help="the run directory metadapt train wrote (or a folder of seed-N runs)")
    p.add_argument("--compare", nargs="*", default=[], metavar="RUN",
                   help="other runs to evaluate on the same tasks (e.g. a pretrain run)")
    p.add_argument("--tasks", type=int, help="number of test tasks (default: the recipe's eval.tasks)")
    p.add_argument("--steps", type=int, help="adaptation steps (default: the recipe's eval.steps)")
    p.add_argument("--no-scratch", action="store_true", help="leave out the training-from-scratch baseline")
    p.add_argument("--checkpoint", default="best", metavar="CHECKPOINT",
                   help="which checkpoint to evaluate: best (default), last, step-N or a path")
    p.add_argument("--no-progress", action="store_true", help=no_progress)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("adapt", parents=[common],
                       help="adapt a trained run to a new task given as CSV and predict")
    p.add_argument("run", help="the run directory of a regression run")
    p.add_argument("--support", required=True,
                   help="CSV, one row per support example: x (or x1…xd) then y (or y1…yk); a header naming "
                        "them may give them in any order")
    p.add_argument("--query", required=True,
                   help="CSV of the inputs to predict (and, optionally, their targets to report the MSE); "
                        "its columns are repeated beside the predictions")
    p.add_argument("--steps", type=int, help="adaptation steps (default: the run's eval.steps)")
    p.add_argument("--output", help="write predictions here (default: standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("config", parents=[common],
                       help="list every recipe key with its type, value, allowed values and meaning")
    p.add_argument("items", nargs="*", metavar="RECIPE|key=value",
                   help="a recipe (default: the built-in defaults) and overrides, as for train")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("demo", parents=[common],
                       help="meta-train MAML and the pretrain baseline on sinusoids, evaluate, report")
    p.add_argument("--out", default="runs/demo", help="folder for the two runs (replaced on each demo)")
    p.add_argument("--iterations", type=int, default=70000,
                   help="MAML meta-iterations, as in the paper (pretrain gets a seventh)")
    p.add_argument("--seed", type=int, default=0, help="train.seed of both runs")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile MAML's meta-step (train.compile=true); default: when a C++ compiler "
                        "(CPU) or Triton (CUDA) is present")
    p.add_argument("--no-progress", action="store_true", help=no_progress)
    p.set_defaults(func=cmd_demo)
    return parser


def cmd_config(args) -> int:
    from metadapt.config import describe_keys

    positional, overrides = _split_overrides(args.items)
    if len(positional) > 1:
        raise UserError(f"config takes one recipe file, got {positional}")
    if positional:
        config = config_from_file(_path(positional[0]), overrides)
    else:
        config = build_config(None, overrides)
    rows = describe_keys(config)
    width = max(len(r[0]) for r in rows)
    type_width = max(len(r[1]) for r in rows)
    for key, kind, value, allowed, meaning in rows:
        text = f"{key:<{width}}  {kind:<{type_width}}  {value}"
        extra = "; ".join(x for x in (allowed, meaning) if x)
        print(f"{text}   # {extra}" if extra else text)
    return 0


PERMISSION = "fix the permissions or choose another folder"
WRITE_ERRORS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
                errno.EROFS: "choose a writable folder", errno.EACCES: PERMISSION, errno.EPERM: PERMISSION,
                errno.ENAMETOOLONG: "use a shorter path", errno.ELOOP: "a link points to itself; fix it",
                errno.ENOTDIR: "a part of the path is a file, not a folder"}


def one_line(message: str, limit: int = 600) -> str:
    """A message as one line of bounded length (long values are cut in the middle, keeping the advice
    at the end)."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else f"{text[:limit // 2]} … {text[-(limit // 2 - 3):]}"


def main(argv: list[str] | None = None) -> int:
    if "" not in sys.path and os.getcwd() not in sys.path:
        # recipes name users' classes by import path from here, as python -m does
        sys.path.insert(0, os.getcwd())
    parser = make_parser()
    args = parser.parse_args(argv)
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, one process speaks for all
    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            raise
        if rank0:
            print(f"metadapt: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        if args.debug or err.errno not in WRITE_ERRORS:
            raise
        if rank0:
            where = f" {err.filename!s}" if err.filename else ""
            print(f"metadapt: error: cannot use{where[:200]}: {err.strerror}; {WRITE_ERRORS[err.errno]}, "
                  "then run the command again (files already written are whole: writes are atomic)",
                  file=sys.stderr)
        return 2
    except Interrupted as stop:
        if rank0:
            print(f"metadapt: {stop}", file=sys.stderr)
        return 128 + int(stop.signum)
    except KeyboardInterrupt:
        print("metadapt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
