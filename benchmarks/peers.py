"""Speed and memory side by side: metadapt against learn2learn, higher, TorchOpt, a plain
PyTorch loop and a JAX ``jit``+``vmap`` reference, on identical settings, in one run.

    bash benchmarks/setup_peers.sh                       # once: .venv-bench with every contender
    .venv-bench/bin/python benchmarks/peers.py           # ~20 min on 2 CPU cores
    .venv-bench/bin/python benchmarks/peers.py --device cuda    # fills the GPU table

Every (case, contender) pair runs in its own subprocess, so imports, compile caches and the
allocator of one cannot help or hurt another; the repeats of a case alternate between its
contenders' processes (one computes while the others wait), so a slower minute of a shared
machine falls on every contender alike instead of on whichever ran then. A "meta-iteration" is
the whole training step: the meta-gradient over the meta-batch and one Adam update of the
meta-parameters. Each repeat times ``n`` consecutive meta-iterations on pre-built batches, ``n``
chosen after warm-up so that a repeat lasts at least a second (thousands of iterations for the
compiled and JAX contenders, one for Conv-4); after the warm-up repeats (which
include any compile time, reported separately), the median repeat gives the speed and the
fastest and slowest repeats its range. Peak memory is the highest resident set size sampled
every millisecond during one more, untimed repeat (the sampling thread would slow the timed ones
on a single core), minus the resident size before the first step (on
CUDA: ``torch.cuda.max_memory_allocated``). ``--growth`` also measures the resident size after
100 and after 1,000 meta-iterations. Results go to ``benchmarks/results-<device>.json``;
``benchmarks/RESULTS.md`` and ``benchmarks/speed.png`` are rebuilt from every results file.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import selectors
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "sine": dict(model="mlp", tasks=25, shots=10, queries=10, inner_lr=0.01),
    "conv": dict(model="conv4", tasks=32, ways=5, shots=1, queries=15, inner_lr=0.4),
    "proto": dict(model="conv4", tasks=1, ways=5, shots=1, queries=15),
}
CASES = {
    "sine-2nd-1": ("sine", False, 1), "sine-2nd-5": ("sine", False, 5),
    "sine-1st-1": ("sine", True, 1), "sine-1st-5": ("sine", True, 5),
    "conv-2nd-1": ("conv", False, 1), "conv-2nd-5": ("conv", False, 5),
    "conv-1st-1": ("conv", True, 1), "conv-1st-5": ("conv", True, 5),
    "proto": ("proto", None, 0),
}
CONTENDERS = {
    "sine": ["metadapt", "metadapt-compiled", "learn2learn", "higher", "torchopt", "plain-loop", "jax"],
    # learn2learn-keepmem: learn2learn in a process with metadapt's allocator settings
    # (metadapt/allocator.py), to show how much of the Conv-4 difference those settings make
    "conv": ["metadapt", "learn2learn", "learn2learn-keepmem", "higher", "torchopt", "plain-loop"],
    "proto": ["metadapt", "plain-loop"],
}
# meta-iterations per timed repeat, and warm-up repeats (the compiled path compiles in warm-up)
BLOCK = {"sine": (20, 3), "conv": (1, 1), "proto": (10, 1)}
REPEAT_S = 1.0  # at least this many seconds per timed repeat (more meta-iterations for the fast contenders)


# ----- the data: identical tensors for every contender ---------------------------------------
def make_batches(kind: str, device, count: int = 4):
    import torch

    from metadapt.tasks import SinusoidTasks

    generator = torch.Generator().manual_seed(0)
    s = SETTINGS[kind]
    batches = []
    for _ in range(count):
        if kind == "sine":
            b = SinusoidTasks(shots=s["shots"], queries=s["queries"]).sample(s["tasks"], generator)
            batches.append(tuple(t.to(device) for t in (b.support_x, b.support_y, b.query_x, b.query_y)))
        else:
            t, w = s["tasks"], s["ways"]
            sx = torch.randn(t, w * s["shots"], 1, 28, 28, generator=generator)
            qx = torch.randn(t, w * s["queries"], 1, 28, 28, generator=generator)
            sy = torch.arange(w).repeat_interleave(s["shots"]).expand(t, -1).contiguous()
            qy = torch.arange(w).repeat_interleave(s["queries"]).expand(t, -1).contiguous()
            batches.append(tuple(x.to(device) for x in (sx, sy, qx, qy)))
    return batches


def make_model(kind: str, device):
    import torch

    from metadapt.models import MLP
    from metadapt.models.conv4 import Conv4

    torch.manual_seed(0)
    if kind == "sine":
        return MLP(1, [40, 40], 1).to(device)
    if kind == "conv":
        return Conv4(1, 64, out_features=SETTINGS["conv"]["ways"]).to(device)
    return Conv4(1, 64).to(device)


# ----- one meta-iteration per contender ------------------------------------------------------
def build_step(contender: str, kind: str, first_order, steps: int, device, plain_sgd: bool = False):
    """Returns ``(step, params)``: ``step(batch)`` computes the meta-gradient over the meta-batch
    and takes one Adam step (one SGD step of size 1 with ``plain_sgd``, so that the change of
    ``params()`` is the meta-gradient: ``--check`` compares it across contenders)."""

    if contender == "jax":
        return build_jax_step(kind, first_order, steps, plain_sgd)
    model = make_model(kind, device)
    step = _torch_step(contender, kind, first_order, steps, device, model, plain_sgd)
    return step, lambda: [p.detach().cpu().double().numpy().copy() for p in model.parameters()]


def _torch_step(contender, kind, first_order, steps, device, model, plain_sgd):
    import torch
    from torch import nn

    def Adam(params, lr):  # noqa: N802 - stands in for the optimizer class
        return torch.optim.SGD(params, lr=1.0) if plain_sgd else torch.optim.Adam(params, lr)

    loss_fn = nn.functional.mse_loss if kind == "sine" else nn.functional.cross_entropy
    lr = SETTINGS[kind].get("inner_lr", 0.0)

    if kind == "proto":
        if contender == "metadapt":
            from metadapt.algorithms.protonet import ProtoNet
            from metadapt.allocator import keep_freed_memory
            from metadapt.tasks import TaskBatch

            keep_freed_memory()

            algorithm = ProtoNet(model)
            opt = Adam(algorithm.parameters(), 1e-3) if plain_sgd else \
                torch.optim.Adam(algorithm.parameters(), 1e-3, fused=True)  # as the trainer builds it

            def step(batch):
                opt.zero_grad()
                algorithm.meta_backward(TaskBatch(*batch))
                opt.step()
            return step
        opt = Adam(model.parameters(), 1e-3)

        def step(batch):  # the textbook episode loop
            sx, sy, qx, qy = (t[0] for t in batch)
            z = model(torch.cat([sx, qx]))
            zs, zq = z[: len(sx)], z[len(sx):]
            prototypes = torch.stack([zs[sy == c].mean(0) for c in range(int(sy.max()) + 1)])
            loss = loss_fn(-torch.cdist(zq, prototypes).pow(2), qy)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    if contender.startswith("metadapt"):
        from metadapt.algorithms import MAML
        from metadapt.allocator import keep_freed_memory
        from metadapt.tasks import TaskBatch

        keep_freed_memory()  # as `metadapt train` does (train.keep_freed_memory, on by default)

        algorithm = MAML(model, loss="mse" if kind == "sine" else "cross_entropy", inner_lr=lr,
                         inner_steps=steps, first_order=first_order)
        # the trainer's optimizer (training/trainer.py build_optimizer): Adam's fused kernel
        opt = torch.optim.SGD(algorithm.parameters(), lr=1.0) if plain_sgd else \
            torch.optim.Adam(algorithm.parameters(), 1e-3, fused=True)
        if contender == "metadapt-compiled":  # train.compile=true: gradient and update in one compiled graph
            from metadapt.training.compiled import CompiledMetaStep

            fused = CompiledMetaStep(algorithm, opt)
            return lambda batch: fused(TaskBatch(*batch))

        def step(batch):  # the trainer's step: meta_backward differentiates one task at a time on the loop
            opt.zero_grad()
            algorithm.meta_backward(TaskBatch(*batch))
            opt.step()
        return step

    opt = Adam(model.parameters(), 1e-3)
    if contender == "learn2learn-keepmem":
        from metadapt.allocator import keep_freed_memory

        keep_freed_memory()
        contender = "learn2learn"
    if contender == "learn2learn":
        import learn2learn as l2l

        maml = l2l.algorithms.MAML(model, lr=lr, first_order=first_order)

        def step(batch):  # learn2learn's documented pattern: clone, adapt, backward per task
            sx, sy, qx, qy = batch
            opt.zero_grad()
            for i in range(sx.shape[0]):
                learner = maml.clone()
                for _ in range(steps):
                    learner.adapt(loss_fn(learner(sx[i]), sy[i]))
                (loss_fn(learner(qx[i]), qy[i]) / sx.shape[0]).backward()
            opt.step()
        return step

    if contender == "higher":
        import higher

        inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
        params = list(model.parameters())

        def step(batch):  # higher's innerloop_ctx; first order reads the gradient at the adapted weights
            sx, sy, qx, qy = batch
            opt.zero_grad()
            for i in range(sx.shape[0]):
                with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                          track_higher_grads=not first_order) as (fmodel, diffopt):
                    for _ in range(steps):
                        diffopt.step(loss_fn(fmodel(sx[i]), sy[i]))
                    query = loss_fn(fmodel(qx[i]), qy[i]) / sx.shape[0]
                    if first_order:
                        grads = torch.autograd.grad(query, list(fmodel.parameters()))
                        for p, g in zip(params, grads):
                            p.grad = g if p.grad is None else p.grad + g
                    else:
                        query.backward()
            opt.step()
        return step

    if contender == "torchopt":
        import torchopt
        from torch.func import functional_call

        if not first_order:
            inner_opt = torchopt.MetaSGD(model, lr=lr)

            def step(batch):  # TorchOpt's MAML example: MetaSGD, extract/recover state per task
                sx, sy, qx, qy = batch
                opt.zero_grad()
                net_state = torchopt.extract_state_dict(model)
                opt_state = torchopt.extract_state_dict(inner_opt)
                for i in range(sx.shape[0]):
                    for _ in range(steps):
                        inner_opt.step(loss_fn(model(sx[i]), sy[i]))
                    (loss_fn(model(qx[i]), qy[i]) / sx.shape[0]).backward()
                    torchopt.recover_state_dict(model, net_state)
                    torchopt.recover_state_dict(inner_opt, opt_state)
                opt.step()
            return step
        names = [n for n, _ in model.named_parameters()]
        sgd = torchopt.sgd(lr=lr)

        def step(batch):  # TorchOpt's functional API, inner gradients as constants
            sx, sy, qx, qy = batch
            opt.zero_grad()
            start = tuple(model.parameters())
            for i in range(sx.shape[0]):
                p, state = start, sgd.init(start)
                for _ in range(steps):
                    loss = loss_fn(functional_call(model, dict(zip(names, p)), (sx[i],)), sy[i])
                    grads = torch.autograd.grad(loss, p)
                    updates, state = sgd.update(grads, state, inplace=False)
                    p = torchopt.apply_updates(p, updates, inplace=False)
                (loss_fn(functional_call(model, dict(zip(names, p)), (qx[i],)), qy[i])
                 / sx.shape[0]).backward()
            opt.step()
        return step

    if contender == "plain-loop":
        from torch.func import functional_call

        names = [n for n, _ in model.named_parameters()]

        def step(batch):  # per-task torch.autograd.grad, the textbook loop
            sx, sy, qx, qy = batch
            total = 0.0
            for i in range(sx.shape[0]):
                fast = dict(model.named_parameters())
                for _ in range(steps):
                    loss = loss_fn(functional_call(model, fast, (sx[i],)), sy[i])
                    grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
                    fast = {n: fast[n] - lr * g for n, g in zip(names, grads)}
                total = total + loss_fn(functional_call(model, fast, (qx[i],)), qy[i])
            opt.zero_grad()
            (total / sx.shape[0]).backward()
            opt.step()
        return step
    raise ValueError(f"unknown contender {contender}")


def build_jax_step(kind: str, first_order: bool, steps: int, plain_sgd: bool = False):
    """The reference for what this machine can do: the sinusoid meta-step in JAX, one ``jit``
    over ``vmap`` of the inner loop, ``value_and_grad`` and an Adam update."""
    if kind != "sine":
        raise ValueError("the JAX reference covers the sinusoid case")
    import jax
    import jax.numpy as jnp
    import numpy as np

    model = make_model("sine", "cpu")
    params = {n: jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters()}
    layers = sorted({n.rsplit(".", 1)[0] for n in params},
                    key=lambda s: [int(t) if t.isdigit() else t for t in s.split(".")])
    lr = SETTINGS["sine"]["inner_lr"]

    def forward(p, x):
        for k, layer in enumerate(layers):
            x = x @ p[f"{layer}.weight"].T + p[f"{layer}.bias"]
            if k < len(layers) - 1:
                x = jax.nn.relu(x)
        return x

    def mse(p, x, y):
        return jnp.mean((forward(p, x) - y) ** 2)

    def task_loss(p, sx, sy, qx, qy):
        for _ in range(steps):
            g = jax.grad(mse)(p, sx, sy)
            if first_order:
                g = jax.lax.stop_gradient(g)
            p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)
        return mse(p, qx, qy)

    def meta_loss(p, sx, sy, qx, qy):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy))

    @jax.jit
    def update(p, m, v, t, sx, sy, qx, qy):
        loss, g = jax.value_and_grad(meta_loss)(p, sx, sy, qx, qy)
        if plain_sgd:
            return jax.tree_util.tree_map(lambda w, d: w - d, p, g), m, v, t, loss
        t = t + 1
        m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
        p = jax.tree_util.tree_map(
            lambda w, a, b: w - 1e-3 * (a / (1 - 0.9 ** t)) / (jnp.sqrt(b / (1 - 0.999 ** t)) + 1e-8),
            p, m, v)
        return p, m, v, t, loss

    state = {"p": params, "m": jax.tree_util.tree_map(jnp.zeros_like, params),
             "v": jax.tree_util.tree_map(jnp.zeros_like, params), "t": jnp.zeros(())}
    converted = {}

    def step(batch):
        key = id(batch)
        if key not in converted:
            converted[key] = tuple(jnp.asarray(t.numpy()) for t in batch)
        state["p"], state["m"], state["v"], state["t"], loss = update(
            state["p"], state["m"], state["v"], state["t"], *converted[key])
        loss.block_until_ready()
    return step, lambda: [np.asarray(state["p"][n], dtype=np.float64) for n in params]


# ----- measuring one pair in this process ----------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Highest resident set size seen while active, sampled every millisecond (used on an
    untimed block only: the sampling thread would share the core with a timed one)."""

    def __init__(self):
        self.peak, self._stop, self._thread = 0, threading.Event(), None

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __enter__(self):
        self.peak = max(self.peak, rss_bytes())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def serve(case: str, contender: str, device: str) -> None:
    """A worker for one (case, contender): builds and warms up its step, then times one block
    per ``run`` line read from stdin (printing the seconds per iteration) and prints its summary
    on ``done``. The driver alternates between the workers of a case, so that every contender's
    repeats are spread over the same stretch of time and a busier minute of the machine lands on
    all of them alike."""
    import torch

    protocol, sys.stdout = sys.stdout, sys.stderr  # whatever a library prints stays off the protocol
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    kind, first_order, steps = CASES[case]
    batches = make_batches(kind, device)
    step, _ = build_step(contender, kind, first_order, steps, device)
    block, warmup = BLOCK[kind]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gc.collect()
    base = rss_bytes()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    counter = 0
    first_call = time.perf_counter()
    step(batches[0])
    sync()
    first_call = time.perf_counter() - first_call
    for _ in range(warmup):
        start = time.perf_counter()
        for _ in range(block):
            counter += 1
            step(batches[counter % len(batches)])
        sync()
        seconds = (time.perf_counter() - start) / block
    # a timed repeat lasts at least REPEAT_S: a 10 ms repeat of a fast contender is at the mercy of
    # one scheduler hiccup, and the median of a few such repeats is not a throughput
    block = max(block, math.ceil(REPEAT_S / seconds))
    print("ready", file=protocol, flush=True)
    times = []
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        for _ in range(block):
            counter += 1
            step(batches[counter % len(batches)])
        sync()
        times.append((time.perf_counter() - start) / block)
        print(json.dumps(times[-1]), file=protocol, flush=True)
    # memory is sampled on one more, untimed block: a sampling thread would take time from the step
    with PeakSampler() as sampler:
        for _ in range(block):
            counter += 1
            step(batches[counter % len(batches)])
        sync()
    result = {
        "case": case, "contender": contender, "device": device,
        "seconds_per_iteration": statistics.median(times), "min": min(times), "max": max(times),
        "repeats": len(times), "iterations_per_repeat": block, "first_call_s": first_call,
        "peak_memory_mb": (sampler.peak - base) / 2**20,
        "threads": torch.get_num_threads(), "interleaved": True,
    }
    if device.startswith("cuda"):
        result["peak_memory_mb"] = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    print(json.dumps(result), file=protocol, flush=True)


def measure_growth(device: str) -> list[dict]:
    """Resident memory after 100 and after 1,000 meta-iterations (and evaluation-time adaptations)."""
    import torch

    from metadapt.algorithms import MAML
    from metadapt.allocator import keep_freed_memory
    from metadapt.tasks import TaskBatch

    keep_freed_memory()  # as the trainer runs
    rows = []
    jobs = [
        ("sinusoid MAML, second order, 1 step (training)", "sine", False, 1, "train"),
        ("sinusoid first-order MAML, 5 steps (training)", "sine", True, 5, "train"),
        ("sinusoid evaluation-time adaptation, 10 steps", "sine", True, 10, "adapt"),
        ("Conv-4 first-order MAML, 1 step, meta-batch 4, 5+15 images (training)", "conv", True, 1, "train"),
    ]
    for label, kind, first_order, steps, mode in jobs:
        model = make_model(kind, device)
        batches = make_batches(kind, device)
        if kind == "conv":
            batches = [tuple(t[:4, : (5 if j in (0, 1) else 15)] for j, t in enumerate(b)) for b in batches]
        algorithm = MAML(model, loss="mse" if kind == "sine" else "cross_entropy",
                         inner_lr=SETTINGS[kind]["inner_lr"], inner_steps=steps, first_order=first_order)
        opt = torch.optim.Adam(algorithm.parameters(), 1e-3)
        readings = {}
        for i in range(1, 1001):
            batch = TaskBatch(*batches[i % len(batches)])
            if mode == "train":
                opt.zero_grad()
                algorithm.meta_backward(batch)
                opt.step()
            else:
                algorithm.adapt_tasks(batch.support_x, batch.support_y, steps).predict(batch.query_x)
            if i in (100, 1000):
                gc.collect()
                readings[i] = (torch.cuda.memory_allocated() if device.startswith("cuda")
                               else rss_bytes()) / 2**20
        rows.append({"label": label, "mb_100": readings[100], "mb_1000": readings[1000],
                     "growth": readings[1000] / readings[100] - 1})
    return rows


def check_one(case: str, contender: str, device: str) -> list:
    """The meta-gradient of the first batch (one SGD step of size 1 from the shared initialization)."""
    kind, first_order, steps = CASES[case]
    batches = make_batches(kind, device)
    step, params = build_step(contender, kind, first_order, steps, device, plain_sgd=True)
    before = params()
    step(batches[0])
    return [(b - a).ravel().tolist() for a, b in zip(params(), before)]


# ----- the driver --------------------------------------------------------------------------
def versions() -> dict:
    import importlib

    out = {"python": platform.python_version()}
    for name in ["torch", "learn2learn", "higher", "torchopt", "jax", "metadapt"]:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing peer is reported, not fatal
            out[name] = "not installed"
    return out


def machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "?")
    return f"{model}, {os.cpu_count()} cores"


def agreement(cases, contenders, device, timeout) -> dict:
    """Largest difference of each contender's first meta-gradient from metadapt's, per case."""
    import numpy as np

    out = {}
    for case in cases:
        names = [n for n in CONTENDERS[CASES[case][0]] if contenders is None or n in contenders]
        grads = {}
        for name in names:
            cmd = [sys.executable, __file__, "--one-check", case, name, "--device", device]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0:
                grads[name] = np.concatenate(
                    [np.asarray(g) for g in json.loads(proc.stdout.strip().splitlines()[-1])])
        if "metadapt" in grads:
            ref = grads["metadapt"]
            scale = float(np.abs(ref).max())
            out[case] = {n: float(np.abs(g - ref).max()) / scale for n, g in grads.items() if n != "metadapt"}
    return out


def run_case(case: str, contenders: list[str], device: str, repeats: int, timeout: float) -> list[dict]:
    """Every contender of ``case`` in its own process; repeats alternate between them (one
    process computes at a time, the others wait on their stdin)."""
    workers, rows = {}, {}
    for name in contenders:  # started and warmed up one after another
        cmd = [sys.executable, __file__, "--serve", case, name, "--device", device]
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        proc.log = log
        if _read_line(proc, timeout) == "ready":
            workers[name] = proc
        else:
            rows[name] = {"case": case, "contender": name, "error": _failure(proc)}
    for _ in range(repeats):
        for name, proc in list(workers.items()):
            if _ask(proc, "run", timeout) is None:
                rows[name] = {"case": case, "contender": name, "error": _failure(proc)}
                del workers[name]
    for name, proc in workers.items():
        line = _ask(proc, "done", timeout)
        rows[name] = json.loads(line) if line else {"case": case, "contender": name, "error": _failure(proc)}
        proc.wait(timeout=60)
    return [rows[name] for name in contenders]


def _ask(proc, command: str, timeout: float) -> str | None:
    try:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
    except BrokenPipeError:
        return None
    return _read_line(proc, timeout)


def _read_line(proc, timeout: float) -> str | None:
    """The worker's next stdout line, or None if it died or stayed silent for ``timeout`` s."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            return None
    return proc.stdout.readline().strip() or None


def _failure(proc) -> str:
    """The last line the worker wrote to stderr (its error), after making sure it has stopped."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.log.seek(0)
    last = (proc.log.read().strip().splitlines() or ["no answer within the timeout"])[-1]
    return last[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--contenders", nargs="*", default=None)
    parser.add_argument("--no-growth", action="store_true", help="skip the 1,000-iteration memory check")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads for every contender (torch; XLA single-threaded when 1); "
                             "0: defaults")
    parser.add_argument("--serve", nargs=2, metavar=("CASE", "CONTENDER"), help=argparse.SUPPRESS)
    parser.add_argument("--one-check", nargs=2, metavar=("CASE", "CONTENDER"), help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild RESULTS.md and the chart from the JSON files")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5 (the median of at least 5 repeats is reported)")
    if args.threads:
        os.environ["BENCH_THREADS"] = str(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if args.threads == 1:
            os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    if args.serve:
        serve(*args.serve, args.device)
        return
    if args.one_check:
        print(json.dumps(check_one(*args.one_check, args.device)))
        return
    if not args.report_only:
        from tqdm import tqdm

        rows = []
        for case in tqdm(args.cases, desc="benchmark", unit="case"):
            names = [n for n in CONTENDERS[CASES[case][0]] if args.contenders is None or n in args.contenders]
            rows += run_case(case, names, args.device, args.repeats, args.timeout)
            for row in rows[-len(names):]:
                tqdm.write(json.dumps(row))
        checks = agreement(args.cases, args.contenders, args.device, args.timeout)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        growth = [] if args.no_growth else measure_growth(args.device)
        record = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": args.device, "machine": machine(args.device), "versions": versions(),
            "threads": args.threads or "default", "affinity": sorted(os.sched_getaffinity(0)),
            "command": " ".join(["python", "benchmarks/peers.py"] + sys.argv[1:]),
            "rows": rows, "growth": growth, "checks": checks,
        }
        out = HERE / f"results-{args.device.split(':')[0]}.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(out)
    from report_peers import write_report

    write_report(HERE)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
