"""Several training seeds: `train --seeds` writes one run per seed, `eval` of their folder gives one
table of the mean over seeds with the spread across seeds, equal to aggregating by hand."""
import json
from pathlib import Path

import torch

from metadapt.cli import main
from metadapt.evaluation.stats import mean_ci

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
TINY = ["train.iterations=10", "train.meta_batch_size=2", "train.val_every=5", "train.val_tasks=4",
        "train.checkpoint_every=5", "model.hidden=[8]", "eval.tasks=6", "eval.steps=2", "eval.shots=[5]"]


def test_seeds_train_evaluate_and_aggregate(tmp_path, capsys):
    folder = tmp_path / "seeds"
    assert main(["train", RECIPE, *TINY, "--seeds", "0,1,2", "--run-dir", str(folder), "--no-progress"]) == 0
    for seed in (0, 1, 2):
        assert f"seed: {seed}" in (folder / f"seed-{seed}/config.yaml").read_text()
    finals = [torch.load(folder / f"seed-{s}/checkpoints/last.pt", weights_only=True)["state"]
              for s in (0, 1)]
    assert any(not torch.equal(finals[0][k], finals[1][k]) for k in finals[0])  # other seed, other run
    capsys.readouterr()
    assert main(["eval", str(folder), "--no-scratch", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(3 seeds)" in out and (folder / "seeds.md").is_file()
    summary = json.loads((folder / "seeds.json").read_text())
    per_seed = [json.loads((folder / f"seed-{s}/eval/results.json").read_text()) for s in (0, 1, 2)]
    curves = torch.tensor([r["settings"]["5-shot"]["methods"]["maml"]["mean"] for r in per_seed],
                          dtype=torch.float64)
    mean, ci = mean_ci(curves)
    got = summary["settings"]["5-shot"]["methods"]["maml"]
    assert torch.allclose(torch.tensor(got["mean"], dtype=torch.float64), mean)
    assert torch.allclose(torch.tensor(got["ci95"], dtype=torch.float64), ci)


def test_seeds_are_checked_and_resumed(tmp_path, capsys):
    assert main(["train", RECIPE, *TINY, "--seeds", "0,x"]) == 2
    assert "--seeds takes whole numbers" in capsys.readouterr().err
    assert main(["train", RECIPE, *TINY, "--seeds", "1,1"]) == 2
    folder = tmp_path / "seeds"
    assert main(["train", RECIPE, *TINY, "--seeds", "0,1", "--run-dir", str(folder), "--no-progress"]) == 0
    assert main(["train", RECIPE, *TINY, "train.iterations=15", "--seeds", "0,1", "--resume", "--run-dir",
                 str(folder), "--no-progress"]) == 0
    assert all(torch.load(folder / f"seed-{s}/checkpoints/last.pt", weights_only=True)["step"] == 15
               for s in (0, 1))
