"""Converters from datasets as their authors distribute them to nnU-Net v2 raw datasets.

Every dataset is one module holding its :class:`DatasetSpec` (``SPEC``: name, default ID, layout, licence, splits and
its ``convert`` function) and the code that finds its cases; the engine (``_engine``) does the rest. ``DATASETS`` maps
each ``nnunet_lite convert NAME`` to its spec; a spec is called like a function:
``DATASETS["busi"](source, 503, split="cmunext")``, as is each module's ``convert_<name>``.

Default IDs live in the free range 5xx: 501-509 for the training datasets, 511-519 for the zero-shot targets, 520-529
reserved for the 3D converters (BTCV, KiTS23).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import btcv, bus_b, busi, cvc_clinicdb, isic, kits23, kvasir, ph2, tn_scui
from ._engine import ConvertOptions, DatasetSpec

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        isic.SPEC_2017,
        isic.SPEC_2018,
        busi.SPEC,
        kvasir.SPEC,
        tn_scui.SPEC,
        ph2.SPEC,
        cvc_clinicdb.SPEC,
        bus_b.SPEC,
        btcv.SPEC,
        kits23.SPEC,
    )
}
DEFAULT_IDS: dict[str, int] = {name: spec.default_id for name, spec in DATASETS.items()}


def dataset_folder(name: str, dataset_id: int | None = None) -> str:
    """nnU-Net folder name of a dataset, e.g. ``dataset_folder("busi") == "Dataset503_BUSI"``."""
    return DATASETS[name].folder(dataset_id)


def get_converter(name: str) -> Callable[..., Path]:
    """The converter of dataset ``name``: ``get_converter(name)(source, dataset_id, **options)``."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


__all__ = ["DATASETS", "DEFAULT_IDS", "ConvertOptions", "DatasetSpec", "dataset_folder", "get_converter"]
