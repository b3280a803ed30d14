"""Every bad input a user can give: one line naming the problem and the fix, exit status 2,
nothing the user had overwritten. Table-driven: each row sets up files, runs the CLI, checks."""
import os
import shutil
from pathlib import Path

import pytest
import torch

from metadapt.cli import main

ROOT = Path(__file__).parent.parent
RECIPE = str(ROOT / "configs/sinusoid/maml.yaml")
TINY = ["train.iterations=20", "train.meta_batch_size=4", "train.val_every=10", "train.val_tasks=8",
        "train.checkpoint_every=10", "model.hidden=[8]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", RECIPE, *TINY, "--run-dir", str(root / "maml"), "--no-progress"]) == 0
    assert main(["train", RECIPE, *TINY, "algorithm.name=metasgd", "--run-dir", str(root / "metasgd"),
                 "--no-progress"]) == 0
    assert main(["train", RECIPE, *TINY, "model.hidden=[4]", "--run-dir", str(root / "small"),
                 "--no-progress"]) == 0
    return root


def transplant(runs, tmp, checkpoint_bytes):
    """A copy of the maml run whose last.pt is replaced (best.pt removed)."""
    target = tmp / "run"
    shutil.copytree(runs / "maml", target)
    (target / "checkpoints/best.pt").unlink()
    (target / "checkpoints/last.pt").write_bytes(checkpoint_bytes)
    return target


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def evil_checkpoint(runs, tmp):
    path = tmp / "evil.pt"
    torch.save({"state": RunsCode()}, path)
    return transplant(runs, tmp, path.read_bytes())


def csv(tmp, name, text):
    (tmp / name).write_text(text)
    return str(tmp / name)


def adapt(runs, tmp, support="1,2\n2,3\n", query="0\n", extra=()):
    return ["adapt", str(runs / "maml"), "--support", csv(tmp, "s.csv", support),
            "--query", csv(tmp, "q.csv", query), *extra]


CASES = {
    # recipes and overrides
    "unknown key": (lambda r, t: ["train", RECIPE, "train.itrations=5"],
                    "unknown config key 'train.itrations'; did you mean train.iterations?"),
    "unknown section": (lambda r, t: ["train", csv(t, "r.yaml", "trian:\n  seed: 1\n")],
                        "unknown config key 'trian'; did you mean train?"),
    "wrong type": (lambda r, t: ["train", RECIPE, "train.meta_batch_size=big"],
                   "train.meta_batch_size must be an integer, got 'big'"),
    "out of range": (lambda r, t: ["train", RECIPE, "train.meta_lr=-0.001"],
                     "train.meta_lr must be positive, got -0.001"),
    "bad choice": (lambda r, t: ["train", RECIPE, "task.preset=cosine"],
                   "task.preset must be one of maml, founding; got 'cosine'"),
    "inconsistent": (lambda r, t: ["train", RECIPE, "algorithm.name=fomaml", "algorithm.first_order=false"],
                     "algorithm.first_order=False contradicts algorithm.name=fomaml"),
    "not the method's option": (
        lambda r, t: ["train", RECIPE, "algorithm.name=reptile", "algorithm.update_rule=metasgd"],
        "unknown config key 'algorithm.update_rule'; reptile takes inner_lr, inner_steps"),
    "compile unsupported": (
        lambda r, t: ["train", RECIPE, "algorithm.name=reptile", "train.compile=true"],
        "train.compile=true covers maml, fomaml, metasgd, anil and algorithms that declare compilable, "
        "not reptile"),
    "pearl on discrete actions": (
        lambda r, t: ["train", csv(t, "p.yaml", "task: {family: bandits}\nmodel: {name: pearl-networks}\n"
                                                "algorithm: {name: pearl}\n")],
        "acts with continuous actions"),
    "pearl sparse context without a sparse reward": (
        lambda r, t: ["train", str(ROOT / "configs/rl/pearl-point-robot.yaml"), "task.family=navigation-2d",
                      "algorithm.sparse_context=true"], "needs a task family with a sparse reward"),
    "no gpu": (lambda r, t: ["train", RECIPE, *TINY, "train.device=cuda", "--run-dir", str(t / "gpu")],
               "no CUDA device is available"),
    "invalid yaml": (lambda r, t: ["train", csv(t, "r.yaml", "train: {seed: 1\n")],
                     "is not valid YAML at line"),
    "missing recipe": (lambda r, t: ["train", str(t / "none.yaml")], "recipe"),
    "existing run": (lambda r, t: ["train", RECIPE, *TINY, "--run-dir", str(r / "maml")],
                     "already exists; pass --resume"),
    "resume nothing": (lambda r, t: ["train", "--resume", "--run-dir", str(t / "none")],
                       "does not exist; train one with"),
    # CSV input to adapt
    "csv wrong columns": (lambda r, t: adapt(r, t, support="1,2,3\n"),
                          "has 3 columns; expected 2 (1 input(s), then 1 target(s))"),
    "csv non-numeric": (lambda r, t: adapt(r, t, support="x,y\n1,2\n3,abc\n"),
                        "line 3 has a non-numeric cell 'abc'"),
    "csv nan": (lambda r, t: adapt(r, t, support="1,2\n3,NaN\n"), "line 2 has a non-finite value 'NaN'"),
    "csv empty": (lambda r, t: adapt(r, t, support=""), "is empty"),
    "csv header only": (lambda r, t: adapt(r, t, support="x,y\n"), "has a header but no data rows"),
    "csv query dims": (lambda r, t: adapt(r, t, query="1,2,3\n"), "query file"),
    "csv missing": (
        lambda r, t: ["adapt", str(r / "maml"), "--support", str(t / "no.csv"), "--query", str(t / "no.csv")],
        "support file"),
    "negative steps": (lambda r, t: adapt(r, t, extra=["--steps", "-1"]),
                       "steps must be between 0 and 10,000, got -1"),
    # checkpoints
    "truncated checkpoint": (
        lambda r, t: ["eval", str(transplant(r, t, (r / "maml/checkpoints/last.pt").read_bytes()[:300]))],
        "is corrupt or truncated"),
    "other algorithm": (
        lambda r, t: ["eval", str(transplant(r, t, (r / "metasgd/checkpoints/last.pt").read_bytes()))],
        "was written by metasgd"),
    "other model shape": (
        lambda r, t: ["eval", str(transplant(r, t, (r / "small/checkpoints/last.pt").read_bytes()))],
        "does not match this run's algorithm and model"),
    "malicious pickle": (lambda r, t: ["eval", str(evil_checkpoint(r, t))],
                         "refusing to load it, as that could run code"),
    # run directories
    "missing run": (lambda r, t: ["eval", str(t / "nowhere")], "does not exist"),
    "not a run": (lambda r, t: ["eval", str(t)], "is not a metadapt run (no config.yaml)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if case == "no gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    setup, message = CASES[case]
    args = setup(runs, tmp_path)
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("metadapt: error: ") and err.count("\n") == 1
    # nothing the user had changed
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "PWNED").exists()


def test_adapt_does_not_overwrite_an_existing_output(runs, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    out.write_text("precious\n")
    assert main(adapt(runs, tmp_path, extra=["--output", str(out)])) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert main(adapt(runs, tmp_path, extra=["--output", str(out), "--overwrite"])) == 0
    assert out.read_text().startswith("x,prediction")


OMNIGLOT = str(ROOT / "configs/omniglot/protonet.yaml")


def omniglot_args(data_dir, run_dir, *overrides):
    return ["train", OMNIGLOT, f"task.data_dir={data_dir}", "task.download=false", "train.iterations=2",
            *overrides, "--run-dir", str(run_dir), "--no-progress"]


def broken_data(kind, tmp, monkeypatch):
    """An Omniglot data folder with one defect; the archives' checksums are accepted unless the
    defect is the checksum itself."""
    from omniglot_fixtures import make_archives, png

    import metadapt.datasets.omniglot as omniglot
    from metadapt.datasets.archives import file_digests

    monkeypatch.setenv("METADAPT_CACHE", str(tmp / "cache"))
    data = tmp / "data"
    if kind == "missing":
        data.mkdir()
        return data
    extra = {"traversal": [("../../escape.png", png(1))],
             "undecodable": [("images_background/backgroundAlpha0/character01/9999_99.png",
                              b"\x89PNG broken")]}.get(kind, [])
    sums = make_archives(data, extra_entries=extra)
    if kind == "truncated":
        path = data / "images_background.zip"
        path.write_bytes(path.read_bytes()[:-700])
        sums["images_background.zip"] = [{"sha256": file_digests(path)["sha256"]}]
    if kind != "checksum":
        monkeypatch.setattr(omniglot, "ARCHIVES", sums)
    return data


DATA_CASES = {
    "missing": "Omniglot archive 'images_background.zip' not found in",
    "checksum": "has the wrong checksum",
    "truncated": "is corrupt or truncated",
    "traversal": "would be written outside its folder",
    "undecodable": "does not decode",
}


@pytest.mark.parametrize("kind", list(DATA_CASES))
def test_bad_data_files(kind, tmp_path, capsys, monkeypatch):
    data = broken_data(kind, tmp_path, monkeypatch)
    assert main(omniglot_args(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert DATA_CASES[kind] in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()  # nothing written for a run that could not start


def test_more_ways_than_classes_is_refused(tmp_path, capsys, monkeypatch):
    data = broken_data("fine", tmp_path, monkeypatch)
    assert main(omniglot_args(data, tmp_path / "run", "task.ways=999")) == 2
    assert "asked for 999-way episodes but the dataset has only" in capsys.readouterr().err
    assert main(omniglot_args(data, tmp_path / "run", "task.ways=2", "task.shots=5", "task.queries=5")) == 2
    assert "asked for 5 shots + 5 queries = 10 examples per class" in capsys.readouterr().err


def test_a_mujoco_recipe_without_the_extra_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    import sys

    from metadapt.envs import half_cheetah

    monkeypatch.setitem(sys.modules, "mujoco", None)          # as if metadapt[mujoco] were not installed
    monkeypatch.setitem(sys.modules, "mujoco.rollout", None)
    half_cheetah._model.cache_clear()
    try:
        recipe = Path(__file__).parent.parent / "configs/rl/pearl-half-cheetah-vel.yaml"
        assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == 2
    finally:
        half_cheetah._model.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metadapt: error: the half-cheetah tasks need MuJoCo: pip install 'metadapt[mujoco]'"]
    assert not (tmp_path / "run").exists()
