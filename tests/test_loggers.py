"""Optional loggers: TensorBoard event files and an offline W&B run hold the same values as
metrics.jsonl; a logger that is not installed is refused before training."""
import json
from pathlib import Path

import pytest

from metadapt.cli import main

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
TINY = ["train.iterations=20", "train.meta_batch_size=2", "train.val_every=10", "train.val_tasks=4",
        "train.checkpoint_every=10", "train.log_every=5", "model.hidden=[8]"]


def logged(run, split, key):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if r["split"] == split and key in r}


def test_tensorboard_event_file_holds_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", RECIPE, *TINY, "train.loggers=[tensorboard]", "--run-dir", str(run),
                 "--no-progress"]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    train = {e.step: e.value for e in events.Scalars("train/query_loss")}
    val = {e.step: e.value for e in events.Scalars("val/query_loss")}
    assert train == pytest.approx(logged(run, "train", "query_loss")) and set(train) == {5, 10, 15, 20}
    assert val == pytest.approx(logged(run, "val", "query_loss")) and set(val) == {10, 20}
    # the run is still a run: --overwrite may replace it, eval may write into it
    assert main(["eval", str(run), "--tasks", "3", "--steps", "1", "--no-progress"]) == 0
    assert main(["train", RECIPE, *TINY, "--run-dir", str(run), "--overwrite", "--no-progress"]) == 0


def test_wandb_offline_run_holds_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert main(["train", RECIPE, *TINY, "train.loggers=[wandb]", "--run-dir", str(run),
                 "--no-progress"]) == 0
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert main(["train", "--resume", "--run-dir", str(run), "train.iterations=30", "--no-progress"]) == 0
    assert main(["train", RECIPE, *TINY, "--run-dir", str(run), "--overwrite", "--no-progress"]) == 0


def test_a_logger_that_is_not_installed_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["train", RECIPE, *TINY, "train.loggers=[wandb]", "--run-dir", str(tmp_path / "r")]) == 2
    assert "pip install 'metadapt[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
