"""On a CUDA device: every recipe trains, checkpoints, resumes and evaluates with ``train.device=cuda``,
and a run follows the same seed's CPU run up to float rounding. Skipped where there is no CUDA device
(CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from image_fixtures import class_tree
from omniglot_fixtures import make_archives

import metadapt.datasets.omniglot as omniglot
from metadapt.cli import main
from metadapt.training import load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ROOT = Path(__file__).parent.parent / "configs"
#: recipes that need a published dataset; their code path is configs/images/protonet.yaml's
NEEDS_REAL_DATA = ("mini-imagenet", "tiered-imagenet")
RECIPES = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name not in NEEDS_REAL_DATA)
#: each recipe as it is, and ResNet-12 (the benchmarks' larger net) on the image recipe
CASES = [(p, []) for p in RECIPES] + [(ROOT / "images/protonet.yaml", ["model.name=resnet12",
                                                                        "model.widths=[8,8,16,16]"])]
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
    elif "maml-rl" in recipe.stem:
        extra = ["algorithm.trajectories=2", "algorithm.eval_trajectories=2"]
    monkeypatch.setenv("METADAPT_CACHE", str(tmp_path / "cache"))
    return TINY + extra


@pytest.mark.parametrize("recipe, model", CASES,
                         ids=[f"{p.parent.name}/{p.stem}{'-' + m[0][11:] if m else ''}" for p, m in CASES])
def test_every_recipe_trains_resumes_and_evaluates_on_cuda(recipe, model, tmp_path, monkeypatch):
    args = tiny(recipe, tmp_path, monkeypatch) + model
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    assert main(["train", str(recipe), *args, "train.device=cuda", "--run-dir", str(run),
                 "--no-progress"]) == 0
    shutil.copytree(run, resumed)
    shutil.copy(resumed / "checkpoints" / "step-00000002.pt", resumed / "checkpoints" / "last.pt")
    assert main(["train", "--resume", "--run-dir", str(resumed), "--no-progress"]) == 0
    straight = load(run, which="last")
    assert straight.device.type == "cuda"
    assert all(torch.isfinite(p).all() for p in straight.algorithm.parameters())
    close(straight.algorithm.state_dict(), load(resumed, which="last").algorithm.state_dict())
    assert main(["eval", str(run), "--tasks", "8", "--no-progress"]) == 0
    assert json.loads((run / "eval" / "results.json").read_text())
    assert (run / "report.md").is_file()


def close(a: dict, b: dict) -> None:
    """Equal up to the float rounding of GPU kernels whose summation order is not fixed."""
    assert a.keys() == b.keys()
    for name, value in a.items():
        other = b[name].to(value.device)
        if value.is_floating_point():
            assert torch.allclose(value, other, rtol=1e-3, atol=1e-4), name
        else:
            assert torch.equal(value, other), name

@pytest.mark.parametrize("recipe", ["sinusoid/maml.yaml", "sinusoid/meta-lstm.yaml", "omniglot/protonet.yaml",
                                    "rl/rl2-bandits-n10-k5.yaml", "rl/maml-rl-navigation.yaml"])
def test_a_cuda_run_follows_the_cpu_run_of_the_same_seed(recipe, tmp_path, monkeypatch):
    recipe = ROOT / recipe
    args = tiny(recipe, tmp_path, monkeypatch)
    params = {}
    for device in ("cpu", "cuda"):
        run = tmp_path / device
        assert main(["train", str(recipe), *args, f"train.device={device}", "--run-dir", str(run),
                     "--no-progress"]) == 0
        state = load(run, which="last").algorithm.state_dict()
        params[device] = {k: v.detach().cpu() for k, v in state.items()}
    close(params["cpu"], params["cuda"])
