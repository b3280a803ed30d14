"""The recipe checks every meta-reinforcement-learning algorithm makes."""
from __future__ import annotations

from metadapt.errors import UserError
from metadapt.registry import is_import_path


def check_rl_recipe(config, policy: str | tuple[str, ...], example_family: str) -> None:
    """Refuse, in one line, a recipe whose task family is not an environment family or whose model is
    not ``policy`` (one of them, or a user's class by import path)."""
    name = config.algorithm.name
    if not getattr(config.task.entry.target, "reinforcement", False):
        raise UserError(f"algorithm.name={name} learns from environments; use it with an environment family "
                        f"such as task.family={example_family}")
    allowed = (policy,) if isinstance(policy, str) else policy
    if config.model.name not in allowed and not is_import_path(config.model.name):
        raise UserError(f"algorithm.name={name} needs model.name={' or '.join(allowed)} (or your own policy "
                        f"as pkg.module:Class), not {config.model.name}")


def continuous_probe(parts, name: str):
    """One task of the recipe's family, refused in one line if its actions are discrete."""
    probe = parts.family.probe()
    if probe.discrete:
        raise UserError(f"algorithm.name={name} acts with continuous actions; "
                        f"task.family={parts.config.task.family} has discrete ones (use rl2)")
    return probe
