"""Ablation trainers: the full network's trainer with different constructor options, generated from one table.

Each trainer module lists its network's ablations as ``{suffix: Ablation(...)}`` and assigns
``ablation_variants(base, table)`` into its namespace, so that every variant is a real module-level class (found by
nnU-Net's ``recursive_find_trainer_class_by_name`` through the shim, and picklable) named ``<base>_<suffix>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..trainer_base import nnUNetTrainerLite


class Ablation(NamedTuple):
    """One ablation: the constructor options it changes and what that means, in words."""

    arch_kwargs: Mapping[str, Any]
    description: str


def ablation_variants(base: type[nnUNetTrainerLite], ablations: Mapping[str, Ablation]) -> dict[str, type]:
    """``{f"{base.__name__}_{suffix}": subclass}`` with ``arch_kwargs`` = the base's updated by the ablation's.

    The subclasses change nothing else (recipe, epochs and loss stay the base's), record ``ablation = suffix`` and
    ``ablation_of = base``, and take the base's module as theirs: assign the result into that module's globals.
    """
    out = {}
    for suffix, ablation in ablations.items():
        name = f"{base.__name__}_{suffix}"
        out[name] = type(
            name,
            (base,),
            {
                "__module__": base.__module__,
                "__qualname__": name,
                "__doc__": f"{base.__name__} ablation ``_{suffix}``: {ablation.description}.",
                "arch_kwargs": {**base.arch_kwargs, **ablation.arch_kwargs},
                "ablation": suffix,
                "ablation_of": base,
            },
        )
    return out
