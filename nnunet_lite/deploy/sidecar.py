"""The export folder's JSON sidecar: everything needed to use ``model.onnx`` outside nnU-Net.

An export folder holds ``model.onnx``, the sidecar ``model.json`` (summary, below), and verbatim copies of the
training run's ``plans.json`` and ``dataset.json`` (what ``nnunet_lite predict`` reads to reproduce nnU-Net's
preprocessing, sliding window and export exactly).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
SIDECAR_FILE = "model.json"
PLANS_FILE = "plans.json"
DATASET_JSON_FILE = "dataset.json"
SIDECAR_FORMAT = "nnunet_lite.onnx_export"
SIDECAR_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model", "source", "preprocessing", "inference", "labels")

_NORMALIZATION_FORMULAS = {
    "ZScoreNormalization": "per image: (x - mean(x)) / max(std(x), 1e-8)",
    "CTNormalization": "clip(x, clip_lower, clip_upper), then (x - mean) / max(std, 1e-8) with the dataset's "
    "foreground statistics",
    "NoNormalization": "x (cast to float32)",
    "RescaleTo01Normalization": "per image: (x - min(x)) / max(max(x - min(x)), 1e-8)",
    "RGBTo01Normalization": "x / 255 (values must lie in 0..255)",
}


class SidecarError(ValueError):
    """The export folder or its sidecar is missing or malformed."""


def normalization_entries(plans_manager, configuration_manager, dataset_json: dict) -> list[dict]:
    """One entry per input channel: name, nnU-Net scheme, whether it is computed inside the nonzero mask, its
    parameters (dataset statistics for CT normalisation) and the formula in words."""
    properties = plans_manager.foreground_intensity_properties_per_channel or {}
    entries = []
    channels = dataset_json["channel_names"]
    for i, key in enumerate(sorted(channels, key=int)):
        scheme = configuration_manager.normalization_schemes[i]
        entry: dict[str, Any] = {
            "channel": int(key),
            "name": channels[key],
            "scheme": scheme,
            "use_mask_for_norm": bool(configuration_manager.use_mask_for_norm[i]),
            "formula": _NORMALIZATION_FORMULAS.get(scheme, "custom nnU-Net normalization class"),
        }
        stats = properties.get(str(i), properties.get(i))
        if scheme == "CTNormalization" and stats:
            entry["parameters"] = {
                "mean": stats["mean"],
                "std": stats["std"],
                "clip_lower": stats["percentile_00_5"],
                "clip_upper": stats["percentile_99_5"],
            }
        else:
            entry["parameters"] = {}
        if entry["use_mask_for_norm"]:
            entry["formula"] += "; statistics and normalisation only inside the nonzero mask (outside: 0)"
        entries.append(entry)
    return entries


def label_entries(plans_manager, dataset_json: dict) -> dict:
    """Labels or regions, the inference nonlinearity and what each output channel of the network means."""
    label_manager = plans_manager.get_label_manager(dataset_json)
    if label_manager.has_regions:
        heads = [
            {"channel": i, "region": list(r) if isinstance(r, (list, tuple)) else [r]}
            for i, r in enumerate(label_manager.foreground_regions)
        ]
    else:
        heads = [{"channel": i, "label": int(v)} for i, v in enumerate(label_manager.all_labels)]
    return {
        "labels": dataset_json["labels"],
        "regions_class_order": dataset_json.get("regions_class_order"),
        "has_regions": label_manager.has_regions,
        "ignore_label": label_manager.ignore_label,
        "num_segmentation_heads": label_manager.num_segmentation_heads,
        "inference_nonlin": "sigmoid" if label_manager.has_regions else "softmax",
        "output_channels": heads,
        "to_segmentation": (
            "sigmoid > 0.5 per region, then regions painted in regions_class_order"
            if label_manager.has_regions
            else "argmax over the output channels (channel i = label i)"
        ),
    }


def build_sidecar(
    *,
    plans_manager,
    configuration_manager,
    configuration: str,
    dataset_json: dict,
    trainer_name: str,
    fold: int | str,
    checkpoint_name: str,
    checkpoint_epoch: int | None,
    mirror_axes: tuple[int, ...] | None,
    num_input_channels: int,
    model_info: dict,
    verification: dict,
) -> dict:
    """The sidecar dictionary written next to ``model.onnx`` (see :func:`write_sidecar`)."""
    import nnunetv2
    import torch

    from .. import __version__

    config = configuration_manager.configuration
    patch_size = [int(p) for p in configuration_manager.patch_size]
    try:
        from importlib.metadata import version

        nnunet_version = version("nnunetv2")
    except Exception:  # best-effort provenance only
        nnunet_version = getattr(nnunetv2, "__version__", "unknown")
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "model": {
            "file": MODEL_FILE,
            "input_name": model_info["input_name"],
            "output_name": model_info["output_name"],
            "input_shape": ["batch", num_input_channels, *patch_size],
            "output_shape": [
                "batch",
                plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
                *patch_size,
            ],
            "dynamic_batch": model_info["dynamic_batch"],
            "opset": model_info["opset"],
            "exporter": model_info["exporter"],
            "rewrites": model_info["rewrites"],
            "outputs_are": "logits (no softmax/sigmoid applied)",
        },
        "source": {
            "dataset_name": plans_manager.dataset_name,
            "trainer_name": trainer_name,
            "plans_name": plans_manager.plans_name,
            "configuration": configuration,
            "fold": fold,
            "checkpoint": checkpoint_name,
            "checkpoint_epoch": checkpoint_epoch,
            "network_class": model_info.get("network_class"),
            "network_options": model_info.get("network_options"),
            "nnunet_lite_version": __version__,
            "nnunetv2_version": nnunet_version,
            "torch_version": torch.__version__,
        },
        "preprocessing": {
            "file_ending": dataset_json["file_ending"],
            "image_reader_writer": plans_manager.plans.get("image_reader_writer"),
            "channel_names": dataset_json["channel_names"],
            "normalization": normalization_entries(plans_manager, configuration_manager, dataset_json),
            "spacing": [float(s) for s in configuration_manager.spacing],
            "transpose_forward": list(plans_manager.transpose_forward),
            "transpose_backward": list(plans_manager.transpose_backward),
            "crop_to_nonzero": True,
            "resampling_data": {
                "function": config.get("resampling_fn_data"),
                "kwargs": config.get("resampling_fn_data_kwargs"),
            },
            "resampling_probabilities": {
                "function": config.get("resampling_fn_probabilities"),
                "kwargs": config.get("resampling_fn_probabilities_kwargs"),
            },
            "resampling_seg": {
                "function": config.get("resampling_fn_seg"),
                "kwargs": config.get("resampling_fn_seg_kwargs"),
            },
        },
        "inference": {
            "patch_size": patch_size,
            "is_2d_on_slices": len(patch_size) == 2,
            "tile_step_size": 0.5,
            "gaussian_weighting": {"sigma_scale": 1.0 / 8, "value_scaling_factor": 10},
            "pad_mode": "constant 0 up to the patch size",
            "allowed_mirroring_axes": list(mirror_axes) if mirror_axes is not None else None,
        },
        "labels": label_entries(plans_manager, dataset_json),
        "verification": verification,
    }


def write_json(path: str | os.PathLike, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_sidecar(folder: str | os.PathLike) -> dict:
    """Reads and validates ``folder/model.json``; raises :class:`SidecarError` with what is wrong."""
    path = Path(folder) / SIDECAR_FILE
    if not path.is_file():
        raise SidecarError(
            f"{path} not found: {folder} is not an nnunet_lite export folder (create one with nnunet_lite export)"
        )
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SidecarError(f"{path} is not valid JSON: {e}") from e
    missing = [k for k in REQUIRED_KEYS if k not in sidecar]
    if missing or sidecar.get("format") != SIDECAR_FORMAT:
        raise SidecarError(f"{path} is not an nnunet_lite export sidecar (missing {missing or 'format'})")
    if sidecar["format_version"] > SIDECAR_VERSION:
        raise SidecarError(
            f"{path} has format version {sidecar['format_version']}; this nnunet_lite reads up to "
            f"{SIDECAR_VERSION}: upgrade nnunet_lite"
        )
    return sidecar


@dataclass
class ExportedModel:
    """An export folder, loaded: the sidecar, nnU-Net's plans and dataset.json, and the managers built from them."""

    folder: Path
    sidecar: dict
    plans: dict
    dataset_json: dict

    @property
    def model_path(self) -> Path:
        return self.folder / self.sidecar["model"]["file"]

    @property
    def configuration(self) -> str:
        return self.sidecar["source"]["configuration"]

    @property
    def trainer_name(self) -> str:
        return self.sidecar["source"]["trainer_name"]

    @property
    def mirror_axes(self) -> tuple[int, ...] | None:
        axes = self.sidecar["inference"]["allowed_mirroring_axes"]
        return tuple(axes) if axes is not None else None

    def plans_manager(self):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        return PlansManager(self.plans)

    def configuration_manager(self):
        return self.plans_manager().get_configuration(self.configuration)


def load_export(folder: str | os.PathLike) -> ExportedModel:
    """Reads an export folder (sidecar, plans.json, dataset.json) and checks that the model file is there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SidecarError(f"export folder {folder} does not exist (create it with nnunet_lite export ... -o {folder})")
    sidecar = read_sidecar(folder)
    files = {}
    for name in (PLANS_FILE, DATASET_JSON_FILE, sidecar["model"]["file"]):
        if not (folder / name).is_file():
            raise SidecarError(f"{folder / name} is missing: the export folder is incomplete; export it again")
        files[name] = folder / name
    plans = json.loads(files[PLANS_FILE].read_text())
    dataset_json = json.loads(files[DATASET_JSON_FILE].read_text())
    return ExportedModel(folder, sidecar, plans, dataset_json)
