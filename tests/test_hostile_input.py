"""Hostile and mistaken input, as an adversarial user would give it: each is one line naming the
problem and the fix, exit status 2, no traceback, and every file the user had byte-for-byte the same
(checksums before and after) — or, where the input is fine but unusual, the right result."""
import errno
import hashlib
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from metadapt.cli import main
from metadapt.errors import UserError
from metadapt.training import load

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
TINY = ["train.iterations=20", "train.meta_batch_size=4", "train.val_every=10", "train.val_tasks=8",
        "train.checkpoint_every=10", "model.hidden=[8]", "train.threads=1", "eval.tasks=6", "eval.steps=2",
        "eval.shots=[5]"]
BANDITS = [str(ROOT / "configs/rl/rl2-bandits-n10-k5.yaml"), "model.hidden=8", "train.iterations=2",
           "train.meta_batch_size=4", "train.val_tasks=4", "train.val_every=1", "train.checkpoint_every=1",
           "eval.tasks=4"]


def checksums(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    assert main(["train", RECIPE, *TINY, "--run-dir", str(root / "maml"), "--no-progress"]) == 0
    assert main(["train", *BANDITS, "--run-dir", str(root / "bandits"), "--no-progress"]) == 0
    return root


def write(tmp, name, content):
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def copy_run(runs, tmp, change=None):
    target = tmp / "copy"
    shutil.copytree(runs / "maml", target)
    if change:
        change(target)
    return target


def bomb(levels=9):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "train:\n  seed: 0\n" + "\n".join(lines) + f"\nname: *a{levels - 1}\n"


def adapt(runs, tmp, support="1,2\n2,3\n", query="0\n", extra=()):
    return ["adapt", str(runs / "maml"), "--support", write(tmp, "s.csv", support), "--query",
            write(tmp, "q.csv", query), *extra]


REFUSED = {
    # bounded input
    "yaml alias bomb": (lambda r, t: ["train", write(t, "bomb.yaml", bomb())],
                        "expands to more than 100,000 values"),
    "self-referencing alias": (lambda r, t: ["train", write(t, "loop.yaml", "train: &x\n  seed: [*x]\n")],
                               "expands to more than 100,000 values"),
    "huge recipe": (lambda r, t: ["train", write(t, "big.yaml", "# " + "x" * 2_000_000 + "\n")],
                    "a recipe is a few hundred"),
    "deep recipe": (lambda r, t: ["train", write(t, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")],
                    "deep.yaml"),
    "billion inner steps": (lambda r, t: ["train", RECIPE, "algorithm.inner_steps=1000000000"],
                            "algorithm.inner_steps must be <= 1000"),
    "huge meta-batch": (lambda r, t: ["train", RECIPE, "train.meta_batch_size=10000000000"],
                        "train.meta_batch_size must be <= 100000"),
    "cannot fit in memory": (lambda r, t: ["train", RECIPE, "algorithm.inner_steps=1000",
                                           "model.hidden=[2000, 2000]", "train.meta_batch_size=100000"],
                             "needs at least"),
    "huge adapt steps": (lambda r, t: adapt(r, t, extra=["--steps", "200000"]),
                         "steps must be between 0 and 10,000"),
    "long value in message": (lambda r, t: ["train", RECIPE, "train.optimizer=" + "x" * 100_000],
                              "train.optimizer must be one of"),
    # tracebacks that were
    "unknown device": (lambda r, t: ["train", RECIPE, *TINY, "train.device=tpu"],
                       "train.device='tpu' is not a device"),
    "absent gpu index": (lambda r, t: ["train", RECIPE, *TINY, "train.device=cuda:7"],
                         "train.device=cuda:7 but"),
    "eval no tasks": (lambda r, t: ["eval", str(r / "maml"), "--tasks", "0"], "--tasks must be between 1"),
    "eval negative steps": (lambda r, t: ["eval", str(r / "maml"), "--steps", "-1"],
                            "--steps must be between 0"),
    "eval compare other family": (lambda r, t: ["eval", str(r / "maml"), "--compare", str(r / "bandits")],
                                  "compare runs trained on the same kind of task"),
    "config is a list": (lambda r, t: ["eval", str(copy_run(r, t, lambda c: (c / "config.yaml").write_text(
        "- 1\n- 2\n")))], "not a mapping"),
    "config not utf-8": (lambda r, t: ["eval", str(copy_run(r, t, lambda c: (c / "config.yaml").write_bytes(
        b"\xff\xfe\x00bad")))], "is not UTF-8"),
    "recipe not utf-8": (lambda r, t: ["train", write(t, "r.yaml", b"name: caf\xe9\n")], "is not UTF-8 text"),
    "recipe is a folder": (lambda r, t: ["train", str(t)], "recipe"),
    "run dir is a file": (lambda r, t: ["train", RECIPE, "--run-dir", write(t, "f", "x")], "is a file"),
    "adapt output folder missing": (lambda r, t: adapt(r, t, extra=["--output", str(t / "no/such/p.csv")]),
                                    "is not a writable folder"),
    "adapt output is a folder": (lambda r, t: adapt(r, t, extra=["--output", str(t), "--overwrite"]),
                                 "is a folder; name a file"),
    "eval unknown checkpoint": (lambda r, t: ["eval", str(r / "maml"), "--checkpoint", "step-99"],
                                "kept checkpoints:"),
    # silently wrong, before
    "duplicate recipe key": (lambda r, t: ["train", write(t, "d.yaml", "train:\n  seed: 1\n  seed: 2\n")],
                             "key 'seed' is given twice (line 3)"),
    "recipe key not a name": (lambda r, t: ["train", write(t, "k.yaml", "?\n")],
                              "a YAML key must be a name, got 'None' (line 1)"),
    "recipe section key a number": (lambda r, t: ["train", write(t, "n.yaml", "train:\n  1: 2\n")],
                                    "a YAML key must be a name, got '1' (line 2)"),
    "run config key a number": (lambda r, t: ["eval", str(copy_run(r, t, lambda c: (c / "config.yaml")
                                                                    .write_text("task:\n  7: sinusoid\n")))],
                                "a YAML key must be a name, got '7'"),
    "csv beyond float32": (lambda r, t: adapt(r, t, support="1,2\n2,1e39\n"), "beyond the float32 range"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_in_one_line_and_nothing_changes(case, runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup, message = REFUSED[case]
    args = setup(runs, tmp_path)
    before_runs, before_tmp = checksums(runs), checksums(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("metadapt: error: ") and err.count("\n") == 1 and len(err) < 700, err[:300]
    assert checksums(runs) == before_runs and checksums(tmp_path) == before_tmp


# ----- handled correctly ----------------------------------------------------------------------------
def test_csv_with_a_byte_order_mark_keeps_its_first_row(runs, tmp_path, capsys):
    plain = adapt(runs, tmp_path, support="1,2\n2,3\n3,4\n", query="0\n0.5\n")
    assert main(plain) == 0
    expected = capsys.readouterr().out
    bom = adapt(runs, tmp_path, support="\ufeff1,2\n2,3\n3,4\n", query="\ufeff0\n0.5\n")
    assert main(bom) == 0
    out = capsys.readouterr().out
    assert out == expected and len(out.splitlines()) == 3


def test_eval_reads_a_torn_log_and_a_corrupt_summary(runs, tmp_path, capsys):
    run = copy_run(runs, tmp_path)
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 21, "split": "tr')
    (run / "summary.json").write_text("{not json")
    assert main(["eval", str(run), "--no-progress"]) == 0
    assert json.loads((run / "eval/results.json").read_text())["settings"]


def test_eval_writes_all_or_nothing(runs, tmp_path, capsys, monkeypatch):
    """A full disk while the report is written: results, plots and report stay the previous set."""
    run = copy_run(runs, tmp_path)
    assert main(["eval", str(run), "--no-progress"]) == 0
    before = checksums(run)
    import metadapt.evaluation.report as report

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "report.md"))

    monkeypatch.setattr(report, "atomic_write_text", full)
    assert main(["eval", str(run), "--tasks", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device; free some space" in err and err.count("\n") == 1
    assert checksums(run) == before
    assert not list(run.glob(".eval-*"))


def test_unwritable_run_is_refused_before_evaluating(runs, tmp_path, capsys, monkeypatch):
    run = copy_run(runs, tmp_path)
    import tempfile

    import metadapt.evaluation.curves as curves

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    monkeypatch.setattr(curves, "evaluate_learning_speed", lambda *a, **k: pytest.fail("computed first"))
    before = checksums(run)
    assert main(["eval", str(run), "--no-progress"]) == 2
    assert "cannot write in" in capsys.readouterr().err
    assert checksums(run) == before


def test_json_outputs_are_strict(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    assert main(["eval", str(run), "--no-progress"]) == 0
    def refuse(constant):
        pytest.fail(f"non-strict JSON constant {constant}")

    for path in [run / "summary.json", run / "eval/results.json"]:
        json.loads(path.read_text(), parse_constant=refuse)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)


def test_files_honour_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        assert main(["train", RECIPE, *TINY, "train.iterations=2", "--run-dir", str(tmp_path / "r"),
                     "--no-progress"]) == 0
    finally:
        os.umask(old)
    for name in ("config.yaml", "summary.json", "checkpoints/last.pt"):
        assert (tmp_path / "r" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_run_whose_every_step_was_skipped_fails(tmp_path, capsys):
    args = ["train", RECIPE, *TINY, "train.iterations=3", "train.on_nonfinite=skip",
            "algorithm.inner_lr=1e38",
            "--run-dir", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "every one of the 3 steps was non-finite and skipped" in err and err.count("\n") == 1


# ----- the Python API's edges -----------------------------------------------------------------------
def test_adapt_takes_numpy_float64_and_one_dimensional_targets(runs):
    run = load(runs / "maml")
    x = np.linspace(-1, 1, 5)[:, None]
    y = np.sin(x)
    reference = run.adapt(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), steps=2)
    query = torch.linspace(-1, 1, 7)[:, None]
    expected = reference.predict(query)
    for sx, sy in [(x, y), (x, y[:, 0]), (x[:, 0], y[:, 0]), (torch.tensor(x), torch.tensor(y[:, 0]))]:
        adapted = run.adapt(sx, sy, steps=2)
        assert torch.allclose(adapted.predict(query.double().numpy()), expected, atol=1e-6)
        assert adapted.predict(query).shape == (7, 1)


@pytest.mark.parametrize("call,message", [
    (lambda run: run.adapt(torch.zeros(0, 1), torch.zeros(0, 1)), "S ≥ 1"),
    (lambda run: run.adapt([1.0], 3.0), "support_x has 1 examples but support_y one value"),
    (lambda run: run.adapt(torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.complex64)), "real numbers"),
    (lambda run: run.adapt(torch.zeros(4, 1), torch.zeros(3, 1)), "4 examples but support_y 3"),
    (lambda run: run.adapt(torch.zeros(4, 2), torch.zeros(4, 1)), "support_x has shape (4, 2)"),
    (lambda run: run.adapt(torch.zeros(4, 1), torch.zeros(4, 1), steps=2.5), "steps must be a whole number"),
    (lambda run: run.adapt(torch.zeros(4, 1), torch.zeros(4, 1), steps=-1), "between 0 and"),
    (lambda run: run.adapt(torch.full((4, 1), float("nan")), torch.zeros(4, 1)), "NaN or infinite"),
    (lambda run: run.adapt(torch.zeros(4, 1), torch.full((4, 1), 1e39, dtype=torch.float64)),
     "NaN or infinite"),
    (lambda run: run.adapt(torch.zeros(4, 1), torch.zeros(4, 1), steps=2).predict(torch.zeros(3, 1), step=-2),
     "step must be a whole number from 0 to 2"),
    (lambda run: run.adapt(torch.zeros(4, 1), torch.zeros(4, 1), steps=2).predict(torch.zeros(3, 1), step=3),
     "step must be a whole number from 0 to 2"),
])
def test_api_edges_are_clear_errors(call, message, runs):
    run = load(runs / "maml")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(run)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_adaptation_can_keep_only_its_end(strategy, runs):
    run = load(runs / "maml")
    run.algorithm.strategy = strategy
    x, y = torch.linspace(-2, 2, 6)[:, None], torch.linspace(-1, 1, 6)[:, None]
    full, lean = run.adapt(x, y, steps=7), run.adapt(x, y, steps=7, keep_steps=False)
    assert lean.steps == full.steps == 7 and len(lean.trajectory) == 2 and len(full.trajectory) == 8
    assert torch.equal(lean.predict(x), full.predict(x))
    assert torch.equal(lean.predict(x, step=0), full.predict(x, step=0))
    with pytest.raises(UserError, match="step 3 was not kept"):
        lean.predict(x, step=3)


def test_an_evaluation_that_cannot_fit_is_refused_before_it_starts(runs, tmp_path, capsys, monkeypatch):
    import metadapt.resources as resources

    monkeypatch.setattr(resources, "available_bytes", lambda device: 1_000_000)
    run = copy_run(runs, tmp_path)
    before = checksums(run)
    assert main(["eval", str(run), "--steps", "10000", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "evaluating 10000 adaptation steps of 6 tasks at a time needs at least" in err
    assert "lower --steps" in err
    assert checksums(run) == before


def test_load_on_an_absent_device_is_a_clear_error(runs):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="no CUDA device is available"):
        load(runs / "maml", device="cuda")


# ----- Omniglot data: split files, caches and images ----------------------------------------------
def png_header(width, height):
    """A PNG whose header claims ``width × height`` pixels (a decompression bomb's calling card)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


@pytest.fixture
def omniglot(tmp_path, monkeypatch):
    from omniglot_fixtures import make_archives

    import metadapt.datasets.omniglot as data

    def make(extra=()):
        folder = tmp_path / "data"
        sums = make_archives(folder, extra_entries=list(extra))
        monkeypatch.setattr(data, "ARCHIVES", sums)
        return folder

    monkeypatch.setenv("METADAPT_CACHE", str(tmp_path / "cache"))
    return make


def omniglot_train(data_dir, run_dir, *extra):
    return ["train", str(ROOT / "configs/omniglot/protonet.yaml"), f"task.data_dir={data_dir}",
            "task.download=false", "train.iterations=2", "train.val_tasks=4", "train.meta_batch_size=2",
            "task.ways=2", "task.queries=2", "model.filters=8", "eval.ways=[2]", "eval.shots=[1]",
            "eval.queries=2", *extra, "--run-dir", str(run_dir),
            "--no-progress"]


SPLIT_LINES = ["backgroundAlpha0/character01/rot045", "backgroundAlpha0/character01/rotabc", "nonsense",
               "Nope/character01/rot000"]


@pytest.mark.parametrize("line", SPLIT_LINES)
def test_malformed_split_lines_are_refused(line, omniglot, tmp_path, capsys):
    data = omniglot()
    for name in ("train", "trainval", "val", "test"):
        path = data / "splits/vinyals" / f"{name}.txt"
        if path.is_file():
            path.write_text(path.read_text() + line + "\n")
    assert main(omniglot_train(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "is not Alphabet/characterNN/rotDDD" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_evaluation_ways_the_data_cannot_serve_are_refused_before_training(omniglot, tmp_path, capsys):
    data = omniglot()
    assert main(omniglot_train(data, tmp_path / "run", "eval.ways=[50]", "eval.queries=1")) == 2
    err = capsys.readouterr().err
    assert "asked for 50-way episodes but the dataset has only 24 classes" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_truncated_cache_is_rebuilt(omniglot, tmp_path):
    data = omniglot()
    assert main(omniglot_train(data, tmp_path / "a")) == 0
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:1000])
    from metadapt.tasks.omniglot import _classes

    _classes.cache_clear()  # as a new process would: read the cache file again
    assert main(omniglot_train(data, tmp_path / "b")) == 0
    assert len(cache.read_bytes()) > 1000


@pytest.mark.parametrize("side,message", [(3000, "is 3000×3000 pixels"), (60000, "a decompression bomb")])
def test_a_huge_png_is_refused_before_decoding(side, message, omniglot, tmp_path, capsys):
    data = omniglot([("images_background/Alphabet0/character01/9999_99.png", png_header(side, side))])
    assert main(omniglot_train(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_background_split_validates_on_held_out_background_alphabets(omniglot, tmp_path):
    from metadapt.datasets.omniglot import load_omniglot

    data = omniglot()
    subsets = {name: set(load_omniglot(name, split="background", data_dir=data, allow_download=False,
                                       progress=False)) for name in ("train", "val", "trainval", "test")}
    assert subsets["val"] and subsets["train"] and not subsets["val"] & subsets["train"]
    assert subsets["train"] | subsets["val"] == subsets["trainval"]
    assert not subsets["test"] & subsets["trainval"]
    assert main(omniglot_train(data, tmp_path / "run", "task.split=background")) == 0
