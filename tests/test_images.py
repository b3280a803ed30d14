"""Your own images and the standard benchmarks from files: class-folder trees, the cache, lazy reading,
each benchmark loader on synthetic files built here, and ResNet-12."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import class_tree, cifar100_archive, cub_archive, encoded, picture

import metadapt.datasets.benchmarks as benchmarks
import metadapt.datasets.images as images
from metadapt.datasets.archives import file_digests
from metadapt.datasets.benchmarks import load_benchmark
from metadapt.datasets.cifar_fs_split import CIFAR_FS_SPLIT
from metadapt.datasets.images import load_image_folder
from metadapt.errors import UserError
from metadapt.models import ResNet12
from metadapt.tasks.episodes import Episodes


def test_class_folder_is_decoded_resized_and_cached_once(tmp_path, monkeypatch):
    root = class_tree(tmp_path / "pets")
    (root / "class00" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    classes = load_image_folder(root, size=16, cache_dir=tmp_path / "cache", progress=False)
    assert list(classes) == [f"class{c:02d}" for c in range(8)]
    assert all(len(classes[n]) == 6 for n in classes)
    x = classes["class03"][torch.tensor([0, 5])]
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert len(list((tmp_path / "cache").glob("pets-16px-3c-*.npy"))) == 1

    monkeypatch.setattr(images, "decode", lambda *a: pytest.fail("an unchanged tree was decoded again"))
    again = load_image_folder(root, size=16, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(again["class03"][torch.tensor([0, 5])], x)


def test_a_changed_tree_builds_a_new_cache_and_a_torn_cache_is_rebuilt(tmp_path):
    root = class_tree(tmp_path / "pets", classes=3, per_class=2)
    cache = tmp_path / "cache"
    load_image_folder(root, size=8, cache_dir=cache, progress=False)
    before = set(cache.glob("*.npy"))
    (root / "class01" / "img9.png").write_bytes(encoded(picture(1, 9)))
    changed = load_image_folder(root, size=8, cache_dir=cache, progress=False)
    (new,) = set(cache.glob("*.npy")) - before
    assert len(changed["class01"]) == 3
    for torn in (new.read_bytes()[:200], b""):  # cut, then empty: rebuilt both times
        new.write_bytes(torn)
        rebuilt = load_image_folder(root, size=8, cache_dir=cache, progress=False)
        assert new.stat().st_size > 1000
        assert torch.equal(rebuilt["class01"][torch.arange(3)], changed["class01"][torch.arange(3)])


def test_lazy_reading_gives_the_same_episodes_as_memory(tmp_path):
    root = class_tree(tmp_path / "pets")
    memory = load_image_folder(root, size=12, cache_dir=tmp_path / "c", lazy=False, progress=False)
    lazy = load_image_folder(root, size=12, cache_dir=tmp_path / "c", lazy=True, progress=False)
    assert isinstance(lazy.array, np.memmap) and not isinstance(memory.array, np.memmap)
    a = Episodes(memory, ways=4, shots=2, queries=3).sample(5, torch.Generator().manual_seed(1))
    b = Episodes(lazy, ways=4, shots=2, queries=3).sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert a.support_x.shape == (5, 8, 3, 12, 12) and a.query_x.shape == (5, 12, 3, 12, 12)
    # each image is the one its class and index name (the gathered path against plain indexing)
    c = a.info["classes"][2, 1].item()
    name = list(memory)[c]
    found = [any(torch.equal(a.support_x[2, 2 + k], memory[name][torch.tensor([i])][0]) for i in range(6))
             for k in range(2)]
    assert all(found)
    assert torch.equal(a.support_y[0], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))


def test_grey_images_and_variable_class_sizes(tmp_path):
    root = class_tree(tmp_path / "g", classes=4, per_class=3)
    (root / "class02" / "img0.png").unlink()
    classes = load_image_folder(root, size=10, channels=1, cache_dir=tmp_path / "c", progress=False)
    assert [len(classes[n]) for n in classes] == [3, 3, 2, 3]
    batch = Episodes(classes, ways=4, shots=1, queries=1).sample(3, torch.Generator().manual_seed(0))
    assert batch.query_x.shape == (3, 4, 1, 10, 10)


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "class01" / "img0.png").write_bytes(b"\x89PNG broken"), "img0.png.*not decode"),
    (lambda root: [p.unlink() for p in (root / "class02").iterdir()], "class02.*holds no images"),
])
def test_bad_trees_are_refused_naming_the_file(tmp_path, damage, message):
    root = class_tree(tmp_path / "t", classes=3, per_class=2)
    damage(root)
    with pytest.raises(UserError, match=message):
        load_image_folder(root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").glob("*.npy")) if (tmp_path / "c").exists() else True


def test_missing_folder_says_what_it_should_hold(tmp_path):
    with pytest.raises(UserError, match="one folder of images per class"):
        load_image_folder(tmp_path / "nowhere", progress=False)


def test_folder_splits_from_subfolders_or_by_shares(tmp_path):
    shared = tmp_path / "shared"
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        class_tree(shared / split, classes=n, per_class=2)
    kw = dict(size=8, cache_dir=tmp_path / "c", progress=False)
    splits = load_benchmark("folder", shared, **kw)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [5, 2, 3]

    plain = class_tree(tmp_path / "plain", classes=20, per_class=2)
    one = load_benchmark("folder", plain, split=(0.6, 0.2, 0.2), split_seed=3, **kw)
    two = load_benchmark("folder", plain, split=(0.6, 0.2, 0.2), split_seed=3, **kw)
    assert [len(one[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert all(list(one[s]) == list(two[s]) for s in one)
    assert not set(one["train"]) & set(one["test"]) and not set(one["val"]) & set(one["test"])
    other = load_benchmark("folder", plain, split=(0.6, 0.2, 0.2), split_seed=4, **kw)
    assert list(other["test"]) != list(one["test"])

    (tmp_path / "half").mkdir()
    class_tree(tmp_path / "half" / "train", classes=3, per_class=2)
    with pytest.raises(UserError, match="no val, test/"):
        load_benchmark("folder", tmp_path / "half", **kw)


# ----- the benchmarks --------------------------------------------------------------------------
def test_benchmark_missing_files_say_where_to_put_them(tmp_path):
    for name, names in (("mini-imagenet", "train.csv"), ("tiered-imagenet", "_images_png.pkl"),
                        ("cifar-fs", "cifar-100-python.tar.gz"), ("cub", "CUB_200_2011.tgz")):
        with pytest.raises(UserError, match=f"files not found in .*{names}.*nothing is downloaded"):
            load_benchmark(name, tmp_path, size=8, cache_dir=tmp_path / "c", progress=False)


def test_mini_imagenet_from_ravi_csv_files(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmarks.EXPECTED, "mini-imagenet", ((3, 2, 2), 4))
    (tmp_path / "images").mkdir()
    c = 0
    for split, classes in (("train", 3), ("val", 2), ("test", 2)):
        rows = ["filename,label"]
        for _ in range(classes):
            wnid = f"n{c:08d}"
            for k in range(4):
                name = f"{wnid}{k:08d}.jpg"
                (tmp_path / "images" / name).write_bytes(encoded(picture(c, k, 20), "JPEG"))
                rows.append(f"{name},{wnid}")
            c += 1
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match="train.csv' has the wrong checksum.*published file"):
        load_benchmark("mini-imagenet", tmp_path, size=12, cache_dir=tmp_path / "c", progress=False)
    sums = {f"{s}.csv": [file_digests(tmp_path / f"{s}.csv")] for s in ("train", "val", "test")}
    splits = load_benchmark("mini-imagenet", tmp_path, size=12, cache_dir=tmp_path / "c", progress=False,
                            checksums=sums)
    assert list(splits["val"]) == ["n00000003", "n00000004"]
    assert splits["test"]["n00000006"][torch.arange(4)].shape == (4, 3, 12, 12)

    (tmp_path / "images" / "n0000000000000001.jpg").unlink()
    with pytest.raises(UserError, match="n0000000000000001.jpg.*missing"):
        load_benchmark("mini-imagenet", tmp_path, size=10, cache_dir=tmp_path / "c", progress=False,
                       checksums=sums)


def test_mini_imagenet_cache_pickles_at_the_benchmark_size(tmp_path):
    # the real class and image counts (64/16/20 classes of 600), with 4×4 images to stay small
    rng = np.random.default_rng(0)
    for split, classes in (("train", 64), ("val", 16), ("test", 20)):
        data = {"image_data": rng.integers(0, 256, (classes * 600, 4, 4, 3), dtype=np.uint8),
                "class_dict": {f"n{split}{c:03d}": list(range(c * 600, (c + 1) * 600))
                               for c in range(classes)}}
        (tmp_path / f"mini-imagenet-cache-{split}.pkl").write_bytes(pickle.dumps(data, protocol=4))
    splits = load_benchmark("mini-imagenet", tmp_path, size=4, cache_dir=tmp_path / "c", progress=False)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    original = pickle.loads((tmp_path / "mini-imagenet-cache-val.pkl").read_bytes())["image_data"][601]
    got = splits["val"]["nval001"][torch.tensor([1])][0]
    assert torch.equal(got, torch.from_numpy(original.copy()).permute(2, 0, 1).float() / 255)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    for split in ("train", "val", "test"):
        (tmp_path / f"mini-imagenet-cache-{split}.pkl").write_bytes(pickle.dumps({"image_data": Evil()}))
    with pytest.raises(UserError, match="not a plain data pickle.*pathlib"):
        load_benchmark("mini-imagenet", tmp_path, size=4, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "ran").exists()


def test_tiered_imagenet_from_folders_and_from_the_original_pickles(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmarks.EXPECTED, "tiered-imagenet", ((3, 2, 2), None))
    folders = tmp_path / "folders"
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        class_tree(folders / split, classes=n, per_class=3)
    splits = load_benchmark("tiered-imagenet", folders, size=8, cache_dir=tmp_path / "c", progress=False)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 2, 2]

    pickles = tmp_path / "pickles"
    pickles.mkdir()
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        labels = [c for k in range(3) for c in range(n)]  # interleaved, as the original files are
        pngs = [np.frombuffer(encoded(picture(c, k, 9)), dtype=np.uint8) for k in range(3) for c in range(n)]
        (pickles / f"{split}_images_png.pkl").write_bytes(pickle.dumps(pngs))
        (pickles / f"{split}_labels.pkl").write_bytes(pickle.dumps({
            "label_specific": np.asarray(labels), "label_general": np.zeros(len(labels), int),
            "label_specific_str": [f"n{split}{c}" for c in range(n)], "label_general_str": ["all"]}))
    splits = load_benchmark("tiered-imagenet", pickles, size=9, cache_dir=tmp_path / "c", progress=False)
    assert list(splits["train"]) == ["ntrain0", "ntrain1", "ntrain2"]
    first = splits["train"]["ntrain1"][torch.tensor([0])][0]
    expected = torch.from_numpy(np.array(picture(1, 0, 9))).permute(2, 0, 1).float() / 255
    assert torch.equal(first, expected)


def test_cifar_fs_from_the_published_archive(tmp_path):
    names = sorted(CIFAR_FS_SPLIT["train"] + CIFAR_FS_SPLIT["val"] + CIFAR_FS_SPLIT["test"])
    assert len(names) == len(set(names)) == 100
    archive = cifar100_archive(tmp_path / "cifar-100-python.tar.gz", names)
    sums = {archive.name: [{"sha256": file_digests(archive)["sha256"]}]}
    kw = dict(size=32, cache_dir=tmp_path / "c", progress=False, checksums=sums)
    with pytest.MonkeyPatch.context() as m:
        m.setitem(benchmarks.EXPECTED, "cifar-fs", ((64, 16, 20), 5))
        splits = load_benchmark("cifar-fs", tmp_path, **kw)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert set(splits["test"]) == set(CIFAR_FS_SPLIT["test"])
    label = names.index(CIFAR_FS_SPLIT["test"][0])
    got = splits["test"][CIFAR_FS_SPLIT["test"][0]][torch.tensor([3])][0]  # the first test-batch image
    expected = torch.from_numpy(np.array(picture(label, 10, 32))).permute(2, 0, 1).float() / 255
    assert torch.equal(got, expected)
    with pytest.raises(UserError, match="has 5 images where the benchmark has 600"):
        load_benchmark("cifar-fs", tmp_path, **kw)


def test_a_damaged_archive_fails_its_published_checksum(tmp_path):
    cifar100_archive(tmp_path / "cifar-100-python.tar.gz", [f"c{i}" for i in range(100)], (1, 1))
    with pytest.raises(UserError, match="wrong checksum"):
        load_benchmark("cifar-fs", tmp_path, size=32, cache_dir=tmp_path / "c", progress=False)
    cub_archive(tmp_path / "CUB_200_2011.tgz", species=2, per_class=1)
    with pytest.raises(UserError, match="wrong checksum"):
        load_benchmark("cub", tmp_path, size=8, cache_dir=tmp_path / "c", progress=False)


def test_cub_from_the_published_archive_with_chen_et_al_split(tmp_path):
    archive = cub_archive(tmp_path / "CUB_200_2011.tgz")
    sums = {archive.name: [{"sha256": file_digests(archive)["sha256"]}]}
    splits = load_benchmark("cub", tmp_path, size=8, cache_dir=tmp_path / "c", progress=False, checksums=sums)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [100, 50, 50]
    assert list(splits["train"])[:2] == ["001.Bird_0", "003.Bird_2"]
    assert list(splits["val"])[:2] == ["002.Bird_1", "006.Bird_5"]
    assert list(splits["test"])[:2] == ["004.Bird_3", "008.Bird_7"]
    assert splits["test"]["004.Bird_3"][torch.arange(2)].shape == (2, 3, 8, 8)


# ----- ResNet-12 and the family end to end -----------------------------------------------------
def test_resnet12_shapes_and_parameter_count():
    net = ResNet12(3)
    assert sum(p.numel() for p in net.parameters()) == 12_424_320  # MetaOptNet's module has as many
    assert net(torch.rand(2, 3, 84, 84)).shape == (2, 640)
    small = ResNet12(3, widths=(4, 4, 8, 8), pool="flatten", image_size=84)
    assert small(torch.rand(2, 3, 84, 84)).shape == (2, 8 * 5 * 5) == (2, small.embedding_dim)
    head = ResNet12(3, widths=(4, 4, 8, 8), out_features=5, image_size=32)
    assert head(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="too small"):
        ResNet12(3, image_size=8)


def test_resnet12_adapts_functionally_like_the_module(tmp_path):
    from torch.func import functional_call

    torch.manual_seed(0)
    net = ResNet12(3, widths=(4, 4, 8, 8), out_features=3, image_size=16).double()
    x, y = torch.rand(6, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    params = dict(net.named_parameters())
    loss = lambda p: torch.nn.functional.cross_entropy(functional_call(net, p, (x,)), y)
    grads = torch.autograd.grad(loss(params), list(params.values()))
    assert all(torch.isfinite(g).all() for g in grads)
    # the meta-gradient's path: a convolution inside a residual block, against finite differences
    weight = params["2.body.3.weight"].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: loss({**params, "2.body.3.weight": w}), (weight,))


@pytest.mark.parametrize("algorithm, model", [("protonet", "resnet12"), ("maml", "conv4")])
def test_train_and_evaluate_on_your_own_image_folder(tmp_path, monkeypatch, capsys, algorithm, model):
    from metadapt.cli import main

    monkeypatch.setenv("METADAPT_CACHE", str(tmp_path / "cache"))
    root = class_tree(tmp_path / "mine", classes=20, per_class=8, size=14)
    run = tmp_path / "run"
    width = "model.widths=[8,8,16,16]" if model == "resnet12" else "model.filters=8"
    recipe = str(Path(__file__).parent.parent / "configs/images/protonet.yaml")
    args = ["train", recipe, f"task.data_dir={root}",
            f"algorithm.name={algorithm}", f"model.name={model}", width, "task.image_size=16",
            "task.ways=3", "task.queries=3", "train.iterations=30", "train.val_every=15", "train.val_tasks=4",
            "train.checkpoint_every=15", "eval.queries=3", "eval.ways=[3]", "eval.shots=[1,3]",
            "--run-dir", str(run), "--no-progress"]
    if algorithm == "maml":
        args[1:1] = ["algorithm.inner_steps=1", "eval.steps=2"]
    assert main(args) == 0
    assert main(["eval", str(run), "--tasks", "30", "--no-progress"]) == 0
    results = json.loads((run / "eval/results.json").read_text())
    best = max(results["settings"]["3-way 3-shot"]["methods"][algorithm]["mean"])
    assert best > 0.5  # the synthetic classes are separable: far above chance (1/3) after 30 episodes
    assert (run / "plots/example_episodes.png").stat().st_size > 5_000
    assert "3×16×16" in (run / "report.md").read_text() or "16×16 RGB" in (run / "report.md").read_text()


def test_a_cache_over_the_memory_limit_is_read_lazily_by_default(tmp_path, monkeypatch):
    root = class_tree(tmp_path / "big", classes=3, per_class=2)
    small = load_image_folder(root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert not isinstance(small.array, np.memmap)
    monkeypatch.setattr(images, "MEMORY_LIMIT", 100)  # bytes: this cache is larger
    big = load_image_folder(root, size=8, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(big.array, np.memmap)


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from metadapt.datasets.images import decode

    gradient = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    grey = decode(tmp_path / "deep.png", "deep.png", 64, 1)[..., 0]
    assert grey[:, 0].max() <= 1 and grey[:, -1].min() >= 254 and 120 <= grey[0, 32] <= 135
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    assert abs(int(decode(tmp_path / "f.tif", "f.tif", 8, 1).mean()) - 128) <= 1


def test_gathering_refuses_an_index_beyond_its_class(tmp_path):
    classes = load_image_folder(class_tree(tmp_path / "t", classes=2, per_class=2), size=8,
                                cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(IndexError):
        classes.take(torch.tensor([[0]]), torch.tensor([[[2]]]))


def test_the_archive_member_limit_admits_cifar_100_s_train_pickle():
    assert benchmarks.MAX_MEMBER_BYTES["cifar-100-python/"] > 50_000 * 3_072 * 1.1


def test_mini_imagenet_csvs_without_their_images_folder_say_so(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("filename,label\n")
    with pytest.raises(UserError, match="no images/ folder"):
        load_benchmark("mini-imagenet", tmp_path, size=8, cache_dir=tmp_path / "c", progress=False)


def test_a_truncated_pickle_is_called_damaged_not_unsafe(tmp_path):
    for split in ("train", "val", "test"):
        data = pickle.dumps({"image_data": np.zeros((2, 4, 4, 3), np.uint8), "class_dict": {"a": [0, 1]}})
        (tmp_path / f"mini-imagenet-cache-{split}.pkl").write_bytes(data[:40])
    with pytest.raises(UserError, match="damaged or truncated"):
        load_benchmark("mini-imagenet", tmp_path, size=4, cache_dir=tmp_path / "c", progress=False)


def test_resnet12_options_that_cannot_build_are_one_line_errors():
    from metadapt.models.resnet12 import ResNet12Options

    with pytest.raises(UserError, match="model.widths must list the four"):
        ResNet12.from_options(ResNet12Options(widths=[1, 2]), (3, 32, 32), 5)
    with pytest.raises(UserError, match="8×8 is too small"):
        ResNet12.from_options(ResNet12Options(), (3, 8, 8), 5)
