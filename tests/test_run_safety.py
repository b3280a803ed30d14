"""Run directories are owned and safe: --overwrite deletes only runs, a refused resume touches
nothing, one writer at a time, checkpoints checked in full, and every piece of advice followed
literally works. Each refusal: one line, exit 2, and the user's files byte-for-byte unchanged."""
import hashlib
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metadapt.cli import main
from metadapt.training import rundir

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
TINY = ["train.iterations=30", "train.meta_batch_size=4", "train.val_every=10", "train.val_tasks=8",
        "train.checkpoint_every=10", "train.log_every=5", "model.hidden=[8, 8]", "train.threads=1"]


def checksums(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def train_args(run_dir, *extra):
    return ["train", RECIPE, *TINY, *extra, "--run-dir", str(run_dir), "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (30 steps, checkpoints every 10) and its final state."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(train_args(run)) == 0
    return run


def fresh_copy(trained, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(trained, target)
    return target


def refused(args, capsys, message, *watched):
    before = [checksums(w) if w.is_dir() else w.read_bytes() for w in watched]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("metadapt: error: ") and err.count("\n") == 1 and "Traceback" not in err
    after = [checksums(w) if w.is_dir() else w.read_bytes() for w in watched]
    assert after == before
    return err


def logged(run):
    """The metrics log without its timings."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("seconds", "iterations_per_second")} for row in rows]


def final(run):
    return torch.load(run / "checkpoints/last.pt", weights_only=True)


# ----- 1. --overwrite deletes only runs, and only after everything is validated ---------------------
def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "notarun"
    (folder / "data").mkdir(parents=True)
    (folder / "thesis.tex").write_text("a year of work")
    (folder / "data/x.csv").write_text("1,2\n")
    refused(train_args(folder, "--overwrite"), capsys, "--overwrite replaces only a metadapt run", tmp_path)


def test_overwrite_refuses_a_run_holding_the_users_files(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    (run / "notes.txt").write_text("mine")
    refused(train_args(run, "--overwrite"), capsys, "(notes.txt)", tmp_path)


@pytest.mark.parametrize("name", [".", "..", "../victim", "a/b", "/etc", "~", ""])
def test_a_run_name_is_one_plain_folder(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/keep").mkdir(parents=True)
    (tmp_path / "runs/keep/config.yaml").write_text("name: keep\n")
    (tmp_path / "victim").mkdir()
    refused(["train", RECIPE, *TINY, f"name={name}", "--overwrite", "--no-progress"], capsys,
            "name must be a", tmp_path)


def test_demo_refuses_to_replace_what_is_not_its_run(tmp_path, capsys):
    (tmp_path / "out/maml").mkdir(parents=True)
    (tmp_path / "out/maml/results.xlsx").write_text("precious")
    refused(["demo", "--out", str(tmp_path / "out"), "--iterations", "2", "--no-progress"], capsys,
            "--overwrite replaces only a metadapt run", tmp_path)


@pytest.mark.parametrize("bad", ["train.device=cuda:7", "task.family=omniglot", "model.hidden=[0]"])
def test_overwrite_validates_before_deleting(bad, trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METADAPT_DATA", str(tmp_path / "nodata"))
    run = fresh_copy(trained, tmp_path)
    overrides = [bad]
    if "omniglot" in bad:
        overrides += ["task.download=false", f"task.data_dir={tmp_path / 'nodata'}"]
    assert main(train_args(run, *overrides, "--overwrite")) == 2
    assert checksums(run) == checksums(trained)
    capsys.readouterr()


def test_overwrite_replaces_a_run(trained, tmp_path):
    run = fresh_copy(trained, tmp_path)
    assert main(train_args(run, "train.iterations=10", "--overwrite")) == 0
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["step"] == 10


def test_run_dir_that_is_a_file_and_tilde(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    refused(train_args(tmp_path / "file"), capsys, "is a file, not a run directory", tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", RECIPE, *TINY, "train.iterations=5", "--run-dir", "~/r", "--no-progress"]) == 0
    assert (tmp_path / "home/r/config.yaml").is_file() and not (tmp_path / "~").exists()


# ----- 2. a refused resume never touches the run -----------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("model.hidden=[16]", "a resume cannot change model.hidden: [8, 8] → [16]"),
    ("train.optimizer=sgd", "a resume cannot change train.optimizer: 'adam' → 'sgd'"),
    ("train.meta_lr=0.5", "a resume cannot change train.meta_lr: 0.001 → 0.5"),
    ("algorithm.inner_lr=0.1", "a resume cannot change algorithm.inner_lr"),
])
def test_a_refused_resume_changes_nothing(override, message, trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    refused(["train", "--resume", "--run-dir", str(run), override, "--no-progress"], capsys, message,
            tmp_path)


def test_a_recipe_given_with_resume_is_checked_not_ignored(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    refused(["train", RECIPE, *TINY, "model.hidden=[9]", "--resume", "--run-dir", str(run), "--no-progress"],
            capsys, "a resume cannot change model.hidden", tmp_path)
    assert main(["train", RECIPE, *TINY, "train.iterations=40", "--resume", "--run-dir", str(run),
                 "--no-progress"]) == 0
    assert final(run)["step"] == 40 and "iterations: 40" in (run / "config.yaml").read_text()


# ----- 3. one writer at a time ----------------------------------------------------------------------
def test_a_second_writer_is_refused_while_the_first_trains(tmp_path):
    run = tmp_path / "run"
    slow = [*TINY[1:], "train.iterations=1000000", "train.time_limit_s=600"]
    first = subprocess.Popen([sys.executable, "-m", "metadapt", "train", RECIPE, *slow, "--run-dir", str(run),
                              "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (run / "checkpoints").is_dir() and time.time() < deadline:
            time.sleep(0.2)
        for extra in (["--resume"], ["--overwrite"]):
            second = subprocess.run([sys.executable, "-m", "metadapt", "train", RECIPE, *slow, *extra,
                                     "--run-dir", str(run), "--no-progress"], capture_output=True, text=True,
                                    timeout=120)
            assert second.returncode == 2, second.stderr
            assert "is in use by pid" in second.stderr and "metadapt train" in second.stderr
            assert second.stderr.count("\n") == 1
        first.send_signal(signal.SIGTERM)  # it stops with a checkpoint, as a user would stop it
        out, err = first.communicate(timeout=120)
        assert first.returncode == 128 + signal.SIGTERM, err
    finally:
        first.kill()
    # the run is the first writer's, whole: its config, metrics in order, a checkpoint that loads
    assert "time_limit_s: 600" in (run / "config.yaml").read_text()
    log = (run / "metrics.jsonl").read_text()
    steps = [int(m) for m in re.findall(r'"step": (\d+), "split": "train"', log)]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert main(["eval", str(run), "--tasks", "5", "--steps", "1", "--no-progress"]) == 0


def test_the_lock_is_released_when_the_writer_ends(tmp_path, capsys):
    run = tmp_path / "run"
    with rundir.locked(run, "test"):
        refused(train_args(run), capsys, "is in use by pid", tmp_path)
    assert main(train_args(run, "train.iterations=5")) == 0


# ----- 4. checkpoints checked in full ----------------------------------------------------------------
def tamper(run, change):
    path = run / "checkpoints/last.pt"
    payload = torch.load(path, weights_only=True)
    change(payload)
    path.unlink()  # last.pt is a link to the newest step checkpoint: replace, do not write through
    torch.save(payload, path)


def adam_state(payload):
    return next(iter(payload["optimizer"]["state"].values()))


def _expand(payload):
    state = adam_state(payload)
    state["exp_avg"] = torch.zeros(1).expand(state["exp_avg"].shape)


def _transpose(payload):
    key = next(k for k, v in payload["state"].items() if v.dim() == 2 and min(v.shape) > 1)
    payload["state"][key] = payload["state"][key].t().contiguous().t()


def _shape(payload):
    state = adam_state(payload)
    state["exp_avg_sq"] = torch.zeros(3)


def _dtype(payload):
    key = next(iter(payload["state"]))
    payload["state"][key] = payload["state"][key].double()


def _shared(payload):
    state = adam_state(payload)
    state["exp_avg_sq"] = state["exp_avg"]


@pytest.mark.parametrize("change,message", [
    (_expand, "is not contiguous"),
    (_transpose, "is not contiguous"),
    (_shape, "optimizer state 'exp_avg_sq' has shape (3,)"),
    (_dtype, "torch.float64"),
    (_shared, "shares memory with"),
])
def test_malformed_checkpoints_are_refused_before_use(change, message, trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    tamper(run, change)
    refused(["train", "--resume", "--run-dir", str(run), "train.iterations=40", "--no-progress"], capsys,
            message, tmp_path)


# ----- 6. the advice works, and nothing is lost -----------------------------------------------------
def test_corrupt_last_checkpoint_advice_followed_literally(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    for name in ("last.pt", "step-00000030.pt"):  # one file, hard-linked, in a run (copytree made two)
        (run / "checkpoints" / name).write_bytes(b"PK\x03\x04 torn")
    err = refused(["train", "--resume", "--run-dir", str(run), "--no-progress"], capsys,
                  "is corrupt or truncated", tmp_path)
    command = re.search(r"(metadapt train --resume-from \S+ --run-dir \S+)", err).group(1)
    assert main(shlex.split(command)[1:] + ["--no-progress"]) == 0
    # continued from step 20 to the same parameters as the run never interrupted
    ours, straight = final(run), final(trained)
    assert ours["step"] == 30
    assert all(torch.equal(ours["state"][k], straight["state"][k]) for k in ours["state"])
    assert logged(run) == logged(trained)


def test_resume_without_last_uses_the_newest_kept_checkpoint(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    (run / "checkpoints/last.pt").unlink()
    (run / "checkpoints/step-00000030.pt").unlink()
    metrics = (run / "metrics.jsonl").read_text()
    assert main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 0
    assert "has no last.pt; resuming from" in capsys.readouterr().err
    assert final(run)["step"] == 30 and (run / "metrics.jsonl").read_text() == metrics


def test_resume_from_best_or_an_older_step_moves_later_checkpoints_aside(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    assert main(["train", "--resume-from", "step-10", "--run-dir", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "the later checkpoints and metrics were moved to" in err
    aside = next((run / "checkpoints").glob("superseded-*"))
    assert {p.name for p in aside.iterdir()} >= {"step-00000020.pt", "step-00000030.pt", "metrics.jsonl"}
    ours, straight = final(run), final(trained)
    assert all(torch.equal(ours["state"][k], straight["state"][k]) for k in ours["state"])
    assert main(["train", "--resume-from", "best", "--run-dir", str(run), "train.iterations=35",
                 "--no-progress"]) == 0
    assert final(run)["step"] == 35


def test_only_the_newest_step_checkpoints_are_kept(trained, tmp_path):
    names = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step-00000010.pt", "step-00000020.pt", "step-00000030.pt"]
    run = fresh_copy(trained, tmp_path)
    assert main(["train", "--resume", "--run-dir", str(run), "train.iterations=50",
                 "train.keep_checkpoints=2",
                 "--no-progress"]) == 0
    assert [s for s, _ in rundir.step_checkpoints(run)] == [40, 50]
    assert (run / "checkpoints/last.pt").samefile(run / "checkpoints/step-00000050.pt")


def test_unknown_resume_checkpoint_lists_the_kept_ones(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    refused(["train", "--resume-from", "step-7", "--run-dir", str(run)], capsys,
            "kept checkpoints: step-00000030, step-00000020, step-00000010, best", tmp_path)


# ----- 10. under torchrun, a user error is printed once -------------------------------------------
def test_under_torchrun_a_user_error_prints_once(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "metadapt", "train",
                           RECIPE,
                           "train.meta_lr=-1", "--run-dir", str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.stderr.count("metadapt: error: train.meta_lr must be positive") == 1, proc.stderr[-2000:]
    assert "exitcode  : 2" in proc.stderr  # torchrun reports the worker's status 2, then exits 1 itself
    assert not (tmp_path / "run").exists()


# ----- what a review found --------------------------------------------------------------------------
def test_overwrite_refuses_a_folder_with_a_recipe_named_config_yaml(tmp_path, capsys):
    folder = tmp_path / "myexp"
    (folder / "plots").mkdir(parents=True)
    (folder / "eval").mkdir()
    (folder / "config.yaml").write_text(Path(RECIPE).read_text() + "# my notes\n")
    (folder / "plots/fig.png").write_text("mine")
    (folder / "eval/analysis.csv").write_text("mine")
    refused(train_args(folder, "--overwrite"), capsys, "--overwrite replaces only a metadapt run", tmp_path)
    refused(["train", "--resume", "--run-dir", str(folder)], capsys, "is not a metadapt run (its config.yaml",
            tmp_path)


@pytest.mark.parametrize("extra", ["checkpoints/my-keeper.pt", "eval/my-notes.md", ".bashrc.tmp",
                                   ".eval-cache"])
def test_overwrite_refuses_a_run_holding_the_users_files_anywhere(extra, trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    if extra == ".eval-cache":
        (run / extra).write_text("a file, not an evaluation's staging folder")
    else:
        (run / extra).parent.mkdir(exist_ok=True)
        (run / extra).write_text("mine")
    refused(train_args(run, "--overwrite"), capsys, "is not one", tmp_path)


def test_a_lock_file_that_is_a_link_is_never_written_through(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(victim)
    for args in (["eval", str(run), "--tasks", "2", "--steps", "1", "--no-progress"],
                 ["train", "--resume", "--run-dir", str(run), "train.iterations=40", "--no-progress"]):
        assert main(args) == 2
        assert "is a link" in capsys.readouterr().err
        assert victim.read_text() == "precious"


def test_eval_does_not_write_through_a_linked_plots_folder(trained, tmp_path, capsys):
    run = fresh_copy(trained, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "adaptation_curves.png").write_text("mine")
    import shutil

    shutil.rmtree(run / "plots", ignore_errors=True)
    (run / "plots").symlink_to(elsewhere)
    assert main(["eval", str(run), "--tasks", "2", "--steps", "1", "--no-progress"]) == 2
    assert "is a link" in capsys.readouterr().err
    assert (elsewhere / "adaptation_curves.png").read_text() == "mine"


def test_maml_plus_plus_cannot_extend_its_schedule_on_resume(tmp_path, capsys):
    recipe = str(ROOT / "configs/sinusoid/maml++.yaml")
    settings = ["train.meta_batch_size=2", "train.val_tasks=4", "model.hidden=[8]", "train.val_every=2",
                "train.checkpoint_every=2", "algorithm.epoch_iterations=1", "train.threads=1"]
    run = tmp_path / "run"
    assert main(["train", recipe, *settings, "train.iterations=4", "--run-dir", str(run),
                 "--no-progress"]) == 0
    refused(["train", "--resume", "--run-dir", str(run), "train.iterations=8"], capsys,
            "train.iterations shapes this algorithm's schedule", tmp_path)
    assert main(["train", "--resume", "--run-dir", str(run), "train.time_limit_s=60", "--no-progress"]) == 0


@pytest.mark.parametrize("kind", ["dangling link", "long name", "under a file"])
def test_impossible_run_directories_are_one_line(kind, tmp_path, capsys):
    if kind == "dangling link":
        target = tmp_path / "dl"
        target.symlink_to(tmp_path / "not-mounted/run")
    elif kind == "long name":
        target = tmp_path / ("a" * 300)
    else:
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file/run"
    message = {"dangling link": "a link to a folder that does not exist", "long name": "File name too long",
               "under a file": "is a file, not a folder"}[kind]
    refused(train_args(target), capsys, message, tmp_path)


def test_a_deeply_nested_config_is_not_a_run(tmp_path, capsys):
    run = tmp_path / "deep"
    run.mkdir()
    (run / "config.yaml").write_text("[" * 5000 + "]" * 5000)
    refused(train_args(run, "--overwrite"), capsys, "is not one", tmp_path)
    refused(["eval", str(run)], capsys, "nested too deeply", tmp_path)


def test_the_data_location_may_change_on_resume():
    saved = {"task": {"family": "omniglot", "data_dir": "/old", "download": True, "ways": 5}}
    rundir.check_resume_changes(saved, {"task": {"family": "omniglot", "data_dir": "/new", "download": False,
                                                 "ways": 5}})
    with pytest.raises(rundir.UserError, match="task.ways"):
        rundir.check_resume_changes(saved, {"task": {"family": "omniglot", "data_dir": "/old",
                                                     "download": True, "ways": 20}})


def test_under_torchrun_a_refusal_of_the_main_process_is_one_line(trained, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    run = fresh_copy(trained, tmp_path)
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "metadapt", "train",
                           RECIPE, *TINY,
                           "--run-dir", str(run)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.stderr.count("metadapt: error: run directory") == 1, proc.stderr[-3000:]
    assert "[rank1]" not in proc.stderr and "Connection closed" not in proc.stderr, proc.stderr[-3000:]
    assert checksums(run) == checksums(trained)
