"""What ``train.keep_freed_memory`` and the fused Adam save, each measured in one run.

    python benchmarks/allocator.py            # about 2 minutes on one core

Conv-4 MAML (second order, 1 step, the ``peers.py`` Conv-4 case: meta-batch 32, 5 support + 75
query images) runs in two fresh processes, glibc's defaults against ``keep_freed_memory()``,
each timing meta-iterations after one warm-up and counting the minor page faults per iteration.
Then Adam's step on the sinusoid MLP's six tensors: the default per-tensor loop against
``fused=True``. One thread throughout.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONV_STEP = """
import json, resource, statistics, sys, time, torch
sys.path.insert(0, sys.argv[2])
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from metadapt.allocator import keep_freed_memory
    assert keep_freed_memory()
from peers import make_batches, make_model
from metadapt.algorithms import MAML
from metadapt.tasks import TaskBatch
algorithm = MAML(make_model("conv", "cpu"), loss="cross_entropy", inner_lr=0.4, inner_steps=1)
opt = torch.optim.Adam(algorithm.parameters(), 1e-3, fused=True)
batches = [TaskBatch(*b) for b in make_batches("conv", "cpu", 2)]
def step(b):
    opt.zero_grad(); algorithm.meta_backward(b); opt.step()
step(batches[0])
times, faults = [], []
for i in range(3):
    f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    step(batches[i % 2])
    times.append(time.perf_counter() - t)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
print(json.dumps({"seconds": statistics.median(times), "faults": statistics.median(faults)}))
"""


def adam_step_us(**options) -> float:
    import torch

    from metadapt.models import MLP

    torch.set_num_threads(1)
    model = MLP(1, [40, 40], 1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(model.parameters(), 1e-3, **options)
    for _ in range(100):
        opt.step()
    start = time.perf_counter()
    for _ in range(2000):
        opt.step()
    return (time.perf_counter() - start) / 2000 * 1e6


def main() -> None:
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", CONV_STEP, mode, str(HERE)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"Conv-4 MAML step, allocator {mode:7s}: {r['seconds']:.2f} s, "
              f"{r['faults']:,.0f} minor page faults")
    print(f"Adam step on the MLP: per-tensor loop {adam_step_us():.0f} µs, "
          f"fused {adam_step_us(fused=True):.0f} µs")


if __name__ == "__main__":
    main()
