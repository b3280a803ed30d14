from pathlib import Path

import pytest
from conftest import recipe_param

from metadapt.config import Config, build_config, config_from_file, parse_override
from metadapt.errors import UserError


RECIPES = [recipe_param(p) for p in sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))]


def test_defaults_are_the_maml_paper_sinusoid_setting():
    c = Config()
    assert ((c.task.shots, c.model.hidden, c.algorithm.inner_lr, c.algorithm.inner_steps)
            == (10, [40, 40], 0.01, 1))
    assert (c.train.meta_batch_size, c.train.meta_lr, c.train.optimizer) == (25, 0.001, "adam")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads(recipe):
    config = config_from_file(recipe)
    assert config.algorithm.name in recipe.stem


def test_overrides_are_typed_and_nested():
    c = build_config({"algorithm": {"name": "anil"}},
                     ["train.meta_lr=3e-4", "eval.shots=[5, 10]", "algorithm.inner_steps=2"])
    assert c.train.meta_lr == 3e-4 and c.eval.shots == [5, 10] and c.algorithm.inner_steps == 2
    assert parse_override("a.b=x") == {"a": {"b": "x"}}


@pytest.mark.parametrize("override, message", [
    ("train.metalr=0.1", "unknown config key 'train.metalr'; did you mean train.meta_lr?"),
    ("algorithm.inner_lr=-0.01", "algorithm.inner_lr must be positive, got -0.01"),
    ("train.iterations=many", "train.iterations must be an integer, got 'many'"),
    ("train.iterations=0", "train.iterations must be positive, got 0"),
    ("algorithm.name=mammal",
     "algorithm.name must be one of maml, fomaml, metasgd, anil, maml++, meta-lstm, reptile, pretrain"),
    ("algorithm.first_order=maybe", "algorithm.first_order must be true or false"),
    ("train.meta_lr=.nan", "train.meta_lr must be finite"),
    ("eval.shots=[]", "eval.shots must be a non-empty list"),
    ("trainiterations", "must look like key=value"),
    ("algorithm.inner_steps=0", "algorithm.inner_steps must be >= 1 for maml"),
])
def test_bad_values_are_refused_with_a_message_naming_them(override, message):
    with pytest.raises(UserError) as err:
        build_config(None, [override])
    assert message in str(err.value)


def test_bad_recipe_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        config_from_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        config_from_file(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="must be a YAML mapping"):
        config_from_file(listing)
    typo = tmp_path / "typo.yaml"
    typo.write_text("algoritm:\n  name: maml\n")
    with pytest.raises(UserError, match="unknown config key 'algoritm'; did you mean algorithm"):
        config_from_file(typo)
