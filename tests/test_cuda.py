"""On a CUDA device: every recipe trains, checkpoints, resumes bit for bit (``train.deterministic``) and
evaluates with ``train.device=cuda``, and starts exactly as the same seed's CPU run. Skipped where
there is no CUDA device (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import MUJOCO
from image_fixtures import class_tree
from omniglot_fixtures import make_archives

import metadapt.datasets.omniglot as omniglot
from metadapt.cli import main
from metadapt.training import load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before this process's first cuBLAS call

ROOT = Path(__file__).parent.parent / "configs"
#: recipes that need a published dataset; their code path is configs/images/protonet.yaml's
NEEDS_REAL_DATA = ("mini-imagenet", "tiered-imagenet")
RECIPES = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name not in NEEDS_REAL_DATA)
#: each recipe as it is, and ResNet-12 (the benchmarks' larger net) on the image recipe
CASES = [(p, []) for p in RECIPES] + [(ROOT / "images/protonet.yaml", ["model.name=resnet12",
                                                                        "model.widths=[8,8,16,16]"])]
#: the MuJoCo recipes, skipped cleanly without the mujoco extra
NO_MUJOCO = pytest.mark.skipif(not MUJOCO, reason="needs pip install 'metadapt[mujoco]'")
TINY = ["train.iterations=4", "train.meta_batch_size=4", "train.val_every=2", "train.val_tasks=4",
        "train.checkpoint_every=2", "train.log_every=1"]


def tiny(recipe: Path, tmp_path: Path, monkeypatch) -> list[str]:
    """Overrides that make ``recipe`` a few seconds' run on this test's synthetic data."""
    family = recipe.parent.name
    extra = []
    if family == "omniglot":
        monkeypatch.setattr(omniglot, "ARCHIVES", make_archives(tmp_path / "omniglot", drawers=10))
        extra = [f"task.data_dir={tmp_path / 'omniglot'}", "task.download=false", "task.ways=5",
                 "task.queries=2", "eval.ways=[5]", "eval.queries=2"]
    elif family == "images":
        root = class_tree(tmp_path / "images", classes=20, per_class=8, size=16)
        extra = [f"task.data_dir={root}", "task.image_size=16", "task.ways=3", "task.queries=3",
                 "eval.ways=[3]", "eval.queries=3"]
    elif family in ("quadratic", "digits"):
        extra = ["algorithm.inner_steps=4", "algorithm.unroll=2", "eval.steps=4"]
    elif "pearl" in recipe.stem:
        extra = ["task.horizon=10"] if "half-cheetah" in recipe.stem else []
        extra += ["algorithm.train_tasks=8", "algorithm.tasks_per_iteration=2", "algorithm.gradient_steps=5",
                 "algorithm.initial_steps=40", "algorithm.prior_steps=40",
                 "algorithm.extra_posterior_steps=40", "algorithm.buffer_capacity=500"]
    elif "maml-rl" in recipe.stem:
        extra = ["algorithm.trajectories=2", "algorithm.eval_trajectories=2"]
    monkeypatch.setenv("METADAPT_CACHE", str(tmp_path / "cache"))
    return TINY + extra


@pytest.mark.parametrize("recipe, model", [pytest.param(p, m, marks=NO_MUJOCO) if "half-cheetah" in p.stem
                                           else (p, m) for p, m in CASES],
                         ids=[f"{p.parent.name}/{p.stem}{'-' + m[0][11:] if m else ''}" for p, m in CASES])
def test_every_recipe_trains_resumes_and_evaluates_on_cuda(recipe, model, tmp_path, monkeypatch):
    args = tiny(recipe, tmp_path, monkeypatch) + model
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    assert main(["train", str(recipe), *args, "train.device=cuda", "train.deterministic=true",
                 "--run-dir", str(run), "--no-progress"]) == 0
    shutil.copytree(run, resumed)
    shutil.copy(resumed / "checkpoints" / "step-00000002.pt", resumed / "checkpoints" / "last.pt")
    assert main(["train", "--resume", "--run-dir", str(resumed), "--no-progress"]) == 0
    straight = load(run, which="last")
    assert straight.device.type == "cuda"
    assert all(torch.isfinite(p).all() for p in straight.algorithm.parameters())
    resumed_state = load(resumed, which="last").algorithm.state_dict()
    for name, value in straight.algorithm.state_dict().items():  # deterministic kernels: bit for bit
        assert torch.equal(value, resumed_state[name]), name
    assert main(["eval", str(run), "--tasks", "8", "--no-progress"]) == 0
    assert json.loads((run / "eval" / "results.json").read_text())
    assert (run / "report.md").is_file()


@pytest.mark.parametrize("recipe", ["sinusoid/maml.yaml", "sinusoid/meta-lstm.yaml", "omniglot/protonet.yaml",
                                    "rl/rl2-bandits-n10-k5.yaml", "rl/maml-rl-navigation.yaml"])
def test_a_cuda_run_follows_the_cpu_run_of_the_same_seed(recipe, tmp_path, monkeypatch):
    recipe = ROOT / recipe
    args = tiny(recipe, tmp_path, monkeypatch)
    first = {}
    for device in ("cpu", "cuda"):
        run = tmp_path / device
        assert main(["train", str(recipe), *args, f"train.device={device}", "--run-dir", str(run),
                     "--no-progress"]) == 0
        first[device] = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    # the same tasks, initialization and sampling noise: the first meta-iteration's loss (taken before
    # any update) agrees up to float rounding; later ones drift apart as rounding meets Adam's steps
    assert first["cpu"]["step"] == first["cuda"]["step"] == 1
    assert first["cuda"]["query_loss"] == pytest.approx(first["cpu"]["query_loss"], rel=1e-3)
