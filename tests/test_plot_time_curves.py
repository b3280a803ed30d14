"""scripts/plot_time_curves.py: several runs' validation scores against training time on one figure,
and a one-line error (exit 2) for what is not a run."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
SCRIPT = str(ROOT / "scripts/plot_time_curves.py")


def fake_run(path: Path, accuracies: list[float]) -> Path:
    path.mkdir()
    rows = []
    for i, accuracy in enumerate(accuracies, 1):
        rows.append({"step": 10 * i, "split": "train", "query_loss": 1.0, "iterations_per_second": 1.0})
        rows.append({"step": 10 * i, "split": "val", "accuracy": accuracy, "seconds": 60.0 * i})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def test_curves_of_several_runs_are_drawn_against_minutes(tmp_path):
    from importlib.util import module_from_spec, spec_from_file_location

    a, b = fake_run(tmp_path / "a", [0.5, 0.7, 0.9]), fake_run(tmp_path / "b", [0.4, 0.6])
    spec = spec_from_file_location("plot_time_curves", SCRIPT)
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.read_curve(a, "accuracy") == [(1.0, 0.5), (2.0, 0.7), (3.0, 0.9)]
    out = tmp_path / "figs" / "curves.png"
    done = run("--out", str(out), "--target", "0.95", f"A={a}", f"B={b}")
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000 and not list(out.parent.glob("*.tmp.png"))


def test_what_is_not_a_run_is_one_line_and_exit_2(tmp_path):
    a = fake_run(tmp_path / "a", [0.5])
    cases = (([str(a)], "is not LABEL=RUN"), ([f"A={tmp_path / 'none'}"], "has no metrics.jsonl"),
             ([f"A={a}", "--metric", "return"], "no validation rows with 'return'"))
    for args, message in cases:
        done = run("--out", str(tmp_path / "x.png"), *args)
        assert done.returncode == 2 and message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
