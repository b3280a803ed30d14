"""Property-based tests (hypothesis): for *any* generated input, the recipe/override parser, the CSV
reader and the checkpoint loader return a valid config / table / checkpoint or raise ``UserError`` —
never another exception, and never take longer than a bound."""
import io
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metadapt.config import Config, build_config, config_from_file
from metadapt.csvio import read_table
from metadapt.errors import UserError
from metadapt.training.checkpoint import check_layout, load_checkpoint

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
BOUND_S = 5.0

KEYS = ["name", "task", "task.family", "task.preset", "task.shots", "task.ways", "model.name",
        "model.hidden", "algorithm", "algorithm.name", "algorithm.inner_lr", "algorithm.inner_steps",
        "algorithm.first_order", "algorithm.task_parallel", "train.iterations", "train.meta_lr",
        "train.device",
        "train.seed", "eval.shots", "eval.steps", "loss", "x", "train.x.y", ""]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["train:", "  seed: 1", "  seed: 2", "task: {family: sinusoid}", "- a", "&a [1]",
                              "*a", "x: &b [*b]", "model:\n  hidden: [8, 8]", "name: ../up", "? [1]\n: 2",
                              "!!python/object:os.system {}", "\t", "%YAML 1.1", "---", "...", "{", "]"]),
             max_size=8).map("\n".join),
)


def timed(fn, *args):
    started = time.perf_counter()
    try:
        return fn(*args)
    finally:
        assert time.perf_counter() - started < BOUND_S


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=5))
def test_overrides_give_a_config_or_a_user_error(pairs):
    overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for key, value in pairs]
    try:
        config = timed(build_config, None, overrides)
    except UserError:
        return
    assert isinstance(config, Config) and isinstance(config.to_dict(), dict)


@SETTINGS
@given(st.text(max_size=120))
def test_any_override_text_gives_a_config_or_a_user_error(text):
    try:
        timed(build_config, None, [text])
    except UserError:
        pass


@SETTINGS
@given(yaml_text)
def test_any_recipe_file_gives_a_config_or_a_user_error(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    try:
        config = timed(config_from_file, path)
    except UserError:
        return
    assert isinstance(config, Config)


cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                  st.text(alphabet="0123456789.eE+-xy ,\"\ufeff\r", max_size=8))


@SETTINGS
@given(st.one_of(st.lists(st.lists(cells, min_size=0, max_size=4), max_size=6).map(
    lambda rows: "\n".join(",".join(r) for r in rows)), st.text(max_size=80)),
    st.sampled_from([(2,), (1,), (1, 2)]))
def test_any_csv_gives_a_finite_table_or_a_user_error(tmp_path, text, columns):
    path = tmp_path / "t.csv"
    path.write_text(text)
    try:
        table, _ = timed(read_table, path, columns, "support")
    except UserError:
        return
    assert table.dtype == torch.float32 and table.shape[1] in columns and len(table) >= 1
    assert bool(torch.isfinite(table).all())


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    from metadapt.training import train

    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(build_config(None, ["train.iterations=2", "train.meta_batch_size=2", "train.val_tasks=2",
                              "train.val_every=1", "train.checkpoint_every=1", "model.hidden=[4]"]), run,
          progress=False)
    return (run / "checkpoints/last.pt").read_bytes()


@SETTINGS
@given(st.data())
def test_damaged_checkpoints_load_checked_or_give_a_user_error(tmp_path, good_checkpoint, data):
    """Bytes flipped, cut or inserted anywhere in a real checkpoint: it loads (and every tensor is a
    plain contiguous array) or is refused with a UserError."""
    raw = bytearray(good_checkpoint)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:at + data.draw(st.integers(1, 64))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    path = tmp_path / "c.pt"
    path.write_bytes(bytes(raw))
    try:
        payload = timed(load_checkpoint, path)
    except UserError:
        return
    check_layout(payload, path)


@SETTINGS
@given(st.recursive(st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none(),
                              st.builds(torch.zeros, st.integers(0, 3)),
                              st.builds(lambda n: torch.zeros(n, n).t(), st.integers(2, 3)),
                              st.builds(lambda n: torch.zeros(1).expand(n), st.integers(2, 3))),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                    max_leaves=8))
def test_any_saved_structure_loads_checked_or_gives_a_user_error(tmp_path, payload):
    path = tmp_path / "c.pt"
    torch.save({"state": {}, "extra": payload}, path)
    try:
        loaded = load_checkpoint(path)
    except UserError:
        return
    check_layout(loaded, path)


def test_a_zip_that_is_not_a_checkpoint_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x04K\x01.")
    path = Path(tmp_path) / "c.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UserError):
        load_checkpoint(path)


def test_a_damaged_pickle_that_trips_torch_s_own_assertion_is_a_user_error(tmp_path, good_checkpoint):
    """Found by the property test above in CI: one flipped bit of the pickle makes torch's unpickler
    fail an internal assertion ("saved_id must be a tuple") instead of raising an unpickling error."""
    raw = bytearray(good_checkpoint)
    raw[295] ^= 1
    path = tmp_path / "c.pt"
    path.write_bytes(bytes(raw))
    try:
        payload = load_checkpoint(path)
    except UserError:
        return
    check_layout(payload, path)
