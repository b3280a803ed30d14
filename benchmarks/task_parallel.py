"""Meta-iterations per second of each task-parallel strategy on the sinusoid MAML meta-step.

Settings of the MAML paper: MLP 1-40-40-1, meta-batch 25, 10 support + 10 query points, inner lr
0.01. Times the full step (task sampling, meta-loss, backward, Adam), median of ``--repeats`` runs
of ``--iterations`` steps after a warm-up, for second- and first-order MAML with 1 and 5 inner
steps. This is what decides the ``task_parallel="auto"`` default; it is not a test.

    python benchmarks/task_parallel.py [--repeats 5] [--iterations 200] [--threads 0]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from metadapt.algorithms import MAML
from metadapt.models import MLP
from metadapt.tasks import SinusoidTasks


def time_strategy(strategy: str, first_order: bool, steps: int, iterations: int, repeats: int) -> list[float]:
    torch.manual_seed(0)
    algo = MAML(MLP(1, [40, 40], 1), inner_lr=0.01, inner_steps=steps, first_order=first_order,
                task_parallel=strategy)
    opt = torch.optim.Adam(algo.parameters(), lr=1e-3)
    tasks, gen = SinusoidTasks(shots=10, queries=10), torch.Generator().manual_seed(0)

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            loss, _ = algo.meta_loss(tasks.sample(25, gen))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return n / (time.perf_counter() - start)

    run(max(10, iterations // 10))  # warm-up
    return [run(iterations) for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print("| case | vmap it/s (median, min–max) | loop it/s (median, min–max) | vmap / loop |")
    print("|---|---|---|---|")
    for first_order in (False, True):
        for steps in (1, 5):
            medians = {}
            cells = []
            for strategy in ("vmap", "loop"):
                rates = time_strategy(strategy, first_order, steps, args.iterations, args.repeats)
                medians[strategy] = statistics.median(rates)
                cells.append(f"{medians[strategy]:.0f} ({min(rates):.0f}–{max(rates):.0f})")
            name = f"{'first' if first_order else 'second'}-order, {steps} step{'s' if steps > 1 else ''}"
            print(f"| {name} | {cells[0]} | {cells[1]} | {medians['vmap'] / medians['loop']:.1f}× |",
                  flush=True)


if __name__ == "__main__":
    main()
