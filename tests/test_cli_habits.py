"""The command line behaves as users of other tools expect: --version, global options after the
subcommand, suggestions for bare keys, every key listed, and plain log lines without a terminal."""
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metadapt.cli import main, make_parser
from metadapt.errors import UserError
from metadapt.progress import PlainProgress
from metadapt.version import __version__

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
TINY = ["train.iterations=30", "train.meta_batch_size=2", "train.val_every=10", "train.val_tasks=4",
        "train.checkpoint_every=10", "train.log_every=5", "model.hidden=[8]"]


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"metadapt {__version__} (torch ")


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    with pytest.raises(UserError):  # raised, not printed: --debug was seen after the subcommand
        main(["train", RECIPE, "train.meta_lr=-1", "--debug"])
    assert main(["train", RECIPE, "train.meta_lr=-1"]) == 2
    args = make_parser().parse_args(["--debug", "eval", "RUN"])
    assert args.debug is True
    assert make_parser().parse_args(["eval", "RUN"]).debug is False


@pytest.mark.parametrize("bare,suggestion", [
    ("iterations=5", "train.iterations"), ("inner_lr=0.1", "algorithm.inner_lr"),
    ("hidden=[8]", "model.hidden"), ("shots=[1]", "task.shots or eval.shots")])
def test_a_bare_key_is_told_its_section(bare, suggestion, capsys):
    assert main(["train", RECIPE, bare]) == 2
    assert f"unknown config key '{bare.split('=')[0]}'; did you mean {suggestion}?" in capsys.readouterr().err


def test_every_option_has_help():
    parser = make_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"metadapt {name} {action.option_strings or action.dest} has no help text"


def test_config_lists_every_key_with_its_meaning(capsys):
    assert main(["config", RECIPE, "algorithm.inner_steps=5"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert re.search(r"algorithm\.inner_steps\s+int\s+5\s+# >= 1, <= 1000; adaptation steps",
                     lines["algorithm.inner_steps"])
    assert "one of adam, sgd" in lines["train.optimizer"]
    assert "the outer optimizer" in lines["train.optimizer"]
    assert {"task.family", "model.hidden", "train.iterations", "eval.steps", "name", "loss"} <= set(lines)
    assert all("#" in line for key, line in lines.items() if key.startswith(("train.", "eval.", "task.")))


def test_without_a_terminal_progress_is_plain_lines(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "metadapt", "train", RECIPE, *TINY, "--run-dir",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("meta-train maml: ")]
    assert lines and lines[-1].startswith("meta-train maml: 30/30 (100%)"), proc.stderr


def test_plain_progress_prints_each_tenth_and_not_every_step():
    out = io.StringIO()
    bar = PlainProgress(100, desc="x", file=out, every_s=3600)
    for _ in range(100):
        bar.update(1)
    printed = out.getvalue().splitlines()
    assert len(printed) == 10
    assert printed[0].startswith("x: 10/100 (10%)") and printed[-1].startswith("x: 100/100")


def test_the_demo_compiles_only_where_a_compiler_is(tmp_path, monkeypatch):
    from metadapt.cli import _compiler

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, c++ or clang++ on it
    assert _compiler("cpu") is None
    fake = tmp_path / "my-cxx"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", "my-cxx")
    assert _compiler("cpu") == str(fake)
    assert make_parser().parse_args(["demo"]).compile is None  # decided by _compiler
    assert make_parser().parse_args(["demo", "--no-compile"]).compile is False
    assert make_parser().parse_args(["demo", "--seed", "3"]).seed == 3
