"""The real nnU-Net commands, end to end on CPU, with tiny synthetic datasets (marked slow: a few minutes), and the
learning bar their training tests use."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from nnunet_lite.synthetic import make_lesion_dataset_2d, make_organ_dataset_3d

from .baselines import assert_beats_constant_baselines, constant_baselines, read_masks
from .conftest import run_cli

TRAINERS_2D = ("nnUNetTrainerLGMSNet_test", "nnUNetTrainerAULUNet_test", "nnUNetTrainerMedLiteNet_test")
# Lesions anywhere in the image and of varied size, so that a constant mask scores low (Dice <= ~0.3, see baselines.py)
SPREAD = {"centre_range": (0.15, 0.85), "radius_range": (0.08, 0.2)}
# Mean Dice a trained model must add to the best input-independent prediction on the same cases (one per model).
# Measured (seeded, 10 validation cases, best constant 0.222): LGMSNet 0.967, MedLiteNet 0.868, AULUNet 0.435 (the
# 28k-parameter network is still early in its start-up phase after 240 iterations, see README).
MARGIN = {"nnUNetTrainerLGMSNet_test": 0.4, "nnUNetTrainerAULUNet_test": 0.15, "nnUNetTrainerMedLiteNet_test": 0.4}
# nnU-Net's fold 0 of 48 training cases; 48 keeps nnU-Net's batch size at 2 (5 % of the dataset's pixels; 60 gives 3)
NUM_TRAIN, MIN_CASES = 48, 10
LGMSNET = TRAINERS_2D[0]
FAST_PREDICT = ("-device", "cpu", "-npp", "1", "-nps", "1")


def fold_split(raw: Path, fold: int = 0) -> tuple[list[str], list[str]]:
    """Training and validation case IDs of nnU-Net's own split (splits_final.json written by nnUNetv2_train)."""
    splits = json.loads((Path(os.environ["nnUNet_preprocessed"]) / raw.name / "splits_final.json").read_text())
    return sorted(splits[fold]["train"]), sorted(splits[fold]["val"])


@pytest.fixture(scope="module")
def lesions_2d(nnunet_env):
    raw = make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), 901, num_train=NUM_TRAIN, num_test=8, seed=1, **SPREAD)
    run_cli(
        "nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "2d", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"
    )
    return raw


@pytest.fixture(scope="module")
def trained_2d(lesions_2d):
    """Each lite network trained on fold 0 with nnUNetv2_train (3 epochs x 40 iterations), validation npz kept."""
    folders = {}
    for trainer in TRAINERS_2D:
        run_cli("nnUNetv2_train", "901", "2d", "0", "-tr", trainer, "-device", "cpu", "--npz")
        folders[trainer] = Path(os.environ["nnUNet_results"]) / lesions_2d.name / f"{trainer}__nnUNetPlans__2d"
    return folders


def test_learning_bar_fails_networks_that_ignore_their_input(tmp_path):
    """The assertion of the training tests, fed the predictions of input-independent 'networks' on the same kind of
    data and nnU-Net's own fold-0 split: each must fail it; the reference masks themselves pass."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    raw = make_lesion_dataset_2d(tmp_path, 901, num_train=NUM_TRAIN, num_test=0, seed=1, **SPREAD)
    cases = sorted(p.name.removesuffix(".png") for p in (raw / "labelsTr").glob("*.png"))
    split = generate_crossval_split(cases, seed=12345, n_splits=5)[0]  # what nnUNetv2_train writes
    train, val = read_masks(raw / "labelsTr", split["train"]), read_masks(raw / "labelsTr", split["val"])
    yy, xx = np.mgrid[0:64, 0:64]
    ignoring_input = {
        "all background": np.zeros_like(val),
        "all foreground": np.ones_like(val),
        "centred disc": np.broadcast_to(np.hypot(yy - 32, xx - 32) < 10, val.shape),
        "training label frequency > 0.2": np.broadcast_to(train.mean(0) > 0.2, val.shape),
    }
    baselines = constant_baselines(train, val)
    for name, prediction in ignoring_input.items():
        try:
            assert_beats_constant_baselines(prediction, val, train, min(MARGIN.values()), MIN_CASES, baselines)
        except AssertionError as error:
            assert "does not beat the input-independent" in str(error)
        else:
            pytest.fail(f"a network predicting '{name}' for every image passes the learning bar")
    score, _ = assert_beats_constant_baselines(val, val, train, max(MARGIN.values()), MIN_CASES, baselines)
    assert score == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINERS_2D)
def test_training_writes_nnunet_results_and_learns(trained_2d, lesions_2d, trainer):
    fold = trained_2d[trainer] / "fold_0"
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "progress.png", "debug.json"):
        assert (fold / name).is_file(), name
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == trainer and checkpoint["current_epoch"] == 3
    losses = checkpoint["logging"]["train_losses"]
    assert losses[-1] < losses[0], f"training loss did not decrease: {losses}"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert len(list((fold / "validation").glob("*.npz"))) == len(summary["metric_per_case"])

    # nnU-Net's validation segmentations against the best constant masks on exactly these cases
    train_ids, val_ids = fold_split(lesions_2d)
    val = read_masks(lesions_2d / "labelsTr", val_ids)
    score, baselines = assert_beats_constant_baselines(
        read_masks(fold / "validation", val_ids), val, read_masks(lesions_2d / "labelsTr", train_ids),
        MARGIN[trainer], MIN_CASES,
    )  # fmt: skip
    print(f"{trainer}: validation Dice {score:.3f}, best constant {max(baselines.values()):.3f}")
    assert summary["foreground_mean"]["Dice"] == pytest.approx(score)


@pytest.mark.slow
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
        LGMSNET,
        "-f",
        "0",
        *FAST_PREDICT,
    )
    test_ids = sorted(p.name.removesuffix(".png") for p in (lesions_2d / "labelsTs").glob("*.png"))
    pred = np.stack([np.asarray(Image.open(out / f"{case}.png")) for case in test_ids])
    assert set(np.unique(pred)) == {0, 1}
    score, baselines = assert_beats_constant_baselines(
        pred == 1, read_masks(lesions_2d / "labelsTs", test_ids),
        read_masks(lesions_2d / "labelsTr", fold_split(lesions_2d)[0]), MARGIN[LGMSNET], 8,
    )  # fmt: skip
    print(f"{LGMSNET}: test Dice {score:.3f}, best constant {max(baselines.values()):.3f}")

    folder = trained_2d[LGMSNET]
    run_cli(
        "nnUNetv2_evaluate_folder",
        str(lesions_2d / "labelsTs"),
        str(out),
        "-djfile",
        str(folder / "dataset.json"),
        "-pfile",
        str(folder / "plans.json"),
        "-np",
        "1",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] == pytest.approx(score, abs=1e-6)


@pytest.mark.slow
def test_predict_from_modelfolder(trained_2d, lesions_2d, tmp_path):
    out = tmp_path / "pred_mf"
    run_cli(
        "nnUNetv2_predict_from_modelfolder",
        "-i",
        str(lesions_2d / "imagesTs"),
        "-o",
        str(out),
        "-m",
        str(trained_2d["nnUNetTrainerMedLiteNet_test"]),
        "-f",
        "0",
        *FAST_PREDICT,
    )
    test_ids = sorted(p.name.removesuffix(".png") for p in (lesions_2d / "labelsTs").glob("*.png"))
    assert sorted(p.name.removesuffix(".png") for p in out.glob("*.png")) == test_ids
    pred = np.stack([np.asarray(Image.open(out / f"{case}.png")) for case in test_ids])
    trainer = "nnUNetTrainerMedLiteNet_test"
    score, baselines = assert_beats_constant_baselines(
        pred == 1, read_masks(lesions_2d / "labelsTs", test_ids),
        read_masks(lesions_2d / "labelsTr", fold_split(lesions_2d)[0]), MARGIN[trainer], 8,
    )  # fmt: skip
    print(f"{trainer} (predict_from_modelfolder): test Dice {score:.3f}, best constant {max(baselines.values()):.3f}")


@pytest.mark.slow
def test_find_best_configuration_and_ensemble(trained_2d, lesions_2d, tmp_path):
    run_cli("nnUNetv2_find_best_configuration", "901", "-c", "2d", "-tr", *TRAINERS_2D, "-f", "0", "-np", "1")
    info = json.loads((trained_2d[LGMSNET].parent / "inference_information.json").read_text())
    considered = {model["trainer"] for model in info["best_model_or_ensemble"]["selected_model_or_models"]}
    assert considered <= set(TRAINERS_2D)
    assert any("ensemble" in key for key in info["all_results"]), "no ensemble was evaluated"

    # the ensemble a user would build for the test set, with nnU-Net's own commands
    folders = []
    for trainer in TRAINERS_2D[:2]:
        out = tmp_path / trainer
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
            trainer,
            "-f",
            "0",
            "--save_probabilities",
            *FAST_PREDICT,
        )
        folders.append(str(out))
    ensemble = tmp_path / "ensemble"
    run_cli("nnUNetv2_ensemble", "-i", *folders, "-o", str(ensemble), "-np", "1")
    test_ids = sorted(p.name.removesuffix(".png") for p in (lesions_2d / "labelsTs").glob("*.png"))
    assert sorted(p.name.removesuffix(".png") for p in ensemble.glob("*.png")) == test_ids
    pred = np.stack([np.asarray(Image.open(ensemble / f"{case}.png")) for case in test_ids])
    score, baselines = assert_beats_constant_baselines(
        pred == 1, read_masks(lesions_2d / "labelsTs", test_ids),
        read_masks(lesions_2d / "labelsTr", fold_split(lesions_2d)[0]), min(MARGIN[t] for t in TRAINERS_2D[:2]), 8,
    )  # fmt: skip
    print(f"ensemble of {TRAINERS_2D[:2]}: test Dice {score:.3f}, best constant {max(baselines.values()):.3f}")


def copy_of_results(trained_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private nnUNet_results holding a copy of one trained model, for tests that delete parts of it (the shared
    model stays intact whatever the test order)."""
    results = tmp_path / "nnUNet_results"
    copy = results / trained_folder.parent.name / trained_folder.name
    shutil.copytree(trained_folder, copy)
    monkeypatch.setenv("nnUNet_results", str(results))
    return copy


@pytest.mark.slow
def test_resume_with_c_continues_an_interrupted_training(trained_2d, tmp_path, monkeypatch):
    fold = copy_of_results(trained_2d[LGMSNET], tmp_path, monkeypatch) / "fold_0"
    # Simulate a run interrupted after epoch 2: only checkpoint_latest.pth with two logged epochs is left.
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    checkpoint["current_epoch"] = 2
    checkpoint["logging"] = {k: v[:2] for k, v in checkpoint["logging"].items()}
    torch.save(checkpoint, fold / "checkpoint_latest.pth")
    (fold / "checkpoint_final.pth").unlink()
    out = run_cli("nnUNetv2_train", "901", "2d", "0", "-tr", LGMSNET, "-device", "cpu", "--c").stdout
    assert "Epoch 2\n" in out and "Epoch 0\n" not in out and "Epoch 1\n" not in out
    resumed = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 3 and len(resumed["logging"]["train_losses"]) == 3
    assert resumed["logging"]["train_losses"][:2] == checkpoint["logging"]["train_losses"]
    assert (trained_2d[LGMSNET] / "fold_0" / "checkpoint_final.pth").is_file(), "the shared model was modified"


@pytest.mark.slow
def test_validation_only_reproduces_the_validation_of_the_training_run(trained_2d, lesions_2d, tmp_path, monkeypatch):
    original = trained_2d[LGMSNET] / "fold_0" / "validation"
    validation = copy_of_results(trained_2d[LGMSNET], tmp_path, monkeypatch) / "fold_0" / "validation"
    shutil.rmtree(validation)
    run_cli("nnUNetv2_train", "901", "2d", "0", "-tr", LGMSNET, "-device", "cpu", "--val")
    # same checkpoint, same inference: the same segmentations, pixel for pixel
    val_ids = fold_split(lesions_2d)[1]
    differing = int((read_masks(validation, val_ids) != read_masks(original, val_ids)).sum())
    assert differing == 0, f"{differing} pixels differ from the training run's own validation"
    assert json.loads((validation / "summary.json").read_text())["foreground_mean"] == pytest.approx(
        json.loads((original / "summary.json").read_text())["foreground_mean"]
    )


@pytest.mark.slow
def test_3d_fullres_anisotropic_regions_train_and_predict(nnunet_env, tmp_path):
    """KiTS-style nested regions (sigmoid heads) on an anisotropic 3D plan."""
    raw = make_organ_dataset_3d(
        Path(os.environ["nnUNet_raw"]), 902, num_train=5, num_test=1, shape=(16, 40, 40), regions=True, seed=2
    )
    run_cli(
        "nnUNetv2_plan_and_preprocess",
        "-d",
        "902",
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

    trainer = "nnUNetTrainerLGMSNet_test3d"
    run_cli("nnUNetv2_train", "902", "3d_fullres", "0", "-tr", trainer, "-device", "cpu")
    checkpoint = torch.load(
        Path(os.environ["nnUNet_results"])
        / raw.name
        / f"{trainer}__nnUNetPlans__3d_fullres"
        / "fold_0"
        / "checkpoint_final.pth",
        map_location="cpu",
        weights_only=False,
    )
    assert checkpoint["network_weights"]["seg_layers.weight"].shape[0] == 2  # one sigmoid head per region
    out = tmp_path / "pred3d"
    run_cli(
        "nnUNetv2_predict",
        "-i",
        str(raw / "imagesTs"),
        "-o",
        str(out),
        "-d",
        "902",
        "-c",
        "3d_fullres",
        "-tr",
        trainer,
        "-f",
        "0",
        *FAST_PREDICT,
    )
    (prediction,) = out.glob("*.nii.gz")
    pred, ref = sitk.ReadImage(str(prediction)), sitk.ReadImage(str(raw / "labelsTs" / prediction.name))
    assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == pytest.approx(ref.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}
