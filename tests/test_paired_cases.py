"""Paired statistics on independent cases, the baseline rules and the study report's owned files, on hand-built
nnU-Net results trees (``summary.json`` files written here, no training): fast.

Zero-shot and robustness sets are predicted by every fold's model, so the same case appears once per fold; the tests
compute the expected numbers independently with scipy on the fold-averaged per-case Dice.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap, wilcoxon

import nnunet_lite.comparison.compare as compare_module
from nnunet_lite.cli import main
from nnunet_lite.comparison.compare import run_compare

DATASET, TARGET = "Dataset950_HandBuilt", "Dataset951_HandTarget"
BASE, LITE = "nnUNetTrainer", "LiteTrainer"
FOLDS = [str(f) for f in range(5)]
SHARED_CASES = [f"target_{i:03d}" for i in range(10)]
RESAMPLES = 2000


def write_summary(path: Path, scores: dict[str, float]) -> None:
    """An nnU-Net ``summary.json`` (label 1 only) with the given per-case Dice; TP/FP/FN consistent with it."""
    cases = []
    for case, dice in scores.items():
        tp = round(1000 * dice)
        fp = fn = round(1000 * (1 - dice))  # Dice = 2TP / (2TP + FP + FN) = TP / (TP + FP) with FP = FN
        metrics = {"Dice": tp / (tp + fp), "IoU": tp / (tp + 2 * fp), "TP": tp, "FP": fp, "FN": fn, "TN": 0}
        metrics.update(n_pred=tp + fp, n_ref=tp + fn)
        cases.append(
            {"reference_file": f"/labels/{case}.png", "prediction_file": f"/pred/{case}.png", "metrics": {"1": metrics}}
        )
    mean = {"1": {k: float(np.mean([c["metrics"]["1"][k] for c in cases])) for k in ("Dice", "IoU")}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metric_per_case": cases, "mean": mean, "foreground_mean": mean["1"]}))


def model_folder(results: Path, trainer: str, dataset: str = DATASET) -> Path:
    folder = results / dataset / f"{trainer}__nnUNetPlans__2d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".png", "channel_names": {"0": "R"}})
    )
    return folder


def build_tree(results: Path, trainers: dict[str, int]) -> dict[str, dict]:
    """Per trainer (-> seed): 5 folds of cross-validation (2 validation cases each, every case once) and a zero-shot
    target that every fold's model predicts (the same 10 cases under each fold). Returns the Dice written."""
    written = {}
    for trainer, seed in trainers.items():
        rng = np.random.default_rng(seed)
        folder = model_folder(results, trainer)
        cv, zs = {}, {}
        for fold in FOLDS:
            cv[fold] = {f"case_{fold}{i}": float(rng.uniform(0.5, 0.95)) for i in range(2)}
            zs[fold] = {case: float(rng.uniform(0.3, 0.9)) for case in SHARED_CASES}
            write_summary(folder / f"fold_{fold}" / "validation" / "summary.json", cv[fold])
            write_summary(folder / "zeroshot" / TARGET / f"fold_{fold}" / "summary.json", zs[fold])
        written[trainer] = {"cv": cv, "zs": zs}
    return written


def no_costs(model, folds) -> dict:
    """What ``model_costs`` gives for a model folder without plans or checkpoints."""
    return {"params": np.nan, "trainable_params": np.nan, "flops": np.nan, "flops_input": ""} | {
        "seconds_per_epoch": np.nan,
        "epochs": "",
    }


@pytest.fixture
def results(tmp_path, monkeypatch):
    root = tmp_path / "nnUNet_results"
    root.mkdir()
    monkeypatch.setenv("nnUNet_results", str(root))
    # no checkpoints, plans or trainer classes in a hand-built tree: the cost columns are not under test here
    monkeypatch.setattr(compare_module, "model_costs", no_costs)
    return root


def rounded(values) -> list[float]:
    """The Dice as nnU-Net's files carry it (TP / (TP + FP) of the written counts)."""
    return [round(1000 * v) / (round(1000 * v) + round(1000 * (1 - v))) for v in values]


def test_shared_cases_pair_once_per_case_on_fold_averaged_dice(results):
    written = build_tree(results, {BASE: 1, LITE: 2})
    source = f"zero-shot {TARGET}"
    comparison = run_compare(DATASET, "2d", folds=FOLDS, baseline=BASE, stats_on=source, n_resamples=RESAMPLES)
    table = comparison.table.set_index("model")

    # expected, independently: each case's Dice averaged over the 5 fold models, then paired per case
    def fold_average(trainer: str) -> np.ndarray:
        zs = written[trainer]["zs"]
        return np.array([np.mean(rounded([zs[f][c] for f in FOLDS])) for c in SHARED_CASES])

    diff = fold_average(LITE) - fold_average(BASE)
    assert len(diff) == 10 and table.loc[LITE, "n_pairs"] == 10
    assert table.loc[LITE, "delta_dice"] == pytest.approx(diff.mean())
    assert table.loc[LITE, "p"] == pytest.approx(wilcoxon(diff).pvalue)
    assert table.loc[LITE, "p_holm"] == pytest.approx(wilcoxon(diff).pvalue)  # one comparison
    ci = bootstrap((diff,), np.mean, n_resamples=RESAMPLES, method="percentile", rng=np.random.default_rng(0))
    assert table.loc[LITE, "delta_ci_low"] == pytest.approx(ci.confidence_interval.low)
    assert table.loc[LITE, "delta_ci_high"] == pytest.approx(ci.confidence_interval.high)
    # the 50 (fold, case) rows would have given a far smaller p: that is the pseudo-replication avoided here
    all_rows = [
        a - b
        for f in FOLDS
        for a, b in zip(
            rounded(written[LITE]["zs"][f][c] for c in SHARED_CASES),
            rounded(written[BASE]["zs"][f][c] for c in SHARED_CASES),
            strict=True,
        )
    ]
    assert wilcoxon(all_rows).pvalue != pytest.approx(table.loc[LITE, "p"])

    # columns: n counts distinct cases, per-case mean ± std over the fold-averaged Dice, the fold spread on its own
    assert table.loc[LITE, f"{source}: n_cases"] == 10
    assert table.loc[LITE, f"{source}: Dice_mean_cases"] == pytest.approx(fold_average(LITE).mean())
    assert table.loc[LITE, f"{source}: Dice_std_cases"] == pytest.approx(fold_average(LITE).std(ddof=1))
    fold_means = [np.mean(rounded(written[LITE]["zs"][f].values())) for f in FOLDS]
    assert table.loc[LITE, f"{source}: Dice_mean_folds"] == pytest.approx(np.mean(fold_means))
    assert table.loc[LITE, f"{source}: Dice_std_folds"] == pytest.approx(np.std(fold_means, ddof=1))
    assert comparison.shared == {source}

    from nnunet_lite.comparison.report import markdown

    text = markdown(comparison)
    assert "(n=10, folds 0 1 2 3 4)" in text and f"| {source} Dice per fold |" in text.replace("  ", " ")
    assert "pairs matched by case, each model's Dice averaged over its folds first" in text
    assert "the same case ids appear under several folds" in text and "not from the source's name" in text

    # cross-validation: every case validated by one fold, so pairs stay (fold, case): 5 folds x 2 cases
    cv = run_compare(DATASET, "2d", folds=FOLDS, baseline=BASE, n_resamples=RESAMPLES).table.set_index("model")
    cv_diff = [
        a - b
        for f in FOLDS
        for a, b in zip(rounded(written[LITE]["cv"][f].values()), rounded(written[BASE]["cv"][f].values()), strict=True)
    ]
    assert cv.loc[LITE, "n_pairs"] == 10 and cv.loc[LITE, "n_cases"] == 10
    assert cv.loc[LITE, "p"] == pytest.approx(wilcoxon(cv_diff).pvalue)


def test_ensemble_zero_shot_is_one_prediction_per_case(results):
    build_tree(results, {BASE: 1, LITE: 2})
    for trainer, seed in ((BASE, 3), (LITE, 4)):
        rng = np.random.default_rng(seed)
        scores = {c: float(rng.uniform(0.3, 0.9)) for c in SHARED_CASES}
        write_summary(
            results / DATASET / f"{trainer}__nnUNetPlans__2d" / "zeroshot" / TARGET / "ensemble" / "summary.json",
            scores,
        )
    source = f"zero-shot {TARGET} (ensemble)"
    comparison = run_compare(DATASET, "2d", folds=FOLDS, baseline=BASE, stats_on=source, n_resamples=RESAMPLES)
    table = comparison.table.set_index("model")
    assert table.loc[LITE, "n_pairs"] == 10 and table.loc[LITE, f"{source}: n_cases"] == 10
    assert source not in comparison.shared and f"zero-shot {TARGET}" in comparison.shared


def test_explicit_baseline_without_results_is_one_line_error(results, tmp_path, capsys):
    build_tree(results, {BASE: 1, LITE: 2})
    assert main(["compare", "-d", DATASET, "--baseline", "MedLiteTrainer", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--baseline MedLiteTrainer: no results of that model" in err[0] and f"{LITE}__nnUNetPlans" in err[0]
    assert not (tmp_path / "out").exists()


def test_default_baseline_is_named_with_its_reason(results):
    build_tree(results, {"AlphaTrainer": 1, LITE: 2})  # no nnUNetTrainer: the first model, said so
    from nnunet_lite.comparison.report import markdown

    comparison = run_compare(DATASET, "2d", folds=FOLDS, n_resamples=RESAMPLES)
    assert comparison.baseline.label == "AlphaTrainer"
    text = markdown(comparison)
    assert "Baseline: **AlphaTrainer**, chosen by default (no baseline given, and no nnUNetTrainer__nnUNetPlans" in text
    assert "Paired against **AlphaTrainer**" in text

    # no baseline wanted (the study's is absent): no model stands in, no p anywhere
    none = run_compare(DATASET, "2d", folds=FOLDS, n_resamples=RESAMPLES, no_baseline="baseline X has no results")
    assert none.baseline is None and none.table["p"].isna().all()
    assert "No paired statistics: baseline X has no results." in markdown(none)


def test_robustness_report_pairs_cases_averaged_over_folds_and_sets(tmp_path, monkeypatch):
    from nnunet_lite.robustness.report import build_report, markdown

    raw, results = tmp_path / "raw", tmp_path / "results"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_results", str(results))
    sets = ["clean", "noise_s1", "noise_s5", "blur_s3"]
    cases = [f"case_{i}" for i in range(8)]
    set_dir = raw / DATASET / "robustness" / "generic"
    set_dir.mkdir(parents=True)
    (set_dir / "manifest.json").write_text(json.dumps({"id": "m1", "set": "generic", "sets": sets, "cases": cases}))
    folds = ["0", "1", "2"]
    dice = {}
    for trainer, seed in ((BASE, 5), (LITE, 6)):
        rng = np.random.default_rng(seed)
        folder = model_folder(results, trainer)
        for fold in folds:
            for sub in sets:
                low = 0.6 if sub == "clean" else 0.2
                scores = {c: float(rng.uniform(low, 0.95)) for c in cases}
                dice[trainer, fold, sub] = dict(zip(cases, rounded(scores.values()), strict=True))
                out = folder / "robustness" / "generic" / f"fold_{fold}" / sub
                write_summary(out / "summary.json", scores)
                (out / "robustness.json").write_text(json.dumps({"manifest": "m1", "seconds_predict": 1.0}))
    report = build_report(DATASET, "2d", [BASE, LITE], folds=folds, n_resamples=RESAMPLES)
    table = report.table.set_index("model")

    def per_case(trainer: str, subs: list[str]) -> np.ndarray:  # averaged over folds and the given sets
        return np.array([np.mean([dice[trainer, f, s][c] for f in folds for s in subs]) for c in cases])

    corrupted = sets[1:]
    diff = per_case(LITE, corrupted) - per_case(BASE, corrupted)
    assert table.loc[LITE, "n_pairs"] == 8 and table.loc[LITE, "n_cases"] == 8
    assert table.loc[LITE, "p"] == pytest.approx(wilcoxon(diff).pvalue)
    drop = per_case(LITE, ["clean"]) - per_case(LITE, corrupted)
    assert table.loc[LITE, "drop_n_cases"] == 8 and table.loc[LITE, "drop_p"] == pytest.approx(wilcoxon(drop).pvalue)
    assert (report.per_set["n_cases"] == 8).all()
    fold_corrupted = [np.mean([np.mean(list(dice[LITE, f, s].values())) for s in corrupted]) for f in folds]
    assert table.loc[LITE, "corrupted_dice_fold_std"] == pytest.approx(np.std(fold_corrupted, ddof=1))
    assert report.shared and "averaged over the folds" in report.notes[0]
    assert "corrupted Dice per fold" in markdown(report)


def test_compare_does_not_import_robustness():
    # statically: no import of the robustness package anywhere in compare.py (lazy imports included)
    tree = ast.parse(Path(compare_module.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ]
    assert not [m for m in imported if "robustness" in m], imported
    # at run time, in a fresh interpreter: compare without robustness, and the robustness report without torch
    code = (
        "import sys\n"
        "import nnunet_lite.comparison.compare\n"
        "assert not [m for m in sys.modules if m.startswith('nnunet_lite.robustness')], 'robustness imported'\n"
        "import nnunet_lite.robustness.report, nnunet_lite.robustness.paths\n"
        "assert 'torch' not in sys.modules, 'torch imported by the robustness report'\n"
        "import nnunet_lite.figure\n"
        "assert 'torch' not in sys.modules, 'torch imported by the figure module'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------------ study report
STUDY = """
name = "owned"
work_dir = "work"
trainers = ["nnUNetTrainerLGMSNet", "nnUNetTrainerAULUNet", "nnUNetTrainerMedLiteNet"]
folds = [0, 1]
baseline = "nnUNetTrainerLGMSNet"

[nnunet]
raw = "work/nnUNet_raw"
preprocessed = "work/nnUNet_preprocessed"
results = "work/nnUNet_results"

[[datasets]]
id = 993
synthetic = { num_train = 10, num_test = 2, seed = 3 }

[budget]
epochs = 1
iterations_per_epoch = 4
val_iterations_per_epoch = 1

[report]
bootstrap = 200
latency = false
"""


@pytest.fixture
def study(tmp_path, monkeypatch):
    pytest.importorskip("tomllib", reason="nnunet_lite study needs Python >= 3.11")
    from nnunet_lite.study.study import Study

    (tmp_path / "study.toml").write_text(STUDY)
    study = Study.load(tmp_path / "study.toml", environ={})
    for key, value in study.environment().items():  # the report sets them; restored after the test
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(compare_module, "model_costs", no_costs)
    # AULUNet and MedLiteNet have results, the configured baseline LGMSNet has none
    results = study.paths["nnUNet_results"]
    name = "Dataset993_SyntheticLesions"
    for trainer, seed in (("nnUNetTrainerAULUNet_1ep4it", 1), ("nnUNetTrainerMedLiteNet_1ep4it", 2)):
        rng = np.random.default_rng(seed)
        folder = model_folder(results, trainer, dataset=name)
        for fold in ("0", "1"):
            scores = {f"case_{fold}{i}": float(rng.uniform(0.4, 0.9)) for i in range(4)}
            write_summary(folder / f"fold_{fold}" / "validation" / "summary.json", scores)
    return study


def test_study_report_says_when_the_baseline_has_no_results(study):
    from nnunet_lite.study.report import write_study_report

    text = write_study_report(study).read_text()
    table = text.split("| model")[1].split("\n\n")[0]
    assert "(p=" not in text, "a p-value against a stand-in baseline"
    assert "MISSING: baseline without results, no paired tests for this dataset" in table
    assert "baseline nnUNetTrainerLGMSNet_1ep4it__nnUNetPlans has no results for this dataset: no paired tests" in text
    assert "Paired against" not in text
    csv = pd.read_csv(study.work_dir / "report" / "Dataset993_SyntheticLesions_2d" / "comparison.csv")
    assert csv["p"].isna().all() and len(csv) == 2


def test_study_report_replaces_only_what_it_owns(study):
    from nnunet_lite.study.report import write_study_report

    report = study.work_dir / "report"
    kept = {}
    for sub in (
        "robustness/Dataset993_SyntheticLesions/2d/robustness.md",
        "figures/Dataset993_SyntheticLesions/2d.png",
    ):
        (report / sub).parent.mkdir(parents=True)
        (report / sub).write_text("written by another workflow rule")
    os.utime(report / "robustness", ns=(1_000_000_000, 1_000_000_000))  # an old mtime: any rewrite would show
    paths = [
        report / "robustness",
        report / "figures",
        report / "robustness/Dataset993_SyntheticLesions/2d/robustness.md",
    ]
    paths.append(report / "figures/Dataset993_SyntheticLesions/2d.png")
    kept = {p: p.stat().st_mtime_ns for p in paths}
    compare_folder = report / "Dataset993_SyntheticLesions_2d"
    for _ in range(2):
        write_study_report(study)
        (compare_folder / "stale.txt").write_text("from an earlier report")
    write_study_report(study)
    assert {p: p.stat().st_mtime_ns for p in paths} == kept
    assert (report / "robustness/Dataset993_SyntheticLesions/2d/robustness.md").read_text() == (
        "written by another workflow rule"
    )
    assert (compare_folder / "comparison.md").is_file() and not (compare_folder / "stale.txt").exists()
    assert sorted(p.name for p in report.iterdir()) == [
        "Dataset993_SyntheticLesions_2d",
        "figures",
        "robustness",
        "study_report.md",
    ]
