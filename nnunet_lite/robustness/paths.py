"""Where ``robustness run`` writes its results; torch-free, for the report, ``compare``'s callers and ``figure``."""

from __future__ import annotations

from pathlib import Path

from ..comparison.nnunet_io import ComparisonError, require_env


def model_folder(dataset: str, trainer: str, plans_name: str, configuration: str) -> Path:
    """``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``; an error lists the folders that exist."""
    model = require_env("nnUNet_results") / dataset / f"{trainer}__{plans_name}__{configuration}"
    if not model.is_dir():
        found = sorted(p.name for p in model.parent.glob("*__*__*")) if model.parent.is_dir() else []
        raise ComparisonError(f"no model folder {model} (found: {found or 'none'})")
    return model


def result_folder(model: Path, set_name: str, fold: str, sub: str) -> Path:
    """One (fold, corrupted set) result of a model: predictions, ``summary.json`` and ``robustness.json``."""
    return model / "robustness" / set_name / f"fold_{fold}" / sub
