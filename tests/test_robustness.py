"""Robustness suites, ``robustness make | run | report`` and ``figure`` on real nnU-Net outputs.

The corruption unit tests need no training. The integration fixture trains nnU-Net's U-Net and AULUNet for
2 x 4 iterations on fold 0 of a 10-case synthetic dataset (the budget of test_comparison), so the networks are poor
but real: what is checked is the bookkeeping against nnU-Net's own evaluator and direct computations.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nnunet_lite.cli import main
from nnunet_lite.robustness.corruptions import SUITES, case_rng, get_suite
from nnunet_lite.synthetic import _lesion_case
from tests.test_comparison import CMP_TRAINERS, fast_worker_pools

DATASET = 915
BASELINE, LITE = "nnUNetTrainer_cmp", "nnUNetTrainerAULUNet_rob"
# AULUNet with nnU-Net's SGD predicts nothing after a few iterations; the paper's AdamW recipe learns within 3 x 8.
TRAINERS = (
    CMP_TRAINERS
    + """
from nnunet_lite.trainers import nnUNetTrainerAULUNet_paper


class nnUNetTrainerAULUNet_rob(nnUNetTrainerAULUNet_paper):
    hyperparameters = {"num_epochs": 3, "num_iterations_per_epoch": 8, "num_val_iterations_per_epoch": 1}
"""
)
CORRUPTIONS = ("gaussian_noise", "black_corner", "hair")


def cli(*args) -> int:
    return main([str(a) for a in args])


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return 2 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())


# ----------------------------------------------------------------------------------------------------- unit tests
ALL = [(suite, c) for suite, corruptions in SUITES.items() for c in corruptions]


@pytest.mark.parametrize("suite,corruption", ALL, ids=[f"{s}-{c.name}" for s, c in ALL])
def test_corruption_grows_with_severity_and_is_deterministic(suite, corruption):
    image, _ = _lesion_case(np.random.default_rng(1), 64)
    for x in (image / 255.0, image[..., 0] / 255.0):  # RGB and greyscale
        out = [corruption.apply(x, s, case_rng(0, corruption.name, "case_0000.png")) for s in range(1, 6)]
        distance = [np.abs(o - x).mean() for o in out]
        assert all(o.shape == x.shape and o.min() >= 0 and o.max() <= 1 for o in out)
        assert distance[0] > 0 and all(np.diff(distance) > 0), distance
        again = corruption.apply(x, 3, case_rng(0, corruption.name, "case_0000.png"))
        np.testing.assert_array_equal(again, out[2])


def test_suites_and_selection():
    assert set(SUITES) == {"dermoscopy", "ultrasound", "endoscopy", "generic"}
    assert all(len(c.parameters) == 5 for suite in SUITES.values() for c in suite)
    assert [c.name for c in get_suite("dermoscopy", ["black_corner", "gaussian_noise"])] == [
        "gaussian_noise",
        "black_corner",
    ]
    with pytest.raises(KeyError, match="speckle_noise"):
        get_suite("generic", ["speckle_noise"])


# --------------------------------------------------------------------------------------- real nnU-Net results
@pytest.fixture(scope="module")
def trained(nnunet_env, tmp_path_factory):
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_lite.synthetic import make_lesion_dataset_2d

    ext = tmp_path_factory.mktemp("robustness_trainers")
    (ext / "nnunet_lite_robustness_trainers.py").write_text(TRAINERS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_extTrainer", os.pathsep.join([os.environ["nnUNet_extTrainer"], str(ext)]))
        raw = make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), DATASET, num_train=8, num_test=3, seed=5)
        with fast_worker_pools():
            fingerprint = DatasetFingerprintExtractor(DATASET, num_processes=1)
            fingerprint.num_foreground_voxels_for_intensitystats = 1e5
            fingerprint.run()
            plan_experiments([DATASET])
            preprocess([DATASET], configurations=("2d",), num_processes=(1,))
            cases = sorted(p.name.removesuffix(".png") for p in (raw / "labelsTr").glob("*.png"))
            splits = [{"train": cases[3:], "val": cases[:3]}]
            (Path(os.environ["nnUNet_preprocessed"]) / raw.name / "splits_final.json").write_text(json.dumps(splits))
            for trainer_name in (BASELINE, LITE):
                trainer = get_trainer_from_args(str(DATASET), "2d", 0, trainer_name, device=torch.device("cpu"))
                trainer.run_training()
                trainer.perform_actual_validation()
        yield raw
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corrupted(trained):
    args = ["robustness", "make", "-d", DATASET, "--suite", "dermoscopy", "--corruptions", *CORRUPTIONS]
    assert cli(*args, "--severities", 1, 5, "--seed", 3) == 0
    return trained / "robustness" / "dermoscopy"


@pytest.mark.slow
def test_make_is_deterministic_and_leaves_masks_untouched(trained, corrupted, tmp_path, capsys):
    manifest = json.loads((corrupted / "manifest.json").read_text())
    assert manifest["sets"] == ["clean"] + [f"{c}_s{s}" for c in CORRUPTIONS for s in (1, 5)]
    assert manifest["cases"] == sorted(p.name.removesuffix(".png") for p in (trained / "labelsTs").glob("*.png"))
    for case in manifest["cases"]:
        assert (corrupted / "labelsTs" / f"{case}.png").read_bytes() == (
            trained / "labelsTs" / f"{case}.png"
        ).read_bytes()
        clean = np.asarray(Image.open(trained / "imagesTs" / f"{case}_0000.png"), dtype=float)
        noisy = [
            np.asarray(Image.open(corrupted / f"gaussian_noise_s{k}" / "imagesTs" / f"{case}_0000.png")) for k in (1, 5)
        ]
        assert 0 < np.abs(noisy[0] - clean).mean() < np.abs(noisy[1] - clean).mean()
    assert len(list(trained.glob("imagesTs/*"))) == 3  # the raw dataset is unchanged

    # refuses to overwrite; --overwrite with the same seed gives the same pixels (and a new manifest id)
    args = ["robustness", "make", "-d", DATASET, "--suite", "dermoscopy", "--corruptions", *CORRUPTIONS]
    assert cli(*args, "--severities", 1, 5, "--seed", 3) == 1
    assert "--overwrite" in capsys.readouterr().err
    before = {p.relative_to(corrupted): p.read_bytes() for p in corrupted.rglob("*.png")}
    assert cli(*args, "--severities", 1, 5, "--seed", 3, "--overwrite") == 0
    after = {p.relative_to(corrupted): p.read_bytes() for p in corrupted.rglob("*.png")}
    assert before == after
    assert json.loads((corrupted / "manifest.json").read_text())["id"] != manifest["id"]
    assert cli("robustness", "make", "-d", DATASET, "--suite", "dermoscopy", "--from-fold", 3) == 1
    assert "folds 0-0" in capsys.readouterr().err


@pytest.mark.slow
def test_run_report_and_compare_columns(trained, corrupted, tmp_path, capsys):
    results = Path(os.environ["nnUNet_results"]) / trained.name
    run = ["robustness", "run", "-d", DATASET, "-c", "2d", "-tr", BASELINE, LITE, "-f", 0]
    assert cli(*run) == 0
    assert "predicted 14 sets, 0 were done before" in capsys.readouterr().out
    assert cli(*run) == 0  # resumable: nothing left to do
    assert "predicted 0 sets, 14 were done before" in capsys.readouterr().out

    # every per-case Dice is nnU-Net's evaluator's, equal to a direct computation on the written files
    folder = results / f"{LITE}__nnUNetPlans__2d" / "robustness" / "dermoscopy" / "fold_0" / "black_corner_s5"
    summary = json.loads((folder / "summary.json").read_text())
    for case in summary["metric_per_case"]:
        name = Path(case["reference_file"]).name
        pred = np.asarray(Image.open(folder / name)) == 1
        ref = np.asarray(Image.open(corrupted / "labelsTs" / name)) == 1
        expected = dice(pred, ref) if pred.any() or ref.any() else np.nan
        assert case["metrics"]["1"]["Dice"] == pytest.approx(expected, nan_ok=True)

    out = tmp_path / "report"
    assert cli("robustness", "report", "-d", DATASET, "-tr", BASELINE, LITE, "-o", out, "--bootstrap", 500) == 0
    table = pd.read_csv(out / "robustness.csv").set_index("model")
    per_set = pd.read_csv(out / "robustness_per_set.csv")
    for trainer in (BASELINE, LITE):
        mine = per_set[per_set["model"] == trainer].set_index(["corruption", "severity"])
        assert len(mine) == 7 and (mine["n_cases"] == 3).all() and (mine["seconds"] > 0).all()
        corrupted_sets = mine.drop(index=("clean", 0))["Dice"]
        assert table.loc[trainer, "clean_dice"] == pytest.approx(mine.loc[("clean", 0), "Dice"])
        assert table.loc[trainer, "corrupted_dice"] == pytest.approx(corrupted_sets.mean())
        clean = table.loc[trainer, "clean_dice"]
        drop = (clean - corrupted_sets.mean()) / clean if clean > 0 else np.nan  # a tiny AULUNet may predict nothing
        assert table.loc[trainer, "relative_drop"] == pytest.approx(drop, nan_ok=True)
        by_corruption = corrupted_sets.groupby(level=0).mean()
        assert table.loc[trainer, "worst_corruption_dice"] == pytest.approx(by_corruption.min())
        assert by_corruption[table.loc[trainer, "worst_corruption"]] == by_corruption.min()
    assert table.loc[BASELINE, "mCE"] == pytest.approx(1.0)
    per_case = pd.read_csv(out / "robustness_per_case.csv")
    assert len(per_case) == 2 * 7 * 3 and table.loc[LITE, "n_pairs"] == 3
    # the artefact false-positive rate from nnU-Net's predictions, against a direct computation on the written files
    lite = results / f"{LITE}__nnUNetPlans__2d" / "robustness" / "dermoscopy" / "fold_0"
    rates, clean_rates = [], []
    for case in json.loads((corrupted / "manifest.json").read_text())["cases"]:
        outside = (np.asarray(Image.open(corrupted / "hair_s5" / "artefactsTs" / f"{case}.png")) > 0) & ~(
            np.asarray(Image.open(corrupted / "labelsTs" / f"{case}.png")) > 0
        )
        if outside.any():
            rates.append((np.asarray(Image.open(lite / "hair_s5" / f"{case}.png")) > 0)[outside].mean())
            clean_rates.append((np.asarray(Image.open(lite / "clean" / f"{case}.png")) > 0)[outside].mean())
    artefacts = pd.read_csv(out / "robustness_artefacts.csv").set_index(["model", "corruption", "severity"])
    assert artefacts.loc[(LITE, "hair", 5), "n_cases"] == len(rates) > 0
    assert artefacts.loc[(LITE, "hair", 5), "artefact_fp_rate"] == pytest.approx(np.mean(rates))
    assert artefacts.loc[(LITE, "hair", 5), "artefact_fp_rate_clean"] == pytest.approx(np.mean(clean_rates))
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "worst corruption" in (out / "robustness.md").read_text()

    # the figure on a corrupted set: each panel's Dice is that set's nnU-Net evaluation
    from nnunet_lite.figure import make_figure

    ids = [Path(c["reference_file"]).name.removesuffix(".png") for c in summary["metric_per_case"]][:2]
    fig, panels, _ = make_figure(
        DATASET,
        "2d",
        [BASELINE, LITE],
        tmp_path / "corrupted.png",
        ids=ids,
        set_name="dermoscopy",
        corruption="black_corner",
        severity=5,
    )
    assert len(fig.axes) == 2 * 3 and [p.case for p in panels if p.trainer == LITE] == ids
    lite_scores = {
        Path(c["reference_file"]).name.removesuffix(".png"): c["metrics"]["1"]["Dice"]
        for c in summary["metric_per_case"]
    }
    assert [p.dice for p in panels if p.trainer == LITE] == pytest.approx([lite_scores[i] for i in ids], nan_ok=True)

    # validation cases of a fold: only that fold's model may predict them
    args = ["robustness", "make", "-d", DATASET, "--suite", "generic", "--from-fold", 0]
    assert cli(*args, "--corruptions", "jpeg_compression", "--severities", 2) == 0
    fold_set = trained / "robustness" / "generic_fold0"
    splits = json.loads((Path(os.environ["nnUNet_preprocessed"]) / trained.name / "splits_final.json").read_text())
    assert sorted(p.name.removesuffix(".png") for p in (fold_set / "labelsTs").iterdir()) == sorted(splits[0]["val"])
    assert sorted(p.name for p in (fold_set / "jpeg_compression_s2" / "imagesTs").iterdir()) == sorted(
        f"{c}_0000.png" for c in splits[0]["val"]
    )
    assert cli("robustness", "run", "-d", DATASET, "-tr", BASELINE, "-f", 1, "--set", "generic_fold0") == 1
    assert "Use -f 0" in capsys.readouterr().err

    # compare shows the robustness columns next to the cross-validation ones
    cmp_out = tmp_path / "cmp"
    assert (
        cli("compare", "-d", DATASET, "-c", "2d", "-f", 0, "--baseline", BASELINE, "-o", cmp_out, "--bootstrap", 200)
        == 0
    )
    cmp = pd.read_csv(cmp_out / "comparison.csv").set_index("model")
    assert cmp.loc[LITE, "robustness dermoscopy: corrupted Dice"] == pytest.approx(table.loc[LITE, "corrupted_dice"])
    assert "robustness dermoscopy" in (cmp_out / "comparison.md").read_text()


@pytest.mark.slow
def test_figure_grid_and_dice_match_nnunet_evaluator(trained, tmp_path, capsys):
    from nnunet_lite.figure import make_figure

    results = Path(os.environ["nnUNet_results"]) / trained.name
    fig, panels, files = make_figure(DATASET, "2d", [BASELINE, LITE], tmp_path / "fig.png", cases=["best", "worst"])
    assert len(fig.axes) == 2 * 3 and {(p.row, p.column) for p in panels} == {
        (r, c) for r in range(2) for c in range(3)
    }
    assert [f.suffix for f in files] == [".png", ".pdf"] and files[1].read_bytes()[:4] == b"%PDF"
    for p in panels:
        if not p.trainer:
            continue
        validation = results / f"{p.trainer}__nnUNetPlans__2d" / "fold_0" / "validation"
        scores = {
            Path(c["reference_file"]).name: c["metrics"]["1"]["Dice"]
            for c in json.loads((validation / "summary.json").read_text())["metric_per_case"]
        }
        assert p.dice == pytest.approx(scores[f"{p.case}.png"], nan_ok=True)
    base = {p.case: p.dice for p in panels if p.trainer == BASELINE}
    all_base = [
        c["metrics"]["1"]["Dice"]
        for c in json.loads((results / f"{BASELINE}__nnUNetPlans__2d/fold_0/validation/summary.json").read_text())[
            "metric_per_case"
        ]
    ]
    assert list(base.values()) == [np.nanmax(all_base), np.nanmin(all_base)]
    assert cli("figure", "-d", DATASET, "-tr", BASELINE, LITE, "-o", tmp_path / "fig.png") == 1
    assert "--overwrite" in capsys.readouterr().err
