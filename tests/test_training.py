import json

import pytest
import torch

from metadapt.build import build_algorithm, build_tasks
from metadapt.config import build_config
from metadapt.errors import UserError
from metadapt.training import load, train
from metadapt.training.checkpoint import load_checkpoint
from metadapt.training.trainer import VAL_SEED_OFFSET, validation_loss

SMALL = ["train.meta_batch_size=5", "train.val_tasks=20", "train.val_every=20", "train.checkpoint_every=20",
         "train.log_every=10", "model.hidden=[16, 16]"]


def small(iterations=60, *extra):
    return build_config(None, SMALL + [f"train.iterations={iterations}", *extra])


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_the_same_run_twice(tmp_path):
    train(small(), tmp_path / "a", progress=False)
    train(small(), tmp_path / "b", progress=False)
    assert states_equal(load(tmp_path / "a", "last").algorithm.state_dict(),
                        load(tmp_path / "b", "last").algorithm.state_dict())
    train(small(60, "train.seed=1"), tmp_path / "c", progress=False)
    assert not states_equal(load(tmp_path / "a", "last").algorithm.state_dict(),
                            load(tmp_path / "c", "last").algorithm.state_dict())


def test_deterministic_kernels_change_no_number_and_are_switched_off_after_the_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda on, **kw: calls.append((on, torch.are_deterministic_algorithms_enabled())))
    train(small(20), tmp_path / "a", progress=False)
    assert calls == []
    train(small(20, "train.deterministic=true"), tmp_path / "b", progress=False)
    assert calls == [(True, False), (False, False)]  # switched on for the run, then back to the caller's
    assert states_equal(load(tmp_path / "a", "last").algorithm.state_dict(),
                        load(tmp_path / "b", "last").algorithm.state_dict())


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "reptile"])
def test_resume_continues_to_the_same_parameters(tmp_path, algorithm):
    train(small(60, f"algorithm.name={algorithm}"), tmp_path / "straight", progress=False)
    train(small(40, f"algorithm.name={algorithm}"), tmp_path / "resumed", progress=False)
    train(small(60, f"algorithm.name={algorithm}"), tmp_path / "resumed", resume=True, progress=False)
    a = load(tmp_path / "straight", "last").algorithm.state_dict()
    b = load(tmp_path / "resumed", "last").algorithm.state_dict()
    assert states_equal(a, b)
    steps = [json.loads(line)["step"]
             for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps)) == list(range(10, 61, 10))


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(small(50), run, progress=False)  # last checkpoint at 50, best at some val step
    with open(run / "metrics.jsonl", "a") as f:  # as if a crash happened after logging step 55..
        f.write(json.dumps({"step": 55, "split": "train", "query_loss": 1.0}) + "\n")
    train(small(60), run, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert 55 not in steps and steps[-1] == 60


def test_checkpoint_holds_everything_and_loads_without_pickle(tmp_path):
    train(small(20), tmp_path / "run", progress=False)
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(payload) >= {"state", "optimizer", "generator", "step", "best"}
    assert payload["step"] == 20 and payload["generator"].dtype == torch.uint8
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_an_existing_run_is_not_overwritten_without_asking(tmp_path):
    train(small(20), tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="already exists; pass --resume"):
        train(small(20), tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="cannot resume"):
        train(small(20), tmp_path / "fresh", resume=True, progress=False)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil", "reptile", "pretrain"])
def test_training_lowers_the_validation_loss(tmp_path, algorithm):
    config = small(150, f"algorithm.name={algorithm}", "train.meta_lr=0.003", "train.val_every=150")
    val = build_tasks(config).sample(20, torch.Generator().manual_seed(config.train.seed + VAL_SEED_OFFSET))
    before = validation_loss(build_algorithm(config), val)
    summary = train(config, tmp_path / algorithm, progress=False)
    assert summary["best_val_query_loss"] < 0.9 * before
    assert summary["iterations_per_second"] > 0


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    summary = train(small(100000, "train.time_limit_s=1.0"), tmp_path / "run", progress=False)
    assert 0 < summary["steps"] < 100000 and summary["seconds"] < 30
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert payload["step"] == summary["steps"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert (logged[-1]["step"] == summary["steps"]
            and any(r["split"] == "val" and r["step"] == summary["steps"] for r in logged))


def test_a_run_written_before_the_registry_still_loads(tmp_path):
    """Runs of 0.1.0 recorded every method's keys in one flat algorithm section and saved Meta-SGD's
    step sizes as ``inner_lrs.N``; they load, and evaluate to the same parameters."""
    import yaml

    train(small(20, "algorithm.name=metasgd"), tmp_path / "run", progress=False)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    config["algorithm"] = {"name": "metasgd", "inner_lr": 0.01, "inner_steps": 1, "first_order": False,
                           "learn_inner_lr": False, "adapt_only": None, "task_parallel": "auto", "fce": False,
                           "fce_steps": 5, "cosine_scale": None}
    config["task"].update(ways=5, data_dir=None, split="vinyals", train_subset="trainval", val_subset="val",
                          test_subset="test", download=True)
    config["model"].update(filters=64, downsample="pool")
    del config["loss"]
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(config))
    for which in ("last", "best"):
        path = tmp_path / "run" / "checkpoints" / f"{which}.pt"
        payload = load_checkpoint(path)
        payload["state"] = {k.replace("update_rule.lrs.", "inner_lrs."): v
                            for k, v in payload["state"].items()}
        torch.save(payload, path)
    run = load(tmp_path / "run", "last")
    assert run.config.algorithm.update_rule == "metasgd"
    lrs = [v for k, v in load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state"].items()
           if k.startswith("inner_lrs.")]
    assert len(lrs) == 6 and all(torch.equal(a, b) for a, b in zip(lrs, run.algorithm.update_rule.lrs))
