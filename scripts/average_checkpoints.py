"""Average the weights of several checkpoints of one run into a new checkpoint file.

    python scripts/average_checkpoints.py RUN step-40 step-50 step-60 --out RUN/averaged-40-60.pt
    metadapt eval RUN --checkpoint RUN/averaged-40-60.pt

Every floating-point tensor of the algorithm's state (the model's weights, learned step sizes, the
RL² weight average) becomes the uniform mean θ̄ = (1/K) Σ_k θ_k over the K checkpoints, as in
stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018) over the iterates a run kept; integer state (counters) and everything
else in the file (optimizer, generator, step) are the last-named checkpoint's. The checkpoints must
come from the same run's recipe: same algorithm, same keys, same shapes and dtypes. The result is
loaded back and checked against the run's algorithm before it is kept, so ``metadapt eval`` and
``metadapt.load`` read it as any other checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def average_states(payloads: list[dict], names: list[str]) -> dict:
    """The last payload with its ``state``'s floating-point tensors replaced by their mean over all."""
    from metadapt.errors import UserError

    last = payloads[-1]
    algorithms = {p.get("algorithm") for p in payloads}
    if len(algorithms) > 1:
        raise UserError(f"the checkpoints were written by different algorithms "
                        f"({sorted(map(str, algorithms))}); average checkpoints of one run")
    state = {}
    for key, value in last["state"].items():
        for name, payload in zip(names, payloads):
            other = payload["state"].get(key)
            if not isinstance(value, torch.Tensor) or not isinstance(other, torch.Tensor) or (
                    other.shape != value.shape or other.dtype != value.dtype):
                raise UserError(f"checkpoint {name!r} does not match {names[-1]!r} at {key[:60]}; "
                                "average checkpoints of one run")
        if value.is_floating_point():
            total = sum(p["state"][key].double() for p in payloads)
            state[key] = (total / len(payloads)).to(value.dtype)
        else:
            state[key] = value.clone()
    for name, payload in zip(names, payloads):
        if set(payload["state"]) != set(state):
            raise UserError(f"checkpoints {name!r} and {names[-1]!r} hold different state; "
                            "average checkpoints of one run")
    return {**last, "state": state, "averaged_from": [str(n) for n in names]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the run directory metadapt train wrote")
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="two or more: best, last, step-N or a path, as metadapt eval --checkpoint")
    parser.add_argument("--out", required=True, help="the averaged checkpoint's file (.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)

    from metadapt.cli import one_line
    from metadapt.errors import UserError
    from metadapt.training import load, rundir
    from metadapt.training.checkpoint import load_checkpoint, save_checkpoint

    try:
        run = Path(args.run).expanduser()
        if not (run / "config.yaml").is_file():
            raise UserError(f"{str(run)!r} is not a run directory (no config.yaml); give the folder metadapt "
                            "train wrote")
        if len(args.checkpoints) < 2:
            raise UserError("give at least two checkpoints to average")
        out = Path(args.out).expanduser()
        if out.suffix != ".pt":
            raise UserError(f"--out {str(out)!r} must end in .pt")
        if out.exists() and not args.overwrite:
            raise UserError(f"{str(out)!r} exists; pass --overwrite to replace it")
        paths = [rundir.checkpoint_choice(run, which) for which in args.checkpoints]
        averaged = average_states([load_checkpoint(p) for p in paths], args.checkpoints)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, averaged)
        try:
            load(run, which=str(out))   # the run's algorithm restores it, or it is not kept
        except UserError:
            out.unlink()
            raise
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    print(f"averaged {len(paths)} checkpoints ({', '.join(args.checkpoints)}) into {out}\n"
          f"next: metadapt eval {run} --checkpoint {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
