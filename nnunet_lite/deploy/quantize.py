"""Lower-precision exports: int8 post-training quantization, bf16 inference, and the accuracy guard.

- **int8**: post-training static quantization (QDQ format) of the exported fp32 ``model.onnx`` by NNCF
  (:func:`quantize_int8_nncf`, the default: min/max statistics and fast bias correction) or onnxruntime
  (:func:`quantize_int8`, ``--quantizer onnxruntime``), calibrated on :data:`DEFAULT_CALIBRATION_PATCHES` patches
  that nnU-Net's own training data loader (``nnUNetDataLoader``, no augmentation, its foreground oversampling of
  33 %) samples from the fold's preprocessed *training* cases. The result runs in onnxruntime (default) and
  OpenVINO (which reads QDQ models as int8). NNCF is the default by measurement (docs/deployment.md): onnxruntime's
  quantizer broke a trained AULUNet (validation Dice 0.381 -> 0.013) where NNCF's kept it (0.399).
- **bf16**: the fp32 ``model.onnx`` compiled by OpenVINO with ``INFERENCE_PRECISION_HINT=bf16``. CPUs without bf16
  instructions (AVX512_BF16 or AMX-BF16) run it in f32; :func:`bf16_fallback_message` says so in one line.
- **Accuracy guard** (:func:`accuracy_guard`): the fold's validation cases are segmented with the full pipeline
  (:func:`~nnunet_lite.deploy.fast_predict.predict_folder_fast`: nnU-Net's preprocessing, sliding window, mirroring)
  at fp32 and at the chosen precision; mean foreground Dice against the reference labels, the per-case difference and
  the share of differing voxels are recorded, and the export is refused when the mean Dice drops by more than
  ``max_dice_drop``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .constants import DEFAULT_MAX_DICE_DROP, PRECISIONS
from .onnx_runtime import INPUT_NAME, ExportError

INT8_MODEL_FILE = "model_int8.onnx"
# nnU-Net's training default (nnUNetTrainer.oversample_foreground_percent): a third of the patches hold foreground
CALIBRATION_FOREGROUND_SHARE = 0.33
# Every node is quantized by default: on the test suite's trained MedLiteNet (docs/deployment.md, "Precision"),
# keeping the segmentation head (last Conv + upsampling) in fp32 changed nothing that matters (mean validation Dice
# drop -0.0017 all-int8 vs -0.0015 head in fp32; 0.43 % vs 0.44 % differing pixels), so it is an option
# (--int8-fp32-head) for networks where the guard shows a loss, not the default.
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision_options(precision: str, max_dice_drop: float, calibration_patches: int) -> None:
    """Raises :class:`ExportError` (one line) for a precision or guard option that cannot be right."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if not np.isfinite(max_dice_drop) or max_dice_drop < 0:
        raise ExportError(
            f"--max-dice-drop must be a Dice difference >= 0 (e.g. {DEFAULT_MAX_DICE_DROP}), got {max_dice_drop:g}"
        )
    if calibration_patches < 1:
        raise ExportError(f"--calibration-patches must be at least 1, got {calibration_patches}")


# --- the CPU --------------------------------------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_instruction_summary() -> dict:
    """Which low-precision instructions this CPU has: ``{"int8_dot_product": [...], "bf16": [...], "flags": ...}``."""
    flags = cpu_flags()
    return {
        "avx2": "avx2" in flags,
        "int8_dot_product": [f for f in _VNNI_FLAGS if f in flags],
        "bf16": [f for f in _BF16_FLAGS if f in flags],
    }


def openvino_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. FP32, INT8, BF16); [] without OpenVINO."""
    try:
        import openvino
    except ImportError:
        return []
    return [str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_fallback_message() -> str | None:
    """One line when this CPU cannot run bf16 (what is missing, what runs instead); None when it can."""
    capabilities = openvino_capabilities()
    if "BF16" in capabilities:
        return None
    return (
        f"bf16: this CPU lacks AVX512_BF16 and AMX-BF16 (OpenVINO capabilities: {', '.join(capabilities) or 'none'}); "
        f"OpenVINO runs the model in f32 instead (same output as fp32, no speed-up)"
    )


def int8_note() -> str | None:
    """One line when int8 runs without int8 dot-product instructions (slower kernels); None with VNNI/AMX."""
    summary = cpu_instruction_summary()
    if summary["int8_dot_product"]:
        return None
    base = "AVX2" if summary["avx2"] else "plain SSE"
    return f"int8: this CPU lacks VNNI (AVX512_VNNI/AVX_VNNI) and AMX-INT8; int8 runs on {base} kernels (slower)"


# --- calibration ----------------------------------------------------------------------------------------------------


def fold_split(dataset_name: str, fold: str) -> tuple[list[str], list[str]]:
    """``(training cases, validation cases)`` of ``fold`` from ``nnUNet_preprocessed/<dataset>/splits_final.json``."""
    import json

    from nnunetv2.paths import nnUNet_preprocessed

    if fold == "all":
        raise ExportError(
            "fold 'all' has no validation cases for the accuracy guard: export a numbered fold (-f 0..4) for int8/bf16"
        )
    if not nnUNet_preprocessed.is_set():
        raise ExportError("nnUNet_preprocessed is not set: int8/bf16 exports need the fold's preprocessed cases")
    path = Path(os.fspath(nnUNet_preprocessed)) / dataset_name / "splits_final.json"
    if not path.is_file():
        raise ExportError(f"{path} not found: int8/bf16 exports need the split the model was trained on")
    splits = json.loads(path.read_text())
    if int(fold) >= len(splits):
        raise ExportError(f"{path} has {len(splits)} folds, not fold {fold}")
    return list(splits[int(fold)]["train"]), list(splits[int(fold)]["val"])


def calibration_patches(
    plans_manager, configuration_manager, dataset_json: dict, cases: list[str], num_patches: int, seed: int = 0
) -> np.ndarray:
    """``num_patches`` input patches ``(N, C, *patch)`` sampled from the preprocessed ``cases`` by nnU-Net's training
    data loader without augmentation (random crops, a third forced onto foreground, padded as in training)."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = Path(os.fspath(nnUNet_preprocessed)) / plans_manager.dataset_name / configuration_manager.data_identifier
    if not folder.is_dir():
        raise ExportError(f"{folder} not found: run nnUNetv2_preprocess for this configuration (calibration data)")
    dataset = infer_dataset_class(str(folder))(str(folder), list(cases))
    patch = [int(p) for p in configuration_manager.patch_size]
    loader = nnUNetDataLoader(
        dataset,
        num_patches,
        patch,
        patch,
        plans_manager.get_label_manager(dataset_json),
        oversample_foreground_percent=CALIBRATION_FOREGROUND_SHARE,
    )
    state = np.random.get_state()
    np.random.seed(seed)  # the loader draws cases and crops from numpy's global generator
    try:
        batch = loader.generate_train_batch()
    finally:
        np.random.set_state(state)
    return batch["data"].numpy().astype(np.float32)


def head_node_names(model_path: str | os.PathLike) -> list[str]:
    """The segmentation head: the last convolution before the model's output and the nodes between them (e.g. the
    final upsampling), found by walking back from the output along first inputs."""
    import onnx

    model = onnx.load(os.fspath(model_path))
    producer = {out: node for node in model.graph.node for out in node.output}
    names, tensor = [], model.graph.output[0].name
    for _ in range(8):  # a head is a few nodes deep at most
        node = producer.get(tensor)
        if node is None:
            break
        names.append(node.name)
        if node.op_type == "Conv":
            return names
        tensor = node.input[0]
    return []


def quantize_int8(
    fp32_model: str | os.PathLike,
    int8_model: str | os.PathLike,
    patches: np.ndarray,
    *,
    fp32_nodes: list[str] | None = None,
) -> dict:
    """onnxruntime static quantization of ``fp32_model`` (QDQ, per-channel int8 weights, uint8 activations, min/max
    calibration on ``patches``); ``fp32_nodes`` stay in fp32. Returns the settings for the sidecar."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Patches(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(patches)

        def get_next(self):
            patch = next(self._it, None)
            return None if patch is None else {INPUT_NAME: patch[None]}

    root = logging.getLogger()
    level = root.level
    # onnxruntime's quantizer logs one warning per normalisation weight it leaves per-tensor: noise for users
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            # shape inference and graph clean-up that quantization expects (onnxruntime's recommended pre-processing)
            quant_pre_process(os.fspath(fp32_model), os.fspath(prepared), skip_symbolic_shape=True)
            quantize_static(
                os.fspath(prepared),
                os.fspath(int8_model),
                Patches(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=list(fp32_nodes or []),
            )
    finally:
        root.setLevel(level)
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weights": "int8, per output channel",
        "activations": "uint8, per tensor",
        "calibration_method": "MinMax",
        "fp32_nodes": list(fp32_nodes or []),
    }


def quantize_int8_nncf(
    fp32_model: str | os.PathLike,
    int8_model: str | os.PathLike,
    patches: np.ndarray,
    *,
    fp32_nodes: list[str] | None = None,
) -> dict:
    """NNCF post-training quantization (``nncf.quantize``, ONNX backend: QDQ, its default preset and fast bias
    correction) of ``fp32_model``, calibrated on ``patches``; ``fp32_nodes`` stay in fp32. Returns the settings for
    the sidecar. Needs the ``nncf`` extra."""
    try:
        import nncf
    except ImportError:
        raise ExportError(
            "--quantizer nncf needs NNCF: pip install 'nnunet-lite[nncf]' (or use --quantizer onnxruntime)"
        ) from None
    import onnx

    loggers = [logging.getLogger(), logging.getLogger("nncf")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # NNCF logs every node it leaves alone
        logger.setLevel(logging.ERROR)
    try:
        model = onnx.load(os.fspath(fp32_model))
        dataset = nncf.Dataset(list(patches), lambda patch: {INPUT_NAME: patch[None]})
        scope = nncf.IgnoredScope(names=list(fp32_nodes)) if fp32_nodes else None
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bars would interleave with the export's log
            quantized = nncf.quantize(model, dataset, subset_size=len(patches), ignored_scope=scope)
        onnx.save(quantized, os.fspath(int8_model))
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return {
        "tool": f"nncf.quantize {nncf.__version__} (ONNX backend)",
        "format": "QDQ",
        "weights": "int8, per output channel (symmetric)",
        "activations": "int8, per tensor (NNCF's performance preset)",
        "calibration_method": "NNCF min/max statistics + fast bias correction",
        "fp32_nodes": list(fp32_nodes or []),
    }


# --- the accuracy guard ---------------------------------------------------------------------------------------------


def _dice_per_case(prediction: np.ndarray, reference: np.ndarray, labels: list[int]) -> float:
    """Mean Dice over the foreground labels; a label absent from both counts as 1 (nothing to find, nothing found)."""
    values = []
    for label in labels:
        p, r = prediction == label, reference == label
        denominator = int(p.sum()) + int(r.sum())
        values.append(1.0 if denominator == 0 else 2.0 * float((p & r).sum()) / denominator)
    return float(np.mean(values))


def accuracy_guard(
    reference_engine,
    candidate_engine,
    raw_folder: Path,
    validation_cases: list[str],
    *,
    precision: str,
    max_dice_drop: float,
    use_mirroring: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Segments ``validation_cases`` (raw ``imagesTr``/``labelsTr`` of ``raw_folder``) with both engines through
    :func:`~nnunet_lite.deploy.fast_predict.predict_folder_fast` and compares them with the reference labels.

    Returns the sidecar's ``accuracy_guard`` entry; ``passed`` is False when the mean foreground Dice at ``precision``
    is more than ``max_dice_drop`` below fp32's.
    """
    from .fast_predict import list_cases, predict_folder_fast

    dataset_json = reference_engine.dataset_json
    file_ending = dataset_json["file_ending"]
    label_manager = reference_engine.label_manager
    if label_manager.has_regions:
        raise ExportError("the accuracy guard compares label maps; region-based datasets are not supported yet")
    labels = [int(v) for v in label_manager.foreground_labels]
    images = list_cases(raw_folder / "imagesTr", file_ending)
    labels_folder = raw_folder / "labelsTr"
    missing = [c for c in validation_cases if c not in images or not (labels_folder / f"{c}{file_ending}").is_file()]
    if missing:
        raise ExportError(
            f"validation case(s) {', '.join(missing[:3])} not found in {raw_folder}/imagesTr and labelsTr: the "
            f"accuracy guard needs the fold's raw images and labels"
        )
    reader = reference_engine.plans_manager.image_reader_writer_class()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "images"
        inputs.mkdir()
        for case in validation_cases:
            for f in images[case]:
                os.symlink(os.path.abspath(f), inputs / Path(f).name)
        outputs = {}
        for name, engine in (("fp32", reference_engine), (precision, candidate_engine)):
            out = Path(tmp) / name
            predict_folder_fast(engine, inputs, out, use_mirroring=use_mirroring, progress=False)
            outputs[name] = out
        per_case, dice_ref, dice_low = [], [], []
        for case in validation_cases:
            reference, _ = reader.read_seg(str(raw_folder / "labelsTr" / f"{case}{file_ending}"))
            a, _ = reader.read_seg(str(outputs["fp32"] / f"{case}{file_ending}"))
            b, _ = reader.read_seg(str(outputs[precision] / f"{case}{file_ending}"))
            d_ref, d_low = _dice_per_case(a, reference, labels), _dice_per_case(b, reference, labels)
            dice_ref.append(d_ref)
            dice_low.append(d_low)
            per_case.append(
                {
                    "case": case,
                    "dice_fp32": d_ref,
                    f"dice_{precision}": d_low,
                    "dice_difference": d_low - d_ref,
                    "differing_voxel_share": float(np.mean(a != b)),
                }
            )
    mean_ref, mean_low = float(np.mean(dice_ref)), float(np.mean(dice_low))
    drop = mean_ref - mean_low
    guard = {
        "validation_cases": len(validation_cases),
        "pipeline": "nnunet_lite predict fast path (nnU-Net preprocessing, sliding window step 0.5, Gaussian, "
        + ("mirroring" if use_mirroring else "no mirroring")
        + ")",
        "dice": "mean over cases of the mean foreground-label Dice vs labelsTr (a label absent from both: 1)",
        "mean_dice_fp32": mean_ref,
        f"mean_dice_{precision}": mean_low,
        "mean_dice_drop": drop,
        "max_dice_drop": max_dice_drop,
        "differing_voxel_share": float(np.mean([c["differing_voxel_share"] for c in per_case])),
        "passed": bool(drop <= max_dice_drop),
        "per_case": per_case,
    }
    for c in per_case:
        log(
            f"  {c['case']}: Dice fp32 {c['dice_fp32']:.4f}, {precision} {c[f'dice_{precision}']:.4f} "
            f"({c['dice_difference']:+.4f}), {100 * c['differing_voxel_share']:.3f} % of voxels differ"
        )
    log(
        f"accuracy guard on {len(per_case)} validation case(s): mean foreground Dice fp32 {mean_ref:.4f}, "
        f"{precision} {mean_low:.4f}, drop {drop:+.4f} (limit {max_dice_drop:g}); "
        f"{100 * guard['differing_voxel_share']:.3f} % of voxels differ"
    )
    return guard
