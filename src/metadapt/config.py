"""Typed, validated configuration: dataclasses, YAML recipes and ``key=value`` overrides.

A recipe is a YAML mapping with the sections below; every key is optional and defaults to the
MAML paper's sinusoid setting. Overrides use dotted keys: ``algorithm.inner_lr=0.02``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from metadapt.errors import UserError


@dataclass
class TaskConfig:
    family: str = "sinusoid"      # sinusoid | omniglot
    preset: str = "maml"          # sinusoid: "maml": x ~ U[-5, 5]; "founding": x ~ U[-pi, pi]
    shots: int = 10               # support examples per task (per class for omniglot) in meta-training
    queries: int = 10             # query examples per task (per class for omniglot) in meta-training
    ways: int = 5                 # omniglot: classes per episode in meta-training
    data_dir: str | None = None   # omniglot: folder with the archives (default ~/.cache/metadapt/data/omniglot)
    split: str = "vinyals"        # omniglot: vinyals | background
    train_subset: str = "trainval"
    val_subset: str = "val"
    test_subset: str = "test"
    download: bool = True         # omniglot: fetch missing archives where there is a network


@dataclass
class ModelConfig:
    name: str = "mlp"             # mlp | conv4
    hidden: list[int] = field(default_factory=lambda: [40, 40])
    init_std: float | None = None  # mlp: null keeps torch's init; 0.01 is the MAML code's (truncated normal, zero bias)
    filters: int = 64             # conv4
    downsample: str = "pool"      # conv4: pool (2×2 max-pool per block) | stride (stride-2 convolutions, the MAML code's Omniglot net)


@dataclass
class AlgorithmConfig:
    name: str = "maml"            # maml | fomaml | metasgd | anil | reptile | pretrain
    inner_lr: float = 0.01
    inner_steps: int = 1
    first_order: bool = False     # implied by fomaml and reptile
    learn_inner_lr: bool = False  # implied by metasgd
    adapt_only: str | None = None  # "head" is implied by anil
    task_parallel: str = "auto"   # auto | vmap | loop
    fce: bool = False             # matching: full-context embeddings
    fce_steps: int = 5            # matching: attLSTM steps with fce
    cosine_scale: float | None = None  # matching: initial learned inverse temperature on the cosines; null: plain cosine


@dataclass
class TrainConfig:
    iterations: int = 10000
    meta_batch_size: int = 25
    meta_lr: float = 0.001
    optimizer: str = "adam"       # adam | sgd
    seed: int = 0
    log_every: int = 100
    val_every: int = 1000
    val_tasks: int = 200
    checkpoint_every: int = 1000
    device: str = "cpu"
    threads: int = 0              # torch intra-op threads; 0 keeps torch's default
    compile: bool = False         # MAML family: fuse meta-gradient and optimizer step in one torch.compile
                                  # graph (tens of seconds to compile; pays off for small models)
    on_nonfinite: str = "stop"    # stop | skip: what a NaN/inf meta-loss or meta-gradient does
    time_limit_s: float = 0.0     # stop (with a checkpoint) after this much training time; 0: no limit
    grad_shards: int = 0          # meta-gradient slices summed in order (0: one per process); results are
                                  # bit-identical for any number of processes dividing it
    keep_freed_memory: bool = True  # CPU (glibc): reuse freed tensor memory instead of page-faulting it in
                                    # again every step (metadapt/allocator.py; 3-21% of a Conv-4 step)


@dataclass
class EvalConfig:
    tasks: int = 600
    shots: list[int] = field(default_factory=lambda: [5, 10, 20])
    ways: list[int] = field(default_factory=lambda: [5, 20])   # omniglot only
    queries: int = 100
    steps: int = 10
    targets: list[float] = field(default_factory=lambda: [1.0, 0.5])
    seed: int = 1234


@dataclass
class Config:
    name: str = "maml-sinusoid"
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


GRADIENT_BASED = ("maml", "fomaml", "metasgd", "anil", "reptile", "pretrain")
METRIC_BASED = ("protonet", "matching")
ALGORITHM_NAMES = GRADIENT_BASED + METRIC_BASED
CHOICES = {
    "task.family": ("sinusoid", "omniglot"),
    "task.preset": ("maml", "founding"),
    "task.split": ("vinyals", "background"),
    "model.name": ("mlp", "conv4"),
    "model.downsample": ("pool", "stride"),
    "algorithm.name": ALGORITHM_NAMES,
    "algorithm.adapt_only": (None, "head"),
    "algorithm.task_parallel": ("auto", "vmap", "loop"),
    "train.optimizer": ("adam", "sgd"),
    "train.on_nonfinite": ("stop", "skip"),
}
POSITIVE = {"algorithm.cosine_scale", "model.init_std", "task.shots", "task.queries", "task.ways", "model.filters", "algorithm.fce_steps", "algorithm.inner_lr", "train.iterations", "train.meta_batch_size",
            "train.meta_lr", "train.log_every", "train.val_every", "train.val_tasks", "train.checkpoint_every",
            "eval.tasks", "eval.queries"}
NON_NEGATIVE = {"train.time_limit_s", "train.grad_shards", "algorithm.inner_steps", "eval.steps", "train.threads", "train.seed", "eval.seed"}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, item, f"{key}[]") for v in value]
    args = get_args(hint)
    if args and type(None) in args:  # Optional[...]
        if value is None or value == "null":
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"{key} must be finite, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def _unknown(key: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in known], n=1)
    hint = ""
    if close:
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        hint = f"; did you mean {prefix}{close[0]}?"
    return UserError(f"unknown config key {key!r}{hint}")


def _apply(target: Any, data: dict[str, Any], prefix: str = "") -> None:
    hints = get_type_hints(type(target))
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            raise _unknown(dotted, [f"{prefix}{k}" for k in hints])
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{dotted} must be a mapping of keys, got {value!r}")
            _apply(current, value, f"{dotted}.")
        else:
            setattr(target, key, _coerce(value, hints[key], dotted))


def validate(config: Config) -> Config:
    """Refuse out-of-range or inconsistent values with a message naming them."""
    flat = _flatten(config.to_dict())
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise UserError(f"{key} must be one of {', '.join(map(str, allowed))}; got {flat[key]!r}")
    for key in POSITIVE:
        if flat[key] is not None and not flat[key] > 0:
            raise UserError(f"{key} must be positive, got {flat[key]}")
    for key in NON_NEGATIVE:
        if flat[key] < 0:
            raise UserError(f"{key} must be >= 0, got {flat[key]}")
    if any(h < 1 for h in config.model.hidden):
        raise UserError(f"model.hidden widths must be >= 1, got {config.model.hidden}")
    if not config.eval.shots or any(s < 1 for s in config.eval.shots):
        raise UserError(f"eval.shots must be a non-empty list of positive integers, got {config.eval.shots}")
    if any(not t > 0 for t in config.eval.targets):
        raise UserError(f"eval.targets must be positive losses, got {config.eval.targets}")
    if config.task.family == "omniglot" and config.model.name != "conv4":
        raise UserError("task.family=omniglot needs model.name=conv4 (images); mlp is for sinusoid")
    if config.task.family == "sinusoid" and config.model.name != "mlp":
        raise UserError("task.family=sinusoid needs model.name=mlp")
    if config.algorithm.name in METRIC_BASED and config.task.family != "omniglot":
        raise UserError(f"algorithm.name={config.algorithm.name} classifies; use it with task.family=omniglot")
    if config.task.family == "omniglot" and (not config.eval.ways or any(w < 2 for w in config.eval.ways)):
        raise UserError(f"eval.ways must be a non-empty list of integers >= 2, got {config.eval.ways}")
    if config.task.family == "omniglot" and config.task.ways < 2:
        raise UserError(f"task.ways must be >= 2 for classification, got {config.task.ways}")
    if config.algorithm.learn_inner_lr and config.algorithm.name in ("reptile", "pretrain"):
        raise UserError(f"algorithm.learn_inner_lr=true needs a meta-gradient through the inner loop, which "
                        f"{config.algorithm.name} has not; use algorithm.name=metasgd")
    if config.train.compile and config.algorithm.name not in ("maml", "fomaml", "metasgd", "anil"):
        raise UserError(f"train.compile=true covers maml, fomaml, metasgd and anil, not {config.algorithm.name}; "
                        "set train.compile=false")
    if config.algorithm.name in GRADIENT_BASED[:-1] and config.algorithm.inner_steps == 0:
        raise UserError(f"algorithm.inner_steps must be >= 1 for {config.algorithm.name}")
    return config


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"a.b=1"`` → ``{"a": {"b": 1}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like key=value, e.g. train.iterations=5000")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` overrides to an existing config (e.g. a run's saved one) and validate."""
    for text in overrides:
        _apply(config, parse_override(text))
    return validate(config)


def build_config(recipe: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the recipe's values, then each override; validated."""
    config = Config()
    if recipe:
        _apply(config, recipe)
    return apply_overrides(config, overrides or [])


def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe {str(path)!r} not found; pass a YAML file such as configs/sinusoid/maml.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"recipe {str(path)!r} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {str(path)!r} must be a YAML mapping of sections (task, model, algorithm, train, eval)")
    return data


def config_from_file(path: str | Path, overrides: list[str] | None = None) -> Config:
    return build_config(load_recipe(path), overrides)
