"""nnU-Net folders, trainer lookup and network construction shared by the comparison commands."""

from __future__ import annotations

import contextlib
import inspect
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..nnunet_env import NNUNET_PATH_VARS, make_trainers_discoverable

if TYPE_CHECKING:  # torch only for type hints: the robustness paths and report import this module without torch
    from torch import nn

DEFAULT_PLANS = "nnUNetPlans"


class ComparisonError(Exception):
    """A user-facing error of the comparison commands (missing folders, incompatible datasets, ...)."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silences nnU-Net's prints (trainer search paths, label manager notes) inside the block."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def find_trainer_class(name: str) -> type:
    """The trainer class called ``name``: nnU-Net's own, nnunet_lite's or one in an ``nnUNet_extTrainer`` folder."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    make_trainers_discoverable()
    try:
        with quiet():
            return recursive_find_trainer_class_by_name(name)
    except RuntimeError as e:
        raise ComparisonError(
            f"trainer {name!r} not found in nnU-Net, nnunet_lite or nnUNet_extTrainer="
            f"{os.environ.get('nnUNet_extTrainer', '')!r}"
        ) from e


def require_env(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise ComparisonError(f"{var} is not set (see nnU-Net's documentation/setting_up_paths.md)")
    return Path(value)


def dataset_name(dataset: str | int) -> str:
    """``DatasetXXX_Name`` for an ID or name, looked up in nnUNet_raw/preprocessed/results like nnU-Net does."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        folders = {var: os.environ.get(var) for var in NNUNET_PATH_VARS}
        raise ComparisonError(f"no dataset with ID {dataset} in {folders}") from e


def load_plans(dataset: str, plans_name: str = DEFAULT_PLANS) -> tuple[dict, dict, Path]:
    """``(plans, dataset_json, plans_file)`` from ``nnUNet_preprocessed/<dataset>``."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    folder = require_env("nnUNet_preprocessed") / dataset
    plans_file = folder / f"{plans_name}.json"
    if not plans_file.is_file():
        found = sorted(p.stem for p in folder.glob("*Plans*.json")) if folder.is_dir() else []
        raise ComparisonError(
            f"no plans file {plans_file} (plans found for {dataset}: {found or 'none'}; "
            f"run nnUNetv2_plan_and_preprocess first)"
        )
    return load_json(str(plans_file)), load_json(str(folder / "dataset.json")), plans_file


def build_network(
    trainer_class: type, plans: dict, configuration: str, dataset_json: dict
) -> tuple[nn.Module, tuple[int, ...]]:
    """The network ``trainer_class`` trains for these plans (no deep supervision) and its input shape (batch 1)."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with quiet():
        manager = PlansManager(plans)
        if configuration not in manager.available_configurations:
            raise ComparisonError(
                f"configuration {configuration!r} not in plans {manager.plans_name} "
                f"(available: {manager.available_configurations})"
            )
        config = manager.get_configuration(configuration)
        num_inputs = determine_num_input_channels(manager, config, dataset_json)
        num_outputs = manager.get_label_manager(dataset_json).num_segmentation_heads
        if "plans_manager" in inspect.signature(trainer_class.build_network_architecture).parameters:
            network = trainer_class.build_network_architecture(
                manager, config, num_inputs, num_outputs, enable_deep_supervision=False
            )
        else:  # pre-2.7 signature, as nnU-Net's predictor still accepts
            network = trainer_class.build_network_architecture(
                config.network_arch_class_name,
                config.network_arch_init_kwargs,
                config.network_arch_init_kwargs_req_import,
                num_inputs,
                num_outputs,
                enable_deep_supervision=False,
            )
    return network, (1, num_inputs, *[int(p) for p in config.patch_size])


def default_plans_for_shape(shape: Sequence[int], num_classes: int) -> tuple[dict, dict, str]:
    """Plans with nnU-Net's default U-Net topology for an explicit input shape ``(batch, channels, *spatial)``.

    Same rules as ``ExperimentPlanner`` (isotropic spacing): pooling until feature maps reach 4 voxels, 32 base
    features doubled per stage, capped at 512 (2D) or 320 (3D), two convolutions per stage. Returns
    ``(plans, dataset_json, configuration)``.
    """
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op, get_matching_instancenorm
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    spatial = [int(s) for s in shape[2:]]
    if len(spatial) not in (2, 3):
        raise ComparisonError(f"--shape needs 2 or 3 spatial axes after batch and channels, got {list(shape)}")
    spacing = [1.0] * len(spatial)
    _, pools, kernels, patch, _ = get_pool_and_conv_props(spacing, spatial, 4, 999999)
    if [int(p) for p in patch] != spatial:
        raise ComparisonError(
            f"nnU-Net's default U-Net cannot take {spatial} directly: its planner would use {[int(p) for p in patch]} "
            f"(each axis divisible by the total pooling); pass that as --shape"
        )
    conv_op = convert_dim_to_conv_op(len(spatial))
    norm = get_matching_instancenorm(conv_op)
    max_features = 512 if len(spatial) == 2 else 320
    n_stages = len(pools)
    configuration = "2d" if len(spatial) == 2 else "3d_fullres"
    arch_kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [min(max_features, 32 * 2**i) for i in range(n_stages)],
        "conv_op": f"{conv_op.__module__}.{conv_op.__name__}",
        "kernel_sizes": kernels,
        "strides": pools,
        "n_conv_per_stage": [2] * n_stages,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": f"{norm.__module__}.{norm.__name__}",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    plans = {
        "dataset_name": "explicit_shape",
        "plans_name": "default_topology",
        "label_manager": "LabelManager",
        "configurations": {
            configuration: {
                "data_identifier": "none",
                "patch_size": spatial,
                "spacing": spacing,
                "batch_size": int(shape[0]),
                "architecture": {
                    "network_class_name": f"{PlainConvUNet.__module__}.{PlainConvUNet.__name__}",
                    "arch_kwargs": arch_kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
            }
        },
    }
    dataset_json = {
        "channel_names": {str(i): f"channel{i}" for i in range(int(shape[1]))},
        "labels": {"background": 0, **{f"class{i}": i for i in range(1, num_classes)}},
    }
    return plans, dataset_json, configuration


@dataclass(frozen=True)
class ModelFolder:
    """One ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>`` folder."""

    trainer: str
    plans: str
    configuration: str
    path: Path

    @property
    def label(self) -> str:
        """How tables name the model: the trainer, plus the plans when they are not nnU-Net's default."""
        return self.trainer if self.plans == DEFAULT_PLANS else f"{self.trainer} ({self.plans})"

    @property
    def identifier(self) -> str:
        return f"{self.trainer}__{self.plans}"


def find_model_folders(dataset: str, configuration: str) -> list[ModelFolder]:
    """All model folders of ``dataset`` trained with ``configuration``, sorted by trainer and plans."""
    root = require_env("nnUNet_results") / dataset
    if not root.is_dir():
        raise ComparisonError(f"no results for {dataset}: {root} does not exist")
    out = []
    for path in sorted(root.iterdir()):
        parts = path.name.split("__")
        if path.is_dir() and len(parts) == 3 and parts[2] == configuration:
            out.append(ModelFolder(parts[0], parts[1], parts[2], path))
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table with padded columns (readable as plain text too)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def evaluate_folder(
    labels_folder: Path, predictions_folder: Path, dataset_json: dict, plans: dict, output_file: Path | None = None
) -> dict:
    """nnU-Net's ``compute_metrics_on_folder`` (``summary.json`` layout and means) on a prediction folder.

    Every reference needs a prediction and every prediction a reference (one clear error instead of nnU-Net's assert).
    It runs with ``num_processes=1``: nnU-Net still starts one spawned worker per call (about 2-9 s of interpreter
    start-up, measured on 2 busy cores), but a pool of nnU-Net's default size would compete with training jobs.
    """
    from batchgenerators.utilities.file_and_folder_operations import subfiles
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    ending = dataset_json["file_ending"]
    references = subfiles(str(labels_folder), suffix=ending, join=False)
    predictions = subfiles(str(predictions_folder), suffix=ending, join=False)
    if not references:
        raise ComparisonError(f"no reference segmentations (*{ending}) in {labels_folder}")
    missing = sorted(set(references) - set(predictions))
    if missing:
        raise ComparisonError(f"{predictions_folder} lacks predictions for {len(missing)} references: {missing[:5]}")
    extra = sorted(set(predictions) - set(references))
    if extra:
        raise ComparisonError(
            f"{predictions_folder} has {len(extra)} predictions without a reference in {labels_folder}: {extra[:5]}"
        )
    with quiet():
        reader = determine_reader_writer_from_dataset_json(dataset_json, str(Path(labels_folder) / references[0]))()
        labels = PlansManager(plans).get_label_manager(dataset_json)
    return compute_metrics_on_folder(
        str(labels_folder),
        str(predictions_folder),
        None if output_file is None else str(output_file),
        reader,
        ending,
        labels.foreground_regions if labels.has_regions else labels.foreground_labels,
        labels.ignore_label,
        num_processes=1,
        chill=False,
    )
