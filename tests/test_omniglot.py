"""The Omniglot loader on archives the tests build, and on the shared copy where present."""
from pathlib import Path

import pytest
import torch
from omniglot_fixtures import make_archives, png

import metadapt.datasets.omniglot as omniglot
from metadapt.datasets.archives import file_digests, safe_extract
from metadapt.datasets.omniglot import load_omniglot
from metadapt.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def test_loads_decodes_rotates_and_caches(tmp_path, monkeypatch):
    sums = make_archives(tmp_path / "data")
    kw = dict(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", allow_download=False, progress=False,
              checksums=sums)
    train = load_omniglot("train", **kw)
    assert len(train) == 2 * 2 * 4  # 2 alphabets x 2 non-val characters x 4 rotations
    images = train["backgroundAlpha0/character02/rot000"]
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.mean() < 0.5  # strokes bright on dark
    assert torch.equal(train["backgroundAlpha0/character02/rot090"], torch.rot90(images, 1, dims=(2, 3)))
    assert list((tmp_path / "cache").glob("omniglot-28-*.npz"))
    monkeypatch.setattr(omniglot, "_decode",
                        lambda *a: pytest.fail("decoded again instead of using the cache"))
    assert len(load_omniglot("test", **kw)) == 2 * 3 * 4
    assert len(load_omniglot("trainval", **kw)) == 2 * 3 * 4
    background = load_omniglot("trainval", split="background", **kw)
    assert len(background) == 6 and background["backgroundAlpha1/character03"].shape == (6, 1, 28, 28)
    # the last sixth of the background alphabets (here one of two) are validation classes
    assert set(load_omniglot("train", split="background", **kw)) == {n for n in background if "Alpha0" in n}
    assert set(load_omniglot("val", split="background", **kw)) == {n for n in background if "Alpha1" in n}


def kwargs(tmp_path, sums):
    return dict(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", allow_download=False,
                progress=False, checksums=sums)


def test_wrong_checksum_is_refused(tmp_path):
    make_archives(tmp_path / "data")
    with pytest.raises(UserError, match="has the wrong checksum .* delete it and download it again"):
        load_omniglot("train", **kwargs(tmp_path, {"images_background.zip": [{"sha256": "0" * 64}]}))


def test_the_real_archives_checksums_are_known():
    assert {"md5": "68d2efa1b9178cc56df9314c21c6e718"} in omniglot.ARCHIVES["images_background.zip"]
    assert {"md5": "6b91aef0f799c5bb55b94e3f2daec811"} in omniglot.ARCHIVES["images_evaluation.zip"]


def test_corrupt_archive_is_refused(tmp_path):
    make_archives(tmp_path / "data")
    path = tmp_path / "data/images_background.zip"
    path.write_bytes(path.read_bytes()[:-500])
    sums = {"images_background.zip": [{"sha256": file_digests(path)["sha256"]}]}
    with pytest.raises(UserError, match="is corrupt or truncated"):
        load_omniglot("train", **kwargs(tmp_path, sums))


def test_path_traversal_entry_is_refused_and_nothing_escapes(tmp_path):
    sums = make_archives(tmp_path / "data", extra_entries=[("../../evil.png", png(0))])
    with pytest.raises(UserError, match="would be written outside its folder"):
        load_omniglot("train", **kwargs(tmp_path, sums))
    with pytest.raises(UserError, match="outside its folder"):
        safe_extract(tmp_path / "data/images_background.zip", tmp_path / "out")
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_safe_extract_extracts_a_clean_archive(tmp_path):
    make_archives(tmp_path / "data")
    safe_extract(tmp_path / "data/images_evaluation.zip", tmp_path / "out")
    assert len(list((tmp_path / "out/images_evaluation").rglob("*.png"))) == 2 * 3 * 6


def test_image_that_does_not_decode_is_refused(tmp_path):
    sums = make_archives(tmp_path / "data",
                         extra_entries=[("images_evaluation/evalAlpha0/character01/9999_99.png",
                                         b"not a png")])
    with pytest.raises(UserError, match="does not decode"):
        load_omniglot("test", **kwargs(tmp_path, sums))


def test_missing_archive_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError, match="not found in .*; put the file there \\(from https://github.com/brendenlake"):
        load_omniglot("train", data_dir=tmp_path, cache_dir=tmp_path, allow_download=False, progress=False)


def test_missing_archive_without_network_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(omniglot, "download", lambda url, dest: False)
    with pytest.raises(UserError, match="could not be downloaded"):
        load_omniglot("train", data_dir=tmp_path, cache_dir=tmp_path, allow_download=True, progress=False)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared Omniglot copy is not on this machine")
def test_shared_copy_has_the_vinyals_split(tmp_path):
    kw = dict(data_dir=SHARED, cache_dir=tmp_path, allow_download=False, progress=False)
    trainval, test = load_omniglot("trainval", **kw), load_omniglot("test", **kw)
    assert (len(trainval), len(test)) == (4800, 1692)
    assert all(v.shape == (20, 1, 28, 28) for v in test.values())
    assert set(trainval).isdisjoint(test)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared Omniglot copy is not on this machine")
def test_protonet_trains_and_evaluates_end_to_end_on_the_shared_copy(tmp_path, monkeypatch, capsys):
    from metadapt.cli import main

    monkeypatch.setenv("METADAPT_CACHE", str(tmp_path / "cache"))
    recipe = str(Path(__file__).parent.parent / "configs/omniglot/protonet.yaml")
    run = tmp_path / "run"
    args = ["train", recipe, f"task.data_dir={SHARED}", "task.download=false", "task.ways=5",
            "train.iterations=30", "train.val_every=15", "train.val_tasks=10", "train.checkpoint_every=15",
            "model.filters=16", "--run-dir", str(run), "--no-progress"]
    assert main(args) == 0
    logged = [__import__("json").loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["accuracy"] <= 1 for r in logged if r["split"] == "train")
    assert main(["eval", str(run), "--tasks", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5-way 1-shot (20 tasks), accuracy %" in out and "20-way 5-shot" in out
    assert "steps to accuracy" not in out  # ProtoNet takes no steps: no steps-to-target table
    results = __import__("json").loads((run / "eval/results.json").read_text())
    accuracy = results["settings"]["5-way 5-shot"]["methods"]["protonet"]["mean"][0]
    assert accuracy > 0.5  # 30 episodes of training already beat chance (20%) by far
    assert (run / "plots/example_episodes.png").stat().st_size > 10_000
