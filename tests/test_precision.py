"""Lower-precision exports: ``nnunet_lite export --precision int8|bf16``, the accuracy guard, and ``predict`` running
the recorded precision. The model is tests/test_deploy.py's ``trained`` fixture (trained once per session)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .test_deploy import DATASET_ID, TRAINER, trained  # noqa: F401 (the fixture; trains once per session)

pytestmark = pytest.mark.usefixtures("one_thread")

COMMON = ["export", "-d", DATASET_ID, "-c", "2d", "-tr", TRAINER, "-f", "0"]
# documented tolerance (docs/deployment.md, "Precision"): an int8 export's segmentations of the test images differ
# from the fp32 export's in at most this share of pixels
MAX_INT8_DIFFERING_SHARE = 0.01
# the guard's limit in these tests: the fixture has 2 validation images of 64x64 with small lesions, where a handful
# of flipped pixels moves one case's Dice by 0.004-0.008 (measured: mean drops of -0.0017 and +0.0035 in two
# trainings); 0.005, the default, is meant for real validation sets
TEST_MAX_DICE_DROP = "0.01"


def _sidecar(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def _predict(main, export: Path, images: Path, out: Path, *extra: str) -> int:
    return main(["predict", "-i", str(images), "-o", str(out), "-m", str(export), "--threads", "1",
                 "--disable-progress-bar", *extra])  # fmt: skip


def test_bad_precision_options_are_one_line(capsys):
    from nnunet_lite.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*COMMON, "-o", "x", "--precision", "int4"])
    assert exit_info.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err
    assert main([*COMMON, "-o", "x", "--precision", "int8", "--max-dice-drop", "-0.01"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-dice-drop must be a Dice difference >= 0" in err and "-0.01" in err
    assert main([*COMMON, "-o", "x", "--precision", "int8", "--calibration-patches", "0"]) == 1
    assert "--calibration-patches must be at least 1, got 0" in capsys.readouterr().err


def test_nncf_quantizer_without_nncf_is_one_line(capsys, monkeypatch):
    import importlib.util

    from nnunet_lite.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    assert main([*COMMON, "-o", "x", "--precision", "int8", "--quantizer", "nncf"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "nnunet_lite export: error: --quantizer nncf needs NNCF: pip install 'nnunet-lite[nncf]' "
        "(or --quantizer onnxruntime)\n"
    )
    with pytest.raises(SystemExit):
        main([*COMMON, "-o", "x", "--precision", "int8", "--quantizer", "tensorrt"])
    assert "invalid choice: 'tensorrt' (choose from 'onnxruntime', 'nncf')" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_export_passes_guard_and_predicts_close_to_fp32(trained, tmp_path, capsys, monkeypatch):  # noqa: F811
    from nnunet_lite.cli import main

    export = tmp_path / "int8"
    assert main([*COMMON, "-o", str(export), "--precision", "int8", "--max-dice-drop", TEST_MAX_DICE_DROP]) == 0
    console = capsys.readouterr().out
    assert sorted(p.name for p in export.iterdir()) == [
        "dataset.json", "model.json", "model.onnx", "model_int8.onnx", "plans.json",
    ]  # fmt: skip
    sidecar = _sidecar(export)
    precision = sidecar["precision"]
    assert precision["precision"] == "int8" and sidecar["model"]["file"] == "model_int8.onnx"
    assert precision["calibration"]["patches"] == 64 and precision["quantization"]["format"] == "QDQ"
    guard = precision["accuracy_guard"]
    assert guard["passed"] and guard["validation_cases"] == 2 and len(guard["per_case"]) == 2
    assert guard["mean_dice_fp32"] > 0.5, "the fixture's model should segment the lesions"
    assert guard["mean_dice_drop"] == pytest.approx(guard["mean_dice_fp32"] - guard["mean_dice_int8"])
    assert guard["mean_dice_drop"] <= float(TEST_MAX_DICE_DROP) and guard["max_dice_drop"] == 0.01
    assert f"mean foreground Dice fp32 {guard['mean_dice_fp32']:.4f}, int8 {guard['mean_dice_int8']:.4f}" in console
    for case in guard["per_case"]:
        assert case["dice_difference"] == pytest.approx(case["dice_int8"] - case["dice_fp32"])
        assert f"{case['case']}: Dice fp32 {case['dice_fp32']:.4f}" in console

    images = trained["raw"] / "imagesTs"
    assert _predict(main, export, images, tmp_path / "pred_int8") == 0
    out = capsys.readouterr().out
    # int8 runs in OpenVINO where it is installed (both quantizers' graphs are fastest there), else in onnxruntime
    runtime = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    assert f"engine {runtime}, precision int8" in out
    record = json.loads((tmp_path / "pred_int8" / "prediction_engine.json").read_text())
    assert (record["engine"], record["precision"]) == (runtime, "int8") and record["images"] == 3
    assert precision["engine"] == "OpenVINO (default where installed) or onnxruntime"
    assert guard["engine"] == runtime  # the guard checked the runtime predict runs by default
    if runtime == "openvino":  # another runtime runs, and says that the guard did not check it
        assert _predict(main, export, images, tmp_path / "pred_int8_onnx", "--engine", "onnx") == 0
        out = capsys.readouterr().out
        assert "engine onnxruntime, precision int8" in out
        assert "the accuracy guard checked this int8 export in openvino, not in onnxruntime" in out
    assert _predict(main, trained["export"], images, tmp_path / "pred_fp32") == 0
    assert "precision fp32" in capsys.readouterr().out
    for case in ("lesion_ts_000.png", "lesion_ts_001.png", "lesion_ts_big.png"):
        a = np.asarray(Image.open(tmp_path / "pred_int8" / case))
        b = np.asarray(Image.open(tmp_path / "pred_fp32" / case))
        assert (b == 1).any() and np.mean(a != b) <= MAX_INT8_DIFFERING_SHARE, (case, np.mean(a != b))
    # the int8 export's own fp32 model on request; a precision the export does not hold is one line
    assert _predict(main, export, images, tmp_path / "pred_int8_fp32", "--precision", "fp32") == 0
    assert "precision fp32" in capsys.readouterr().out
    for case in ("lesion_ts_000.png", "lesion_ts_big.png"):
        a = np.asarray(Image.open(tmp_path / "pred_int8_fp32" / case))
        assert (a == np.asarray(Image.open(tmp_path / "pred_fp32" / case))).mean() >= 0.999
    assert _predict(main, export, images, tmp_path / "pred_x", "--precision", "bf16") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records precision int8" in err and "--precision bf16" in err
    # without OpenVINO the int8 model runs in onnxruntime, and the engine says that this is the slow runtime
    from nnunet_lite.deploy.engines import load_export_engine

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    engine = load_export_engine(export)
    assert engine.info["engine"] == "onnxruntime" and "OpenVINO is not installed" in engine.info["note"]


@pytest.mark.slow
def test_int8_calibrated_on_constant_images_is_refused_with_its_figure(trained, tmp_path, capsys, monkeypatch):  # noqa: F811
    import nnunet_lite.deploy.export as export_module
    from nnunet_lite.cli import main

    real = export_module.calibration_patches

    def constant(*args, **kwargs):  # every patch one grey value: activation ranges that real images overflow
        patches = real(*args, **kwargs)
        return np.full_like(patches, float(patches.mean()))

    monkeypatch.setattr(export_module, "calibration_patches", constant)
    export = tmp_path / "bad_int8"
    assert main([*COMMON, "-o", str(export), "--precision", "int8"]) == 1
    err = capsys.readouterr().err
    assert "accuracy guard failed: mean foreground Dice drops by" in err and "> --max-dice-drop 0.005" in err
    assert "try --quantizer onnxruntime or --precision bf16" in err  # what to do instead
    assert err.count("\n") == 1 and not export.exists() and not list(tmp_path.glob(".*"))
    assert main([*COMMON, "-o", str(export), "--precision", "int8", "--force"]) == 0
    out = capsys.readouterr().out
    guard = _sidecar(export)["precision"]["accuracy_guard"]
    assert guard["passed"] is False and guard["forced"] is True and guard["mean_dice_drop"] > 0.005
    assert f"drops by {guard['mean_dice_drop']:.4f}" in out and "written anyway because of --force" in out


def _bf16_missing() -> str | None:
    """Why this CPU cannot run bf16 (None when it can)."""
    try:
        from nnunet_lite.deploy.quantize import bf16_fallback_message

        return bf16_fallback_message()
    except ImportError:
        return "OpenVINO is not installed"


def _export_bf16(main, tmp_path: Path, capsys) -> tuple[dict, str, str]:
    pytest.importorskip("openvino")
    export = tmp_path / "bf16"
    assert main([*COMMON, "-o", str(export), "--precision", "bf16", "--max-dice-drop", TEST_MAX_DICE_DROP]) == 0
    out = capsys.readouterr().out
    precision = _sidecar(export)["precision"]
    assert precision["precision"] == "bf16" and precision["accuracy_guard"]["passed"]
    assert precision["accuracy_guard"]["mean_dice_drop"] <= float(TEST_MAX_DICE_DROP)
    return precision, out, str(export)


@pytest.mark.slow
@pytest.mark.skipif(_bf16_missing() is not None, reason=f"no bf16 on this CPU: {_bf16_missing()}")
def test_bf16_export_passes_guard_and_predicts_in_bf16(trained, tmp_path, capsys):  # noqa: F811
    from nnunet_lite.cli import main

    precision, _, export = _export_bf16(main, tmp_path, capsys)
    assert precision["compiled_precision_here"] == "bf16"
    assert _predict(main, Path(export), trained["raw"] / "imagesTs", tmp_path / "pred") == 0
    assert "engine openvino, precision bf16" in capsys.readouterr().out
    record = json.loads((tmp_path / "pred" / "prediction_engine.json").read_text())
    assert (record["precision"], record["compiled_precision"]) == ("bf16", "bf16")


@pytest.mark.slow
@pytest.mark.skipif(_bf16_missing() is None, reason="this CPU runs bf16: the fallback cannot happen here")
def test_bf16_export_on_a_cpu_without_bf16_says_what_runs_instead(trained, tmp_path, capsys):  # noqa: F811
    from nnunet_lite.cli import main

    precision, out, export = _export_bf16(main, tmp_path, capsys)
    message = _bf16_missing()
    assert "lacks AVX512_BF16 and AMX-BF16" in message and "f32 instead" in message
    assert message in out and precision["cpu_note"] == message and precision["compiled_precision_here"] == "f32"
    assert _predict(main, Path(export), trained["raw"] / "imagesTs", tmp_path / "pred") == 0
    printed = capsys.readouterr().out
    assert "engine openvino, precision bf16" in printed and message in printed
    record = json.loads((tmp_path / "pred" / "prediction_engine.json").read_text())
    assert (record["precision"], record["compiled_precision"], record["note"]) == ("bf16", "f32", message)


# --- profile --precisions: a trained model next to nnU-Net's default network -----------------------------------------

PROFILE_ID = 922  # unique among the test modules' dataset IDs (session-wide nnUNet folders)
PROFILE_TRAINER = "nnUNetTrainerAULUNet"


def _tiny_trained_model(root: Path) -> tuple[str, Path, dict]:
    """A 32x32 RGB dataset's plans (nnU-Net's default topology) in nnUNet_preprocessed and a 'trained' AULUNet fold 0
    in nnUNet_results: its weights saved as nnUNetv2_train saves them (no training needed to time the network)."""
    import torch

    from nnunet_lite.comparison.nnunet_io import build_network, default_plans_for_shape, find_trainer_class

    name = f"Dataset{PROFILE_ID}_TinyProfile"
    plans, dataset_json, _ = default_plans_for_shape((1, 3, 32, 32), 2)
    plans.update(dataset_name=name, plans_name="nnUNetPlans")
    preprocessed = root / "nnUNet_preprocessed" / name
    preprocessed.mkdir(parents=True, exist_ok=True)
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(plans))
    (preprocessed / "dataset.json").write_text(json.dumps(dataset_json))
    torch.manual_seed(3)
    network, _ = build_network(find_trainer_class(PROFILE_TRAINER), plans, "2d", dataset_json)
    fold = root / "nnUNet_results" / name / f"{PROFILE_TRAINER}__nnUNetPlans__2d" / "fold_0"
    fold.mkdir(parents=True, exist_ok=True)
    checkpoint = fold / "checkpoint_final.pth"
    torch.save({"network_weights": network.state_dict(), "trainer_name": PROFILE_TRAINER}, checkpoint)
    return name, checkpoint, plans


def test_profile_precisions_of_a_trained_model(nnunet_env, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from nnunet_lite.cli import main
    from nnunet_lite.deploy.quantize import cpu_instruction_summary

    name, checkpoint, _ = _tiny_trained_model(nnunet_env)
    report_file = tmp_path / "precisions.json"
    args = ["profile", "-d", str(PROFILE_ID), "-c", "2d", "-tr", PROFILE_TRAINER, "-f", "0", "--threads", "1",
            "--precisions", "fp32", "bf16", "int8", "--rounds", "2", "--min-run-time", "0.1"]  # fmt: skip
    assert main([*args, "--json", str(report_file)]) == 0
    console = capsys.readouterr().out
    report = json.loads(report_file.read_text())["precision_profile"]
    assert report["dataset"] == name and report["input_shape"] == [1, 3, 32, 32] and report["threads"] == 1
    default, lite = report["networks"]
    assert (default["trainer"], lite["trainer"]) == ("nnUNetTrainer", PROFILE_TRAINER)
    assert (default["network"], lite["network"]) == ("PlainConvUNet", "AULUNet")
    assert lite["weights"] == str(checkpoint) and default["weights"] == "random (no trained checkpoint)"
    assert default["params"] > 10 * lite["params"] > 0

    bf16 = report["precisions"]["bf16"]
    timed = ["fp32", "int8"] + ([] if "skipped" in bf16 else ["bf16"])
    assert report["precisions"]["fp32"] == {"runtime": "onnxruntime"}
    # int8 is timed where predict runs it: OpenVINO (NNCF's graph) where installed, else onnxruntime
    int8_runtime = "OpenVINO (NNCF QDQ)" if importlib.util.find_spec("openvino") else "onnxruntime (QDQ)"
    assert report["precisions"]["int8"] == {"runtime": int8_runtime}
    if "skipped" in bf16:  # this CPU (or environment) cannot run bf16: one line saying why, shown on the console
        assert bf16["skipped"].startswith("bf16: ") and "\n" not in bf16["skipped"] and bf16["skipped"] in console
        assert "bf16" not in lite
    base_eager = default["eager_fp32"]["median_ms"]
    for network in (default, lite):
        for precision in ["eager_fp32", *timed]:
            figures = network[precision]
            assert figures["median_ms"] > 0 and figures["iqr_ms"] >= 0
            # both ratios follow from the medians of the same run
            assert figures["vs_default_eager_fp32"] == pytest.approx(base_eager / figures["median_ms"])
            same = default[precision]["median_ms"] / figures["median_ms"]
            assert figures["vs_default_same_precision"] == pytest.approx(same)
    for precision in ["eager_fp32", *timed]:
        assert default[precision]["vs_default_same_precision"] == pytest.approx(1.0)
    assert default["eager_fp32"]["vs_default_eager_fp32"] == pytest.approx(1.0)

    summary = cpu_instruction_summary()
    assert report["cpu"]["int8_dot_product"] == summary["int8_dot_product"] and report["cpu"]["bf16"] == summary["bf16"]
    assert f"CPU: {report['cpu']['summary']}" in console and "int8 dot-product instructions:" in console
    int8 = lite["int8"]
    ratios = f"{int8['vs_default_eager_fp32']:.2f}x; {int8['vs_default_same_precision']:.2f}x same"
    row = f"{int8['median_ms']:.2f} ({ratios})"
    assert f"| {PROFILE_TRAINER} |" in console and row in console
    assert f"{PROFILE_TRAINER} weights: {checkpoint}" in console


def test_profile_precisions_bad_input_is_one_line(nnunet_env, capsys):
    import torch

    from nnunet_lite.cli import main

    _, checkpoint, _ = _tiny_trained_model(nnunet_env)
    args = ["profile", "-d", str(PROFILE_ID), "-c", "2d", "-tr", PROFILE_TRAINER, "--precisions", "int8"]
    torch.save({"network_weights": {"conv.weight": torch.zeros(1)}}, checkpoint)  # another network's weights
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{checkpoint} does not fit the network the plans build" in err
    assert main([*args, "--rounds", "0"]) == 1
    assert capsys.readouterr().err == "nnunet_lite profile: --rounds must be at least 1, got 0\n"
    assert main(["profile", "-tr", PROFILE_TRAINER, "--precisions", "int8"]) == 1
    assert "--precisions: needs -d DATASET" in capsys.readouterr().err
