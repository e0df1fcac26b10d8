"""The real nnU-Net commands, end to end on CPU, with tiny synthetic datasets (marked slow: ~5 minutes)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnunet_lite.synthetic import make_lesion_dataset_2d, make_organ_dataset_3d

from .conftest import run_cli

pytestmark = pytest.mark.slow

TRAINER = "nnUNetTrainerLGMSNet_test"


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    inter = np.logical_and(pred, ref).sum()
    return 2 * inter / max(1, pred.sum() + ref.sum())


@pytest.fixture(scope="module")
def lesions_2d(nnunet_env):
    raw = make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), 901, num_train=12, num_test=4, seed=1)
    run_cli(
        "nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "2d", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"
    )
    return raw


@pytest.fixture(scope="module")
def trained_2d(lesions_2d):
    run_cli("nnUNetv2_train", "901", "2d", "0", "-tr", TRAINER, "-device", "cpu")
    return Path(os.environ["nnUNet_results"]) / lesions_2d.name / f"{TRAINER}__nnUNetPlans__2d"


def test_training_writes_nnunet_results_and_learns(trained_2d):
    fold = trained_2d / "fold_0"
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "progress.png", "debug.json"):
        assert (fold / name).is_file(), name
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == TRAINER
    assert checkpoint["current_epoch"] == 3
    losses = checkpoint["logging"]["train_losses"]
    assert losses[-1] < losses[0], f"training loss did not decrease: {losses}"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] > 0.5, summary["foreground_mean"]


def test_resume_with_c_continues_an_interrupted_training(trained_2d):
    fold = trained_2d / "fold_0"
    # Simulate a run interrupted after epoch 1: only checkpoint_latest.pth with one logged epoch is left.
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    checkpoint["current_epoch"] = 1
    checkpoint["logging"] = {k: v[:1] for k, v in checkpoint["logging"].items()}
    torch.save(checkpoint, fold / "checkpoint_latest.pth")
    (fold / "checkpoint_final.pth").unlink()
    out = run_cli("nnUNetv2_train", "901", "2d", "0", "-tr", TRAINER, "-device", "cpu", "--c").stdout
    assert "Epoch 1\n" in out and "Epoch 2\n" in out and "Epoch 0\n" not in out
    resumed = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 3 and len(resumed["logging"]["train_losses"]) == 3


def test_validation_only_with_npz(trained_2d):
    shutil.rmtree(trained_2d / "fold_0" / "validation")
    run_cli("nnUNetv2_train", "901", "2d", "0", "-tr", TRAINER, "-device", "cpu", "--val", "--npz")
    validation = trained_2d / "fold_0" / "validation"
    assert (validation / "summary.json").is_file()
    assert len(list(validation.glob("*.npz"))) == len(list(validation.glob("*.png"))) > 0


def test_predict_and_evaluate_test_cases(trained_2d, lesions_2d, tmp_path):
    out = tmp_path / "pred"
    run_cli(
        "nnUNetv2_predict",
        "-i",
        str(lesions_2d / "imagesTs"),
        "-o",
        str(out),
        "-d",
        "901",
        "-c",
        "2d",
        "-tr",
        TRAINER,
        "-f",
        "0",
        "-device",
        "cpu",
        "-npp",
        "0",
        "-nps",
        "0",
    )
    scores = []
    for ref_file in sorted((lesions_2d / "labelsTs").glob("*.png")):
        pred = np.asarray(Image.open(out / ref_file.name))
        assert set(np.unique(pred)) <= {0, 1}
        scores.append(dice(pred == 1, np.asarray(Image.open(ref_file)) == 1))
    assert len(scores) == 4 and np.mean(scores) > 0.5, scores

    run_cli(
        "nnUNetv2_evaluate_folder",
        str(lesions_2d / "labelsTs"),
        str(out),
        "-djfile",
        str(trained_2d / "dataset.json"),
        "-pfile",
        str(trained_2d / "plans.json"),
        "-np",
        "1",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] == pytest.approx(np.mean(scores), abs=1e-6)


def test_predict_from_modelfolder(trained_2d, lesions_2d, tmp_path):
    out = tmp_path / "pred_mf"
    run_cli(
        "nnUNetv2_predict_from_modelfolder",
        "-i",
        str(lesions_2d / "imagesTs"),
        "-o",
        str(out),
        "-m",
        str(trained_2d),
        "-f",
        "0",
        "-device",
        "cpu",
        "-npp",
        "0",
        "-nps",
        "0",
    )
    assert len(list(out.glob("*.png"))) == 4


def test_find_best_configuration(trained_2d):
    run_cli(
        "nnUNetv2_find_best_configuration",
        "901",
        "-c",
        "2d",
        "-tr",
        TRAINER,
        "-f",
        "0",
        "--disable_ensembling",
        "-np",
        "1",
    )
    info = json.loads((trained_2d.parent / "inference_information.json").read_text())
    assert info["best_model_or_ensemble"]["selected_model_or_models"][0]["trainer"] == TRAINER


@pytest.mark.parametrize("regions", [False, True], ids=["labels", "regions"])
def test_3d_fullres_anisotropic_train_and_predict(nnunet_env, regions, tmp_path):
    dataset_id = 903 if regions else 902
    raw = make_organ_dataset_3d(
        Path(os.environ["nnUNet_raw"]), dataset_id, num_train=5, num_test=1, regions=regions, seed=dataset_id
    )
    run_cli(
        "nnUNetv2_plan_and_preprocess",
        "-d",
        str(dataset_id),
        "-c",
        "3d_fullres",
        "-np",
        "1",
        "-npfp",
        "1",
        "--verify_dataset_integrity",
    )
    plans = json.loads((Path(os.environ["nnUNet_preprocessed"]) / raw.name / "nnUNetPlans.json").read_text())
    strides = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"]
    assert strides[1][0] == 1 and strides[1][1] == 2, f"expected an anisotropic plan, got {strides}"

    run_cli("nnUNetv2_train", str(dataset_id), "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu")
    out = tmp_path / "pred3d"
    run_cli(
        "nnUNetv2_predict",
        "-i",
        str(raw / "imagesTs"),
        "-o",
        str(out),
        "-d",
        str(dataset_id),
        "-c",
        "3d_fullres",
        "-tr",
        TRAINER,
        "-f",
        "0",
        "-device",
        "cpu",
        "-npp",
        "0",
        "-nps",
        "0",
    )
    predictions = list(out.glob("*.nii.gz"))
    assert len(predictions) == 1
    import SimpleITK as sitk

    pred = sitk.ReadImage(str(predictions[0]))
    ref = sitk.ReadImage(str(raw / "labelsTs" / predictions[0].name))
    assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == pytest.approx(ref.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}
