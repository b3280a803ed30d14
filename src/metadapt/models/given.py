"""The record a run keeps of a model given from Python (``metadapt.train(…, model=net)``)."""
from __future__ import annotations

from dataclasses import dataclass

from metadapt.errors import UserError
from metadapt.options import option
from metadapt.registry import register


@dataclass
class GivenModelOptions:
    source: str = option("", help="the class of the model given from Python (recorded, not rebuilt)")


@register("model", "given")
class GivenModel:
    """Stands in a run's recipe for a model object given from Python: its class is recorded, but
    its weights' shapes came from the object, so it must be given again to load the run."""

    Options = GivenModelOptions

    @classmethod
    def from_options(cls, options, input_shape, outputs):
        raise UserError("this run was trained with a model given from Python "
                        f"({options.source or 'an object'}), which metadapt cannot rebuild from the recipe; "
                        "load it with metadapt.load(RUN, model=...), "
                        "or name the model's class in the recipe (model.name: pkg.module:Class)")
