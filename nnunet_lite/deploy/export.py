"""``nnunet_lite export``: a trained nnU-Net model folder -> ``model.onnx`` + sidecar, verified with onnxruntime."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_folder
from ..checkpoints import CheckpointError, load_checkpoint
from ..nnunet_env import make_trainers_discoverable
from .constants import (
    DEFAULT_CALIBRATION_PATCHES,
    DEFAULT_MAX_DICE_DROP,
    DEFAULT_OPSET,
    DEFAULT_QUANTIZER,
    DEFAULT_TOLERANCE,
    QUANTIZERS,
)
from .onnx_runtime import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    create_session,
    export_onnx,
    max_abs_difference,
    require_onnx,
    resolve_exporter,
)
from .optimize import count_rewrites, optimize_for_cpu_inference
from .quantize import (
    CALIBRATION_FOREGROUND_SHARE,
    INT8_MODEL_FILE,
    accuracy_guard,
    calibration_patches,
    check_precision_options,
    cpu_instruction_summary,
    fold_split,
    head_node_names,
    quantize_int8,
    quantize_int8_nncf,
)
from .sidecar import DATASET_JSON_FILE, MODEL_FILE, PLANS_FILE, SIDECAR_FILE, build_sidecar, write_json


@dataclass
class ExportResult:
    """What :func:`export_trained_model` wrote and how the export was verified."""

    folder: Path
    sidecar: dict

    @property
    def max_abs_difference(self) -> float:
        return max(c["max_abs_difference"] for c in self.sidecar["verification"]["checks"])


def _log(message: str) -> None:
    print(f"[nnunet_lite export] {message}", flush=True)


def resolve_model_folder(dataset: str, configuration: str, trainer: str, plans: str) -> Path:
    """``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``; raises ExportError if it cannot exist."""
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    if not nnUNet_results.is_set():
        raise ExportError("nnUNet_results is not set: export the nnU-Net environment variables (setting_up_paths.md)")
    try:
        maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise ExportError(
            f"dataset {dataset!r} not found in nnUNet_raw, nnUNet_preprocessed or nnUNet_results: {e}"
        ) from e
    return Path(get_output_folder(dataset, trainer, plans, configuration))


def check_checkpoint(model_folder: Path, fold: str, checkpoint_name: str, train_hint: str) -> Path:
    """The checkpoint path; raises ExportError naming what is missing and the command that creates it."""
    if not model_folder.is_dir():
        raise ExportError(f"no trained model at {model_folder}. Train it first: {train_hint}")
    for name in (PLANS_FILE, DATASET_JSON_FILE):
        if not (model_folder / name).is_file():
            raise ExportError(
                f"{model_folder / name} is missing: {model_folder} is not a complete nnU-Net results folder"
            )
    checkpoint = model_folder / f"fold_{fold}" / checkpoint_name
    if not checkpoint.is_file():
        present = sorted(p.name for p in (model_folder / f"fold_{fold}").glob("checkpoint_*.pth"))
        detail = f" (present: {', '.join(present)}; choose one with -chk)" if present else ""
        raise ExportError(f"checkpoint {checkpoint} not found{detail}. Train fold {fold} first: {train_hint}")
    return checkpoint


def _center_patch(data: np.ndarray, patch_size: list[int]) -> np.ndarray:
    """A ``(C, *patch_size)`` crop around the centre of ``data`` (``(C, *spatial)``), zero-padded like nnU-Net's
    sliding window pads images smaller than the patch."""
    spatial = data.shape[1:]
    out = np.zeros((data.shape[0], *patch_size), dtype=np.float32)
    src, dst = [slice(None)], [slice(None)]
    for size, patch in zip(spatial, patch_size, strict=True):
        if size >= patch:
            start = (size - patch) // 2
            src.append(slice(start, start + patch))
            dst.append(slice(0, patch))
        else:
            start = (patch - size) // 2
            src.append(slice(0, size))
            dst.append(slice(start, start + size))
    out[tuple(dst)] = data[tuple(src)]
    return out


def real_input_patches(
    plans_manager,
    configuration_manager,
    dataset_json: dict,
    image_folder: Path | None,
    max_cases: int = 2,
) -> tuple[list[np.ndarray], str | None]:
    """Patch-sized inputs from real images run through nnU-Net's own preprocessing.

    Looks in ``image_folder`` if given, else in ``nnUNet_raw/<dataset>/imagesTr`` and ``imagesTs``. Returns the
    patches (``(C, *patch)``) and the folder they came from (None if no images were found).
    """
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    folders = [image_folder] if image_folder is not None else []
    if image_folder is None and nnUNet_raw.is_set():
        raw = Path(os.fspath(nnUNet_raw)) / plans_manager.dataset_name
        folders += [raw / "imagesTr", raw / "imagesTs"]
    patch_size = [int(p) for p in configuration_manager.patch_size]
    for folder in folders:
        if not folder.is_dir():
            continue
        cases = create_lists_from_splitted_dataset_folder(str(folder), dataset_json["file_ending"])
        if not cases:
            continue
        preprocessor = configuration_manager.preprocessor_class(verbose=False)
        patches = []
        for files in cases[:max_cases]:
            data, _, _ = preprocessor.run_case(files, None, plans_manager, configuration_manager, dataset_json)
            data = np.asarray(data, dtype=np.float32)
            if len(patch_size) == 2:  # 2D configurations see (C, 1, X, Y) volumes slice by slice
                data = data[:, data.shape[1] // 2]
            patches.append(_center_patch(data, patch_size))
        return patches, str(folder)
    return [], None


def export_trained_model(
    dataset: str,
    configuration: str,
    trainer: str,
    fold: int | str,
    output_folder: str | os.PathLike,
    *,
    plans: str = "nnUNetPlans",
    checkpoint_name: str = "checkpoint_final.pth",
    overwrite: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    optimize: bool = True,
    verify_images: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    precision: str = "fp32",
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP,
    force: bool = False,
    calibration_patches: int = DEFAULT_CALIBRATION_PATCHES,
    int8_fp32_head: bool = False,
    quantizer: str = DEFAULT_QUANTIZER,
    log: Callable[[str], None] | None = _log,
) -> ExportResult:
    """Exports a model trained with ``nnUNetv2_train`` to ONNX and verifies it with onnxruntime.

    The network is built and loaded exactly as ``nnUNetv2_predict`` does (``nnUNetPredictor``), exported with a
    dynamic batch and the plans' patch size, then compared with PyTorch on random inputs (batch 1 and 2) and on real
    images preprocessed by nnU-Net; the export fails if a logit differs by more than ``tolerance``. The folder is
    written to a temporary sibling first and renamed into place, so a failed export leaves nothing behind.

    Args:
        dataset: dataset ID or name (``-d``).
        configuration: nnU-Net configuration (``-c``), e.g. ``2d`` or ``3d_fullres``.
        trainer: trainer class name (``-tr``).
        fold: fold (``-f``): a number or ``all``.
        output_folder: the export folder to create.
        plans: plans identifier (``-p``).
        checkpoint_name: checkpoint file in ``fold_X`` (``-chk``).
        overwrite: replace an existing export folder.
        tolerance: largest accepted logit difference between onnxruntime and PyTorch, relative to the logit scale:
            every check needs ``max |ort - torch| <= tolerance * max(1, max |torch|)`` (random inputs can drive a
            trained network to logits in the hundreds, where float32 rounding alone exceeds 1e-3).
        optimize: export the network after the batch-size-independent CPU rewrites of
            :func:`~nnunet_lite.deploy.optimize.optimize_for_cpu_inference` (verified against the original).
        verify_images: folder of raw images (nnU-Net naming) for the real-input check; default: the dataset's
            ``imagesTr``/``imagesTs`` in ``nnUNet_raw``.
        opset: ONNX opset.
        exporter: see :func:`~nnunet_lite.deploy.onnx_runtime.export_onnx`.
        precision: ``fp32`` (default), ``int8`` (onnxruntime static quantization, :mod:`~nnunet_lite.deploy.quantize`,
            written as ``model_int8.onnx`` next to the fp32 ``model.onnx``) or ``bf16`` (OpenVINO's inference
            precision). Other than fp32, the accuracy guard runs on the fold's validation cases.
        max_dice_drop: largest accepted drop of the mean foreground Dice (fp32 minus ``precision``) in the guard.
        force: write the export even when the guard fails (recorded in the sidecar).
        calibration_patches: int8 calibration patches from the fold's preprocessed training cases.
        int8_fp32_head: keep the segmentation head (the last convolution) in fp32.
        quantizer: int8 quantizer, ``nncf`` (default; the ``nncf`` extra) or ``onnxruntime``.
        log: progress messages (None: silent).

    Returns:
        The export folder and its sidecar.
    """
    require_onnx()
    log = log or (lambda _: None)
    check_precision_options(precision, max_dice_drop, calibration_patches)
    if quantizer not in QUANTIZERS:
        raise ExportError(f"unknown quantizer {quantizer!r}: choose one of {', '.join(QUANTIZERS)}")
    if precision == "int8" and quantizer == "nncf" and importlib.util.find_spec("nncf") is None:
        # before the fp32 export and its checks, which take a while
        raise ExportError("--quantizer nncf needs NNCF: pip install 'nnunet-lite[nncf]' (or --quantizer onnxruntime)")
    if fold != "all" and not str(fold).isdigit():
        raise ExportError(f"fold must be a number or 'all', got {fold!r}")
    fold = str(fold)
    if precision != "fp32":
        fold_split(dataset_name_of(dataset), fold)  # refuses fold 'all' or a missing split before any work
    out = Path(output_folder).resolve()
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    make_trainers_discoverable()
    train_hint = f"nnUNetv2_train {dataset} {configuration} {fold} -tr {trainer} -p {plans}"
    model_folder = resolve_model_folder(dataset, configuration, trainer, plans)
    checkpoint_path = check_checkpoint(model_folder, fold, checkpoint_name, train_hint)
    try:  # safely first: nnU-Net's own loader below unpickles with weights_only=False
        checkpoint = load_checkpoint(checkpoint_path)
    except CheckpointError as e:
        raise ExportError(str(e)) from None

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False, verbose=False)
    log(f"loading {checkpoint_path}")
    try:
        predictor.initialize_from_trained_model_folder(
            str(model_folder), use_folds=(fold if fold == "all" else int(fold),), checkpoint_name=checkpoint_name
        )
    except RuntimeError as e:
        if "Could not find requested nnunet trainer" in str(e):
            raise ExportError(
                f"trainer {trainer!r} of {checkpoint_path} not found: a custom trainer's folder must be listed in "
                f"nnUNet_extTrainer (nnunet_lite's own trainers are added automatically)"
            ) from e
        raise
    plans_manager, configuration_manager = predictor.plans_manager, predictor.configuration_manager
    if configuration_manager.previous_stage_name is not None:
        raise ExportError(f"configuration {configuration} is a cascade stage; cascades are not supported by export")
    dataset_json = predictor.dataset_json
    network = predictor.network.eval()
    num_inputs = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    patch_size = [int(p) for p in configuration_manager.patch_size]
    example = torch.randn(1, num_inputs, *patch_size, generator=torch.Generator().manual_seed(0))
    to_export = optimize_for_cpu_inference(network, for_export=True) if optimize else network

    with atomic_folder(out, overwrite=overwrite) as tmp:
        log(f"exporting {type(network).__name__} for input (batch, {num_inputs}, {', '.join(map(str, patch_size))})")
        export_onnx(to_export, example, tmp / MODEL_FILE, opset=opset, exporter=exporter)
        session = create_session(tmp / MODEL_FILE)
        checks = []
        generator = torch.Generator().manual_seed(1)
        for batch in (1, 2):
            x = torch.randn(batch, num_inputs, *patch_size, generator=generator)
            diff, scale = max_abs_difference(session, network, x)
            checks.append(
                {"input": f"random normal, batch {batch}", "max_abs_difference": diff, "max_abs_logit": scale}
            )
        patches, source = real_input_patches(
            plans_manager, configuration_manager, dataset_json, Path(verify_images) if verify_images else None
        )
        for i, patch in enumerate(patches):
            diff, scale = max_abs_difference(session, network, torch.from_numpy(patch)[None])
            checks.append({"input": f"real image {i} of {source}", "max_abs_difference": diff, "max_abs_logit": scale})
        if not patches:
            log("no real images found (nnUNet_raw imagesTr/imagesTs or --verify-images): verified on random inputs")
        for c in checks:
            log(
                f"onnxruntime vs PyTorch, {c['input']}: max |logit difference| = {c['max_abs_difference']:.3g} "
                f"(logits up to {c['max_abs_logit']:.3g})"
            )
        worst = max(c["max_abs_difference"] for c in checks)
        worst_relative = max(c["max_abs_difference"] / max(1.0, c["max_abs_logit"]) for c in checks)
        if not np.isfinite(worst) or worst_relative > tolerance:
            raise ExportError(
                f"onnxruntime output differs from PyTorch by {worst:.3g} ({worst_relative:.3g} relative to the logit "
                f"scale) > tolerance {tolerance:g}; the export is not trustworthy (try --no-optimize, another --opset "
                f"or exporter, or report the network)"
            )
        sidecar = build_sidecar(
            plans_manager=plans_manager,
            configuration_manager=configuration_manager,
            configuration=configuration,
            dataset_json=dataset_json,
            trainer_name=predictor.trainer_name,
            fold=fold if fold == "all" else int(fold),
            checkpoint_name=checkpoint_name,
            checkpoint_epoch=checkpoint.get("current_epoch"),
            mirror_axes=predictor.allowed_mirroring_axes,
            num_input_channels=num_inputs,
            model_info={
                "input_name": INPUT_NAME,
                "output_name": OUTPUT_NAME,
                "dynamic_batch": True,
                "opset": opset,
                "exporter": resolve_exporter(exporter),
                "rewrites": count_rewrites(network, to_export),
                "network_class": f"{type(network).__module__}.{type(network).__qualname__}",
                # the constructor options of an nnunet_lite network (ablation variants differ only in these); with
                # the plans they rebuild the network exactly
                "network_options": getattr(network, "architecture_options", None),
            },
            verification={
                "tolerance": tolerance,
                "criterion": "max |onnxruntime - PyTorch| <= tolerance * max(1, max |PyTorch logit|), every check",
                "max_abs_difference": worst,
                "max_relative_difference": worst_relative,
                "checks": checks,
            },
        )
        shutil.copyfile(model_folder / PLANS_FILE, tmp / PLANS_FILE)
        shutil.copyfile(model_folder / DATASET_JSON_FILE, tmp / DATASET_JSON_FILE)
        write_json(tmp / SIDECAR_FILE, sidecar)
        if precision != "fp32":
            sidecar = _lower_precision(
                tmp,
                sidecar,
                precision,
                plans_manager=plans_manager,
                configuration_manager=configuration_manager,
                dataset_json=dataset_json,
                fold=fold,
                max_dice_drop=max_dice_drop,
                force=force,
                num_patches=calibration_patches,
                int8_fp32_head=int8_fp32_head,
                quantizer=quantizer,
                use_mirroring=predictor.allowed_mirroring_axes is not None,
                log=log,
            )
            write_json(tmp / SIDECAR_FILE, sidecar)
    files = [MODEL_FILE, SIDECAR_FILE, PLANS_FILE, DATASET_JSON_FILE]
    if precision == "int8":
        files.insert(1, INT8_MODEL_FILE)
    log(f"wrote {out} ({precision}): {', '.join(files)} (max fp32 difference {worst:.3g})")
    return ExportResult(out, sidecar)


def dataset_name_of(dataset: str) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise ExportError(f"dataset {dataset!r} not found: {e}") from e


def _lower_precision(
    folder: Path,
    sidecar: dict,
    precision: str,
    *,
    plans_manager,
    configuration_manager,
    dataset_json: dict,
    fold: str,
    max_dice_drop: float,
    force: bool,
    num_patches: int,
    int8_fp32_head: bool,
    quantizer: str,
    use_mirroring: bool,
    log: Callable[[str], None],
) -> dict:
    """Adds the int8 model or the bf16 setting to a verified fp32 export folder, runs the accuracy guard and returns
    the sidecar with its ``precision`` entry; raises ExportError when the guard fails (unless ``force``)."""
    from nnunetv2.paths import nnUNet_raw

    from .engines import load_export_engine

    train_cases, validation_cases = fold_split(plans_manager.dataset_name, fold)
    entry: dict = {"precision": precision, "fp32_file": MODEL_FILE, "cpu": cpu_instruction_summary()}
    if precision == "int8":
        fp32_nodes = head_node_names(folder / MODEL_FILE) if int8_fp32_head else []
        patches = calibration_patches(plans_manager, configuration_manager, dataset_json, train_cases, num_patches)
        log(
            f"int8: calibrating on {len(patches)} patches sampled by nnU-Net's data loader from {len(train_cases)} "
            f"training cases of fold {fold} ({quantizer})"
            + (f"; in fp32: {', '.join(fp32_nodes)}" if fp32_nodes else "")
        )
        int8_path = folder / INT8_MODEL_FILE
        quantize = quantize_int8_nncf if quantizer == "nncf" else quantize_int8
        entry["quantization"] = quantize(folder / MODEL_FILE, int8_path, patches, fp32_nodes=fp32_nodes)
        entry["calibration"] = {
            "patches": len(patches),
            "source": f"nnUNetDataLoader (no augmentation, {CALIBRATION_FOREGROUND_SHARE:.0%} foreground-oversampled) "
            f"over the {len(train_cases)} preprocessed training cases of fold {fold}",
            "patch_size": [int(p) for p in configuration_manager.patch_size],
            "seed": 0,
        }
        entry["file"] = INT8_MODEL_FILE
        entry["engine"] = "OpenVINO (default where installed) or onnxruntime"
        sidecar["model"]["file"] = INT8_MODEL_FILE
    else:
        entry["file"] = MODEL_FILE
        entry["engine"] = "OpenVINO, INFERENCE_PRECISION_HINT=bf16"
    sidecar["precision"] = entry
    write_json(folder / SIDECAR_FILE, sidecar)
    reference = load_export_engine(folder, precision="fp32")
    candidate = load_export_engine(folder)
    note = candidate.info.get("note")
    if note:
        log(note)
        entry["cpu_note"] = note
    if "compiled_precision" in candidate.info:
        entry["compiled_precision_here"] = candidate.info["compiled_precision"]
    log(f"accuracy guard: fp32 ({reference.description}) vs {precision} ({candidate.description})")
    raw = Path(os.fspath(nnUNet_raw)) / plans_manager.dataset_name if nnUNet_raw.is_set() else Path("nnUNet_raw unset")
    guard = accuracy_guard(
        reference,
        candidate,
        raw,
        validation_cases,
        precision=precision,
        max_dice_drop=max_dice_drop,
        use_mirroring=use_mirroring,
        log=log,
    )
    # the runtime the guard checked: predict's default for this export; another one gets a note when it runs
    guard["engine"] = candidate.info["engine"]
    entry["accuracy_guard"] = guard
    if not guard["passed"]:
        figure = (
            f"mean foreground Dice drops by {guard['mean_dice_drop']:.4f} at {precision} in {guard['engine']} "
            f"({guard['mean_dice_fp32']:.4f} -> {guard[f'mean_dice_{precision}']:.4f}) > --max-dice-drop "
            f"{max_dice_drop:g}"
        )
        if not force:
            # measured: the same int8 graph can pass in one runtime and fail in the other (docs/deployment.md)
            instead = ""
            if precision == "int8":
                other_quantizer = "onnxruntime" if quantizer == "nncf" else "nncf"
                instead = f"; try --quantizer {other_quantizer} or --precision bf16"
            raise ExportError(
                f"accuracy guard failed: {figure}; the export was not written{instead} (--force writes it anyway)"
            )
        log(f"WARNING: accuracy guard failed ({figure}); written anyway because of --force")
        guard["forced"] = True
    return sidecar
