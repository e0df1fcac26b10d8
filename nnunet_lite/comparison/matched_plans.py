"""``nnunet_lite plan-matched``: an nnU-Net plans file whose U-Net is as small as a given network.

All widths of the configuration's ``features_per_stage`` are scaled by one factor (rounded to a multiple, with a
minimum), and the factor is searched so that the network nnU-Net builds from the new plans has the parameter count
closest to the target. Topology, patch size, batch size, normalisation and the preprocessed data
(``data_identifier``) stay the same, so the stock ``nnUNetv2_train DATASET CONFIG FOLD -p <new plans>`` trains it
without preprocessing again. This separates "a better architecture" from "a smaller network".
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..profiling import count_parameters
from .nnunet_io import ComparisonError, build_network, dataset_name, find_trainer_class, load_plans, require_env


def scale_features(features: Sequence[int], factor: float, multiple: int = 4, minimum: int = 4) -> list[int]:
    """``features`` times ``factor``, each rounded to a multiple of ``multiple`` and at least ``minimum``."""
    return [max(minimum, int(round(f * factor / multiple)) * multiple) for f in features]


def _plans_with_features(plans: dict, configuration: str, features: Sequence[int]) -> dict:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    resolved = copy.deepcopy(PlansManager(plans).get_configuration(configuration).configuration)
    resolved.pop("inherits_from", None)
    resolved["architecture"]["arch_kwargs"]["features_per_stage"] = [int(f) for f in features]
    new = copy.deepcopy(plans)
    new["configurations"] = {configuration: resolved}
    return new


def params_for_features(plans: dict, configuration: str, dataset_json: dict, features: Sequence[int]) -> int:
    """Parameter count of the default trainer's network for ``plans`` with these widths (built on the meta device)."""
    trainer = find_trainer_class("nnUNetTrainer")
    with torch.device("meta"):
        network, _ = build_network(
            trainer, _plans_with_features(plans, configuration, features), configuration, dataset_json
        )
    return count_parameters(network)


def match_features(
    plans: dict,
    configuration: str,
    dataset_json: dict,
    target_params: int,
    multiple: int = 4,
    minimum: int = 4,
) -> tuple[list[int], int, float]:
    """Bisection on the (log) width factor; returns ``(features, params, factor)`` closest to ``target_params``."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    base = PlansManager(plans).get_configuration(configuration).network_arch_init_kwargs["features_per_stage"]
    cache: dict[tuple[int, ...], int] = {}

    def count(factor: float) -> tuple[list[int], int]:
        features = scale_features(base, factor, multiple, minimum)
        key = tuple(features)
        if key not in cache:
            cache[key] = params_for_features(plans, configuration, dataset_json, features)
        return features, cache[key]

    low, high = 1e-3, 8.0
    if count(low)[1] >= target_params:
        high = low
    for _ in range(40):
        if high <= low:
            break
        middle = (low * high) ** 0.5
        if count(middle)[1] <= target_params:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda f: abs(count(f)[1] - target_params))
    features, params = count(best)
    return features, params, best


def default_plans_name(source_plans: str, target_trainer: str | None, features: int | None) -> str:
    if features is not None:
        return f"{source_plans}_features{features}"
    arch = target_trainer.removeprefix("nnUNetTrainer").strip("_").lower() or "nnunet"
    return f"{source_plans}_matched_{arch}"


def plan_matched(
    dataset: str | int,
    configuration: str = "2d",
    match: str | None = None,
    features: int | None = None,
    source_plans: str = "nnUNetPlans",
    plans_name: str | None = None,
    multiple: int = 4,
    minimum: int = 4,
    overwrite: bool = False,
) -> dict:
    """Writes ``nnUNet_preprocessed/<dataset>/<plans_name>.json`` with reduced U-Net widths.

    Args:
        dataset: dataset ID or name (planned and preprocessed with ``source_plans``).
        configuration: configuration to copy; the new plans contain only this one (resolved, no inheritance).
        match: trainer whose network's parameter count to match (built for the same plans configuration).
        features: instead of ``match``: the first stage's width; all widths scale by ``features / first width``.
        source_plans: plans to start from.
        plans_name: name of the new plans (default ``<source>_matched_<arch>`` or ``<source>_features<N>``).
        multiple: widths are rounded to multiples of this; minimum: smallest width.
        overwrite: replace an existing plans file of that name.

    Returns:
        A summary dict (file, features, parameter counts, relative difference).
    """
    if (match is None) == (features is None):
        raise ComparisonError("give exactly one of --match TRAINER or --features N")
    name = dataset_name(dataset)
    plans, dataset_json, _ = load_plans(name, source_plans)
    if configuration not in plans["configurations"]:
        raise ComparisonError(
            f"configuration {configuration!r} not in {source_plans} ({list(plans['configurations'])})"
        )
    if "previous_stage" in plans["configurations"][configuration]:
        raise ComparisonError(f"{configuration} is a cascade stage; plan-matched supports stand-alone configurations")
    base_features = plans_base_features(plans, configuration)
    info: dict = {"dataset": name, "configuration": configuration, "source_plans": source_plans}
    info.update(
        original_features=base_features,
        original_params=params_for_features(plans, configuration, dataset_json, base_features),
    )
    if match is not None:
        target_network, _ = build_network(find_trainer_class(match), plans, configuration, dataset_json)
        target = count_parameters(target_network)
        new_features, params, factor = match_features(plans, configuration, dataset_json, target, multiple, minimum)
        info.update(target_trainer=match, target_params=target)
    else:
        factor = features / base_features[0]
        new_features = scale_features(base_features, factor, multiple, minimum)
        params = params_for_features(plans, configuration, dataset_json, new_features)
    name_out = plans_name or default_plans_name(source_plans, match, features)
    new = _plans_with_features(plans, configuration, new_features)
    new["plans_name"] = name_out
    info.update(plans_name=name_out, features=new_features, params=params, factor=factor)
    if match is not None:
        info["relative_difference"] = (params - info["target_params"]) / info["target_params"]
    new["nnunet_lite_matched"] = {k: v for k, v in info.items() if k not in ("dataset",)}
    out = require_env("nnUNet_preprocessed") / name / f"{name_out}.json"
    if out.exists() and not overwrite:
        raise ComparisonError(f"{out} exists; pass --overwrite to replace it")
    atomic_write_text(out, json.dumps(new, indent=4, sort_keys=False) + "\n")
    info["plans_file"] = str(out)
    return info


def plans_base_features(plans: dict, configuration: str) -> list[int]:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    return list(manager.get_configuration(configuration).network_arch_init_kwargs["features_per_stage"])


def describe(info: dict) -> str:
    lines = [f"wrote {info['plans_file']}"]
    lines.append(
        f"  {info['source_plans']} {info['configuration']}: features {info['original_features']}, "
        f"{info['original_params']:,} parameters"
    )
    if "target_trainer" in info:
        lines.append(f"  target {info['target_trainer']}: {info['target_params']:,} parameters")
    diff = f" ({info['relative_difference']:+.1%} vs target)" if "relative_difference" in info else ""
    lines.append(f"  {info['plans_name']}: features {info['features']}, {info['params']:,} parameters{diff}")
    dataset_id = info["dataset"][7:10]
    lines.append(
        f"train it with: nnUNetv2_train {int(dataset_id)} {info['configuration']} FOLD -p {info['plans_name']}"
    )
    return "\n".join(lines)


def verify(plans_file: Path, configuration: str, trainer: str = "nnUNetTrainer") -> int:
    """Parameter count of the network ``trainer`` builds from a written plans file (real tensors)."""
    plans = json.loads(Path(plans_file).read_text())
    dataset_json = json.loads((Path(plans_file).parent / "dataset.json").read_text())
    network, _ = build_network(find_trainer_class(trainer), plans, configuration, dataset_json)
    return count_parameters(network)
