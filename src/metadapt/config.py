"""Typed, validated configuration: YAML recipes and ``key=value`` overrides.

A recipe is a YAML mapping with these sections; every key is optional and defaults to the MAML
paper's sinusoid setting. Overrides use dotted keys: ``algorithm.inner_lr=0.02``.

* ``task: {family: NAME, …}``, ``model: {name: NAME, …}`` and ``algorithm: {name: NAME, …}`` name a
  registered component (``metadapt.registry``) or a user's class as ``pkg.module:Class``; the other
  keys of the section are that component's own options, and only those are accepted.
* ``train`` and ``eval`` are the trainer's and the evaluator's options (:class:`TrainConfig`,
  :class:`EvalConfig`).
* ``loss`` (optional) names a callable ``loss(prediction, target) -> scalar`` that replaces the
  task family's loss, as ``pkg.module:function``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from metadapt import registry
from metadapt.errors import UserError
from metadapt.options import check, coerce, fill, option, unknown_key


@dataclass
class TrainConfig:
    iterations: int = option(10000, positive=True, help="meta-iterations (meta-updates) in all")
    meta_batch_size: int = option(25, positive=True, high=100_000, help="tasks per meta-update")
    meta_lr: float = option(0.001, positive=True, help="the outer optimizer's learning rate")
    optimizer: str = option("adam", choices=("adam", "sgd"), help="the outer optimizer")
    seed: int = option(0, low=0, help="seeds every random draw of the run (tasks, initialization)")
    log_every: int = option(100, positive=True, help="iterations between lines of metrics.jsonl")
    val_every: int = option(1000, positive=True, help="iterations between validations (best.pt)")
    val_tasks: int = option(200, positive=True, high=100_000, help="held-out tasks of each validation")
    checkpoint_every: int = option(1000, positive=True, help="iterations between checkpoints")
    keep_checkpoints: int = option(3, low=0, help="step checkpoints kept besides last.pt and best.pt; "
                                                  "resume from any with --resume-from step-N")
    device: str = option("cpu", help="cpu, cuda, cuda:N or mps")
    threads: int = option(0, low=0, help="torch intra-op threads; 0 keeps torch's default")
    deterministic: bool = option(False,
                                 help="GPU: only deterministic kernels (torch.use_deterministic_algorithms), "
                                      "so a resumed or repeated CUDA run is bit-identical; slower. CPU runs "
                                      "are bit-identical without it")
    compile: bool = option(False, help="fuse meta-gradient and optimizer step in one torch.compile graph "
                                       "(tens of seconds to compile; pays off for small models)")
    on_nonfinite: str = option("stop", choices=("stop", "skip"),
                               help="what a NaN/inf meta-loss or meta-gradient does")
    clip_grad_norm: float = option(0.0, low=0,
                                   help="scale the meta-gradient down to this global norm before each "
                                        "update (0: never; the Meta-Learner LSTM's code uses 0.25)")
    time_limit_s: float = option(0.0, low=0,
                                 help="stop (with a checkpoint) after this much training time; 0: none")
    grad_shards: int = option(0, low=0,
                              help="meta-gradient slices summed in order (0: one per process); results "
                                   "are bit-identical for any number of processes dividing it")
    loggers: list[str] = option([], choices=("tensorboard", "wandb"),
                                help="also log to TensorBoard (RUN/tensorboard) and/or Weights & Biases; "
                                     "metrics.jsonl is always written")
    keep_freed_memory: bool = option(True,
                                     help="CPU (glibc): reuse freed tensor memory instead of page-faulting "
                                          "it in again every step (metadapt/allocator.py)")


@dataclass
class EvalConfig:
    tasks: int = option(600, positive=True, high=100_000, help="test tasks of each evaluation setting")
    shots: list[int] = option([5, 10, 20], positive=True, help="support examples (per class) of the settings")
    ways: list[int] = option([5, 20], low=2, help="classification families: classes per test episode")
    queries: int = option(100, positive=True, high=100_000, help="query examples (per class) per test task")
    steps: int = option(10, low=0, high=10_000, help="adaptation steps of the learning-speed curves")
    targets: list[float] = option([1.0, 0.5], positive=True, help="scores whose steps-to-reach are reported")
    seed: int = option(1234, low=0, help="seeds the test tasks (the same for every method)")

    def validate(self, prefix: str) -> None:
        if not self.shots:
            raise UserError(f"{prefix}shots must be a non-empty list of positive integers, got {self.shots}")


class Section:
    """A recipe section that names a component (``name``) and holds that component's options.

    Attribute access reads the options (``config.algorithm.inner_lr``); ``to_dict`` gives the
    recipe form ``{name_key: name, **options}``.
    """

    def __init__(self, kind: str, name: str, options: Any):
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", options)

    @property
    def entry(self) -> registry.Entry:
        return registry.lookup(self.kind, self.name)

    def option_dict(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self.options):
            return dataclasses.asdict(self.options)
        return dict(self.options)

    def to_dict(self) -> dict[str, Any]:
        return {registry.NAME_KEY[self.kind]: self.name, **self.option_dict()}

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or "options" not in self.__dict__:  # copy and pickle probe before __init__
            raise AttributeError(key)
        if key == registry.NAME_KEY[self.kind]:
            return self.name
        options = self.options
        if isinstance(options, dict):
            if key in options:
                return options[key]
        elif hasattr(options, key):
            return getattr(options, key)
        raise AttributeError(f"{self.kind} {self.name!r} has no option {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if isinstance(self.options, dict):
            self.options[key] = value
        else:
            setattr(self.options, key, value)

    def __repr__(self) -> str:
        return f"Section({self.kind}: {self.to_dict()})"


@dataclass
class Config:
    name: str = "maml-sinusoid"
    task: Section = None
    model: Section = None
    algorithm: Section = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    loss: str | None = None

    def __post_init__(self) -> None:
        """Sections left out are the defaults: MAML on the MAML paper's sinusoids."""
        if self.task is None:
            self.task = _section("task", {}, DEFAULT_NAMES["task"], legacy=False)
        if self.model is None:
            self.model = _section("model", {}, getattr(self.task.entry.target, "default_model", "mlp"),
                                  legacy=False)
        if self.algorithm is None:
            self.algorithm = _section("algorithm", {}, DEFAULT_NAMES["algorithm"], legacy=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "task": self.task.to_dict(), "model": self.model.to_dict(),
            "algorithm": self.algorithm.to_dict(), "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval), "loss": self.loss,
        }


SECTIONS = ("name", "task", "model", "algorithm", "train", "eval", "loss")
DEFAULT_NAMES = {"task": "sinusoid", "algorithm": "maml"}
#: keys every pre-registry run recorded in every section (one flat bag); a run's saved config may
#: still hold those that its component does not take, and they are dropped when it is read
LEGACY_KEYS = {
    "task": {"preset", "shots", "queries", "ways", "data_dir", "split", "train_subset", "val_subset",
             "test_subset", "download"},
    "model": {"hidden", "init_std", "filters", "downsample"},
    "algorithm": {"inner_lr", "inner_steps", "first_order", "learn_inner_lr", "adapt_only", "task_parallel",
                  "fce", "fce_steps", "cosine_scale"},
}


def _section(kind: str, data: Any, default_name: str, legacy: bool) -> Section:
    key = registry.NAME_KEY[kind]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{kind} must be a mapping of keys, got {data!r}")
    data = dict(data)
    name = data.pop(key, None)
    name = default_name if name is None else name
    if not isinstance(name, str) or not name:
        raise UserError(f"{kind}.{key} must be a name or pkg.module:Class, got {name!r}")
    try:
        entry = registry.lookup(kind, name)
    except UserError as err:
        if registry.is_import_path(name):
            raise
        raise UserError(f"{kind}.{key} must be one of {', '.join(registry.builtin_names(kind))}, or your own "
                        f"class as pkg.module:Class; got {name!r}") from err
    known = registry.option_names(entry)
    if legacy:
        if kind == "algorithm" and data.pop("learn_inner_lr", False) and "update_rule" in known:
            data.setdefault("update_rule", "metasgd")
        data = {k: v for k, v in data.items() if k in known or k not in LEGACY_KEYS.get(kind, ())}
        data = {k: v for k, v in data.items() if k not in entry.implied}
    for k, v in entry.implied.items():
        if k in data and data[k] != v:
            raise UserError(f"{kind}.{k}={data[k]!r} contradicts {kind}.{key}={name}, which means {k}={v!r}; "
                            f"drop {kind}.{k} or choose another {kind}.{key}")
    data.update(entry.implied)
    if entry.options is not None:
        return Section(kind, name, fill(entry.options, data, f"{kind}.", owner=name))
    for k in data:
        if k not in known:
            raise unknown_key(f"{kind}.{k}", [f"{kind}.{n}" for n in known], owner=name)
    return Section(kind, name, data)


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def _check_name(name: str) -> str:
    """A run's name is the folder ``runs/<name>``: one plain path component, never ``.``, ``..`` or a path."""
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(f"name must be a plain folder name of letters, digits and . _ + - (it names "
                        f"runs/<name>), got {name[:60]!r}; to write elsewhere pass --run-dir")
    return name


def _fill_fixed(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{prefix.rstrip('.')} must be a mapping of keys, got {data!r}")
    return fill(cls, data, prefix)


def resolve(raw: dict[str, Any], legacy: bool = False) -> Config:
    """A validated :class:`Config` from a recipe mapping (defaults for what it leaves out)."""
    for key in raw:
        if key not in SECTIONS:
            owners = _sections_of(key, raw)
            if owners:
                raise UserError(f"unknown config key {key!r}; did you mean "
                                f"{' or '.join(f'{o}.{key}' for o in owners)}?")
            raise unknown_key(key, list(SECTIONS))
    task = _section("task", raw.get("task"), DEFAULT_NAMES["task"], legacy)
    family = task.entry.target
    model = _section("model", raw.get("model"), getattr(family, "default_model", "mlp"), legacy)
    algorithm = _section("algorithm", raw.get("algorithm"), DEFAULT_NAMES["algorithm"], legacy)
    config = Config(
        name=_check_name(coerce(raw.get("name", Config.name), str, "name")), task=task, model=model,
        algorithm=algorithm,
        train=_fill_fixed(TrainConfig, raw.get("train"), "train."),
        eval=_fill_fixed(EvalConfig, raw.get("eval"), "eval."),
        loss=coerce(raw.get("loss"), str | None, "loss"),
    )
    return validate(config)


def _sections_of(key: str, raw: dict) -> list[str]:
    """The sections whose option a bare ``key`` is (``iterations`` → ``train``)."""
    found = []
    for kind in ("task", "model", "algorithm"):
        data = raw.get(kind) if isinstance(raw.get(kind), dict) else {}
        try:
            entry = registry.lookup(kind, data.get(registry.NAME_KEY[kind]) or DEFAULT_NAMES.get(kind, "mlp"))
        except UserError:
            continue
        if key in registry.option_names(entry):
            found.append(kind)
    found += [kind for kind, cls in (("train", TrainConfig), ("eval", EvalConfig))
              if key in {f.name for f in dataclasses.fields(cls)}]
    return found


def describe_keys(config: Config) -> list[tuple[str, str, str, str, str]]:
    """Every key of ``config``: (dotted key, type, value, allowed values, meaning) — what
    ``metadapt config`` prints."""
    rows = [("name", "str", config.name, "letters, digits, . _ + -", "the run folder runs/<name>"),
            ("loss", "str | None", str(config.loss), "pkg.module:function",
             "replaces the task family's loss")]
    sections = [("task", config.task), ("model", config.model), ("algorithm", config.algorithm),
                ("train", config.train), ("eval", config.eval)]
    for kind, section in sections:
        options = section.options if isinstance(section, Section) else section
        if isinstance(section, Section):
            key = registry.NAME_KEY[kind]
            rows.append((f"{kind}.{key}", "str", section.name, ", ".join(registry.builtin_names(kind))
                         + " or pkg.module:Class", f"the {kind} component"))
        if not dataclasses.is_dataclass(options):
            rows += [(f"{kind}.{k}", type(v).__name__, repr(v), "", "") for k, v in dict(options).items()]
            continue
        hints = get_type_hints(type(options))
        for f in dataclasses.fields(options):
            meta = f.metadata
            allowed = []
            if meta.get("choices"):
                allowed.append("one of " + ", ".join(map(str, meta["choices"])))
            if meta.get("positive"):
                allowed.append("> 0")
            if meta.get("low") is not None:
                allowed.append(f">= {meta['low']:g}")
            if meta.get("high") is not None:
                allowed.append(f"<= {meta['high']:g}")
            hint = hints.get(f.name, f.type)
            kind_name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            rows.append((f"{kind}.{f.name}", kind_name, repr(getattr(options, f.name)), ", ".join(allowed),
                         meta.get("help", "")))
    return rows


def validate(config: Config) -> Config:
    """Checks across sections: each component may refuse a combination (``check_config``)."""
    from metadapt.algorithms.base import Algorithm
    from metadapt.tasks.family import TaskFamily

    check(config.train, "train.")
    check(config.eval, "eval.")
    for section, base, what in ((config.task, TaskFamily, "a task family"),
                                (config.algorithm, Algorithm, "an algorithm")):
        target = section.entry.target
        if not (isinstance(target, type) and issubclass(target, base)):
            key = f"{section.kind}.{registry.NAME_KEY[section.kind]}"
            raise UserError(f"{key}={section.name} is not {what} (a subclass of {base.__name__}); see "
                            f"docs/design.md, 'How to add {what}'")
    for section in (config.task, config.model, config.algorithm):
        hook = getattr(section.entry.target, "check_config", None)
        if hook is not None:
            hook(config)
    if config.loss is not None:
        _check_loss(config.loss)
    return config


def _check_loss(name: str) -> None:
    if name.startswith("given:"):
        return  # a callable given from Python; the run must be loaded with it again
    if not registry.is_import_path(name):
        raise UserError(f"loss must name a callable as pkg.module:function, got {name!r}")
    if not callable(registry.import_object("loss", name)):
        raise UserError(f"loss {name!r} is not callable")


def parse_override(text: str) -> dict[str, Any]:
    """``"a.b=1"`` → ``{"a": {"b": 1}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like key=value, e.g. train.iterations=5000")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has no key")
    try:
        value = read_yaml(raw, f"override {key!r}") if raw.strip() else None
    except UserError as err:
        if "not valid YAML" not in str(err):
            raise
        value = raw
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``base`` with ``update``'s values laid over it, mapping by mapping."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and key in out and isinstance(out[key], dict):
            out[key] = merge(out[key], value, f"{prefix}{key}.")
        elif isinstance(value, dict) and key in out and out[key] is not None:
            raise UserError(f"{prefix}{key} is a single value, not a mapping; set it as {prefix}{key}=VALUE")
        else:
            out[key] = value
    return out


def apply_overrides(config: Config, overrides: list[str], legacy: bool = False) -> Config:
    """``config`` (e.g. a run's saved one) with ``key=value`` overrides applied, validated."""
    raw = config.to_dict() if isinstance(config, Config) else config
    for text in overrides:
        raw = merge(raw, parse_override(text))
    return resolve(raw, legacy=legacy)


def build_config(recipe: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the recipe's values, then each override; validated."""
    return apply_overrides(recipe or {}, overrides or [])


#: a recipe is a few dozen values; these bound what a hostile or mistaken file can make us do
MAX_RECIPE_BYTES = 1_000_000
MAX_VALUES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (YAML would keep the last)
    and a key that is not a name (every key of ours is one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                raise UserError(f"a YAML key must be a plain value (line {line})") from None
            if not isinstance(key, str):
                raise UserError(f"a YAML key must be a name, got {str(key)[:60]!r} (line {line}); keys are "
                                "words such as task or family")
            if duplicate:
                raise UserError(f"key {str(key)[:60]!r} is given twice (line "
                                f"{key_node.start_mark.line + 1}); keep one")
        return super().construct_mapping(node, deep=deep)


def _count_values(data, what: str) -> None:
    """Refuse data that expands (through YAML aliases) to more than ``MAX_VALUES`` values; counts each
    visit, so a shared or self-referencing alias is counted as often as it would be expanded."""
    count, stack = 0, [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{what} expands to more than {MAX_VALUES:,} values (nested YAML aliases?); "
                            "a recipe holds a few dozen — write it out plainly")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def read_yaml(text: str, what: str):
    """YAML ``text`` parsed strictly (no duplicate keys) and bounded (size, alias expansion)."""
    if len(text) > MAX_RECIPE_BYTES:
        raise UserError(f"{what} is {len(text):,} characters; a recipe is a few hundred (the limit is "
                        f"{MAX_RECIPE_BYTES:,})")
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{what} is not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply; a recipe has two levels") from None
    _count_values(data, what)
    return data


def read_text_file(path: Path, what: str) -> str:
    """A small UTF-8 text file (a byte-order mark is allowed), or a one-line refusal."""
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise UserError(f"{what} is {size:,} bytes; a recipe is a few hundred (the limit is "
                            f"{MAX_RECIPE_BYTES:,})")
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text; save it as UTF-8") from None
    except IsADirectoryError:
        raise UserError(f"{what} is a folder; pass a YAML file") from None
    except OSError as err:
        raise UserError(f"cannot read {what} ({err.strerror})") from None


def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"recipe {str(path)!r} not found; pass a YAML file such as "
                        "configs/sinusoid/maml.yaml")
    what = f"recipe {str(path)!r}"
    data = read_yaml(read_text_file(path, what), what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {str(path)!r} must be a YAML mapping of sections "
                        "(task, model, algorithm, train, eval)")
    return data


def config_from_file(path: str | Path, overrides: list[str] | None = None) -> Config:
    return build_config(load_recipe(path), overrides)
