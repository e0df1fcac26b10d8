"""The fair-comparison toolkit (profile, compare, plan-matched, zeroshot) on real nnU-Net outputs.

One module fixture plans a tiny 2D dataset with nnU-Net, writes a 2-fold split (6 validation cases per fold) and trains
two trainers with nnU-Net's own training loop and final validation: nnU-Net's default U-Net on folds 0 and 1, AULUNet
on fold 0 only (so compare must flag the missing fold). Everything else is checked against direct computations.
"""

import contextlib
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import wilcoxon

from nnunet_lite.cli import main
from nnunet_lite.comparison.stats import bootstrap_mean_ci, holm, pooled_dice_iou
from nnunet_lite.profiling import count_flops, count_parameters, measure_latency, peak_forward_memory

DATASET, TARGET, INCOMPATIBLE = 911, 912, 913
BASELINE, LITE = "nnUNetTrainer_cmp", "nnUNetTrainerAULUNet_cmp"

# Even shorter than conftest's test trainers: 2 epochs x 4 iterations; a fold costs mostly nnU-Net's validation.
CMP_TRAINERS = """
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lite.trainers import nnUNetTrainerAULUNet


class nnUNetTrainerAULUNet_cmp(nnUNetTrainerAULUNet):
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_iterations_per_epoch": 1}


class nnUNetTrainer_cmp(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 2, 4, 1
"""


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return 2 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())


def cli(*args: str) -> int:
    return main([str(a) for a in args])


# ----------------------------------------------------------------------------------------------------- unit tests
def test_single_convolution_profile_matches_hand_computation():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
    shape = (1, 3, 16, 16)
    assert count_parameters(conv) == 8 * 3 * 3 * 3 + 8
    macs = 8 * 16 * 16 * (3 * 3 * 3)  # one multiply-add per output element and kernel weight
    assert count_flops(conv, shape) == 2 * macs
    assert peak_forward_memory(conv, shape) == 8 * 16 * 16 * 4  # the fp32 output is the only new tensor
    latency = measure_latency(conv, shape, threads=1, min_run_time=0.05, warmup=1)
    assert latency.median_s > 0 and latency.threads == 1 and latency.precision == "fp32"


class Sleeper(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.03)
        return x


def test_latency_measures_a_known_duration():
    latency = measure_latency(Sleeper(), (1, 1), threads=1, min_run_time=0.4, warmup=1)
    # a 30 ms forward: the median is at least that (in seconds) and, even on a busy CPU, not five times more; the
    # spread of the timed blocks is scheduling jitter, well below the duration itself
    assert 0.03 <= latency.median_s < 0.15, latency
    # blocked_autorange times blocks of 1 or ~7 forwards (its own choice): 2 to ~14 blocks in 0.4 s
    assert 0 <= latency.iqr_s < latency.median_s and latency.runs >= 2, latency


def test_statistics_helpers():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([0.01, float("nan")])[1])
    assert pooled_dice_iou([10, 0], [5, 1], [5, 1]) == pytest.approx((20 / 32, 10 / 22))
    low, high = bootstrap_mean_ci([0.1, 0.2, 0.3, 0.4], n_resamples=2000, seed=1)
    assert low < 0.25 < high and (low, high) == bootstrap_mean_ci([0.1, 0.2, 0.3, 0.4], n_resamples=2000, seed=1)


# --------------------------------------------------------------------------------------- real nnU-Net results
@contextlib.contextmanager
def fast_worker_pools():
    """nnU-Net starts its worker pools with ``multiprocessing.get_context("spawn")``; each pool re-imports torch and
    nnU-Net (seconds on a small CI machine, for a few 64x64 images). Here they come from a forkserver with those
    modules preloaded instead: still fresh processes that never ran torch, so what nnU-Net computes is unchanged."""
    real = multiprocessing.get_context
    forkserver = real("forkserver")
    forkserver.set_forkserver_preload(
        [
            "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
            "nnunetv2.preprocessing.preprocessors.default_preprocessor",
            "nnunetv2.inference.export_prediction",
            "nnunetv2.evaluation.evaluate_predictions",
        ]
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            multiprocessing, "get_context", lambda method=None: forkserver if method == "spawn" else real(method)
        )
        yield


@pytest.fixture(scope="module")
def trained(nnunet_env, tmp_path_factory):
    """Dataset 911 planned and trained (baseline folds 0+1, AULUNet fold 0), plus zero-shot targets 912 and 913."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_lite.synthetic import make_lesion_dataset_2d

    ext = tmp_path_factory.mktemp("cmp_trainers")
    (ext / "nnunet_lite_cmp_trainers.py").write_text(CMP_TRAINERS)
    raw_root = Path(os.environ["nnUNet_raw"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add contention on a shared 2-core machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_extTrainer", os.pathsep.join([os.environ["nnUNet_extTrainer"], str(ext)]))
        raw = make_lesion_dataset_2d(raw_root, DATASET, num_train=12, num_test=3, seed=3)
        make_lesion_dataset_2d(raw_root, TARGET, num_train=1, num_test=3, seed=7, name="SyntheticLesionsB")
        other = make_lesion_dataset_2d(raw_root, INCOMPATIBLE, num_train=1, num_test=1, seed=8, name="GreyScans")
        other_json = json.loads((other / "dataset.json").read_text())
        other_json["channel_names"] = {"0": "zscore"}
        (other / "dataset.json").write_text(json.dumps(other_json))

        with fast_worker_pools():
            fingerprint = DatasetFingerprintExtractor(DATASET, num_processes=1)
            fingerprint.num_foreground_voxels_for_intensitystats = 1e5  # nnU-Net samples 1e8 (only for CT stats)
            fingerprint.run()
            plan_experiments([DATASET])
            preprocess([DATASET], configurations=("2d",), num_processes=(1,))
            cases = sorted(p.name.removesuffix(".png") for p in (raw / "labelsTr").glob("*.png"))
            splits = [{"train": cases[6:], "val": cases[:6]}, {"train": cases[:6], "val": cases[6:]}]
            (Path(os.environ["nnUNet_preprocessed"]) / raw.name / "splits_final.json").write_text(json.dumps(splits))
            for trainer_name, folds in ((BASELINE, (0, 1)), (LITE, (0,))):
                for fold in folds:
                    trainer = get_trainer_from_args(str(DATASET), "2d", fold, trainer_name, device=torch.device("cpu"))
                    trainer.run_training()
                    trainer.perform_actual_validation()
        yield raw
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def results(trained):
    return Path(os.environ["nnUNet_results"]) / trained.name


@pytest.fixture(scope="module")
def zeroshot(trained, results):
    assert cli("zeroshot", "--source-dataset", DATASET, "--target-dataset", TARGET, "-tr", BASELINE, "-f", "0") == 0
    return results / f"{BASELINE}__nnUNetPlans__2d" / "zeroshot" / "Dataset912_SyntheticLesionsB" / "fold_0"


def per_case(summary_file: Path) -> dict[str, dict]:
    summary = json.loads(summary_file.read_text())
    return {Path(c["reference_file"]).name: c["metrics"]["1"] for c in summary["metric_per_case"]}


@pytest.mark.slow
def test_zeroshot_evaluates_compatible_target(zeroshot, capsys):
    target_raw = Path(os.environ["nnUNet_raw"]) / "Dataset912_SyntheticLesionsB"
    scores = per_case(zeroshot / "summary.json")
    assert len(scores) == 3
    for name, metrics in scores.items():
        pred = np.asarray(Image.open(zeroshot / name)) == 1
        ref = np.asarray(Image.open(target_raw / "labelsTs" / name)) == 1
        assert metrics["Dice"] == pytest.approx(dice(pred, ref))
    assert json.loads((zeroshot / "zeroshot.json").read_text())["checkpoint"] == "checkpoint_final.pth"
    # a second run must not silently replace the results
    assert cli("zeroshot", "--source-dataset", DATASET, "--target-dataset", TARGET, "-tr", BASELINE) == 1
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_zeroshot_refuses_incompatible_pair(trained, capsys):
    assert cli("zeroshot", "--source-dataset", DATASET, "--target-dataset", INCOMPATIBLE, "-tr", BASELINE) == 1
    err = capsys.readouterr().err
    assert "Dataset911_SyntheticLesions" in err and "Dataset913_GreyScans" in err
    assert "3 input channels" in err and "vs 1" in err


@pytest.mark.slow
def test_zeroshot_ensemble_is_nnunets_fold_ensemble(trained, results, tmp_path, capsys):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_lite.comparison.compare import run_compare

    args = ["zeroshot", "--source-dataset", DATASET, "--target-dataset", TARGET, "-tr", BASELINE, "--device", "cpu"]
    assert cli(*args, "-f", "0", "--ensemble") == 1
    assert "--ensemble averages several folds' predictions; got -f 0" in capsys.readouterr().err
    assert cli(*args, "-f", "0", "1", "--ensemble") == 0
    assert "ensemble of folds 0 1" in capsys.readouterr().out
    target = "Dataset912_SyntheticLesionsB"
    out = results / f"{BASELINE}__nnUNetPlans__2d" / "zeroshot" / target / "ensemble"
    info = json.loads((out / "zeroshot.json").read_text())
    assert info["fold"] == "ensemble" and info["folds"] == ["0", "1"] and info["num_cases"] == 3

    # the same pixels as nnU-Net's predictor given both folds (it averages the folds' softmax)
    target_raw = Path(os.environ["nnUNet_raw"]) / target
    own = tmp_path / "own"
    own.mkdir()
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(results / f"{BASELINE}__nnUNetPlans__2d"), use_folds=(0, 1))
    predictor.predict_from_files_sequential(str(target_raw / "imagesTs"), str(own))
    scores = per_case(out / "summary.json")
    assert sorted(scores) == sorted(p.name for p in own.glob("*.png"))
    for name, metrics in scores.items():
        pred = np.asarray(Image.open(out / name))
        np.testing.assert_array_equal(pred, np.asarray(Image.open(own / name)))
        ref = np.asarray(Image.open(target_raw / "labelsTs" / name)) == 1
        assert metrics["Dice"] == pytest.approx(dice(pred == 1, ref), nan_ok=True)

    # compare: one prediction per case, its own source
    source = f"zero-shot {target} (ensemble)"
    comparison = run_compare(DATASET, "2d", trainers=[BASELINE], folds=["0", "1"], stats_on=source, n_resamples=200)
    row = comparison.table.set_index("model").loc[BASELINE]
    assert row[f"{source}: n_cases"] == 3 and source not in comparison.shared
    assert row[f"{source}: Dice_mean_cases"] == pytest.approx(np.nanmean([m["Dice"] for m in scores.values()]))


@pytest.mark.slow
def test_compare_table_folds_statistics_and_pooled_dice(results, zeroshot, trained, tmp_path):
    # test-set predictions of the baseline, named after the trainer so that compare can attribute them
    pred = tmp_path / BASELINE
    labels = trained / "labelsTs"
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    pred.mkdir()
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(results / f"{BASELINE}__nnUNetPlans__2d"), use_folds=(0,))
    predictor.predict_from_files_sequential(str(trained / "imagesTs"), str(pred))

    out = tmp_path / "cmp"
    args = ["compare", "-d", DATASET, "-c", "2d", "-f", "0", "1", "--baseline", BASELINE, "-o", out]
    assert cli(*args, "--test-folder", f"{pred}={labels}", "--bootstrap", 2000) == 0
    table = pd.read_csv(out / "comparison.csv", dtype={"folds": str, "folds_missing": str}).set_index("model")
    assert set(table.index) == {BASELINE, LITE}
    assert str(table.loc[BASELINE, "folds"]) == "0 1" and pd.isna(table.loc[BASELINE, "folds_missing"])
    assert str(table.loc[LITE, "folds"]) == "0" and str(table.loc[LITE, "folds_missing"]) == "1"
    assert table.loc[BASELINE, "n_cases"] == 12 and table.loc[LITE, "n_cases"] == 6
    assert "0 (MISSING 1)" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    folds = {
        f: per_case(results / f"{BASELINE}__nnUNetPlans__2d" / f"fold_{f}" / "validation" / "summary.json")
        for f in (0, 1)
    }
    base = [m for f in (0, 1) for m in folds[f].values()]
    assert table.loc[BASELINE, "Dice_mean_cases"] == pytest.approx(np.mean([m["Dice"] for m in base]))
    fold_means = [np.mean([m["Dice"] for m in folds[f].values()]) for f in (0, 1)]
    assert table.loc[BASELINE, "Dice_mean_folds"] == pytest.approx(np.mean(fold_means))
    assert table.loc[BASELINE, "Dice_std_folds"] == pytest.approx(np.std(fold_means, ddof=1))
    tp, fp, fn = (sum(m[k] for m in base) for k in ("TP", "FP", "FN"))
    assert table.loc[BASELINE, "Dice_pooled"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert table.loc[BASELINE, "IoU_pooled"] == pytest.approx(tp / (tp + fp + fn))

    # paired test over the cases both have (fold 0 only), against scipy directly
    lite = per_case(results / f"{LITE}__nnUNetPlans__2d" / "fold_0" / "validation" / "summary.json")
    diff = [lite[c]["Dice"] - folds[0][c]["Dice"] for c in sorted(lite)]
    assert table.loc[LITE, "n_pairs"] == 6
    assert table.loc[LITE, "delta_dice"] == pytest.approx(np.mean(diff))
    assert table.loc[LITE, "p"] == pytest.approx(wilcoxon(diff).pvalue)
    assert table.loc[LITE, "p_holm"] == pytest.approx(wilcoxon(diff).pvalue)  # one comparison: Holm = raw
    assert table.loc[LITE, "delta_ci_low"] <= np.mean(diff) <= table.loc[LITE, "delta_ci_high"]

    # cost columns: parameters of the planned networks, epoch time from the checkpoint logging
    assert table.loc[LITE, "params"] == 28_642 and table.loc[BASELINE, "params"] > 1_000_000
    assert table.loc[LITE, "flops_input"] == "1x3x64x64" and table.loc[LITE, "flops"] > 0
    log = torch.load(results / f"{LITE}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth", weights_only=False)
    epoch_times = np.subtract(log["logging"]["epoch_end_timestamps"], log["logging"]["epoch_start_timestamps"])
    assert table.loc[LITE, "seconds_per_epoch"] == pytest.approx(epoch_times.mean())

    # test set and zero-shot columns
    test_dice = [
        dice(np.asarray(Image.open(pred / p.name)) == 1, np.asarray(Image.open(p)) == 1)
        for p in sorted(labels.glob("*.png"))
    ]
    assert table.loc[BASELINE, "test: Dice_mean_cases"] == pytest.approx(np.mean(test_dice))
    assert table.loc[BASELINE, "test: n_cases"] == 3 and pd.isna(table.loc[LITE, "test: n_cases"])
    zs = per_case(zeroshot / "summary.json")
    column = "zero-shot Dataset912_SyntheticLesionsB: Dice_mean_cases"
    assert table.loc[BASELINE, column] == pytest.approx(np.mean([m["Dice"] for m in zs.values()]))

    assert cli(*args) == 1  # the output folder exists: no silent overwrite

    # one model alone: its table, and no empty statistics table
    single = tmp_path / "single"
    assert cli("compare", "-d", DATASET, "-c", "2d", "-f", "0", "-tr", LITE, "-o", single) == 0
    text = (single / "comparison.md").read_text()
    assert f"| **{LITE}** |" in text and "No paired statistics" in text and "Wilcoxon W" not in text


@pytest.mark.slow
def test_profile_dataset_plans_shape_and_predictor(trained, tmp_path):
    report = tmp_path / "profile.json"
    assert (
        cli(
            "profile",
            "-d",
            DATASET,
            "-c",
            "2d",
            "-tr",
            BASELINE,
            LITE,
            "--threads",
            "1",
            "--min-run-time",
            "0.05",
            "--input-folder",
            trained / "imagesTs",
            "--num-cases",
            "1",
            "--json",
            report,
        )
        == 0
    )
    profiles = {p["trainer"]: p for p in json.loads(report.read_text())["profiles"]}
    lite = profiles[LITE]
    assert lite["params"] == lite["trainable_params"] == 28_642
    assert lite["input_shape"] == [1, 3, 64, 64] and lite["macs"] == lite["flops"] / 2
    assert lite["latency"][0]["threads"] == 1 and lite["latency"][0]["median_s"] > 0
    assert lite["peak_memory_bytes"] > 0
    assert lite["predictor"]["cases"] == 1 and "fold_0" in lite["predictor"]["weights"]
    assert lite["predictor"]["seconds_per_case_tta"] > 0 and lite["predictor"]["seconds_per_case_no_tta"] > 0

    # an explicit shape uses nnU-Net's default topology: for 64x64 the same network as the dataset's plans
    shape_report = tmp_path / "shape.json"
    assert (
        cli(
            "profile",
            "--shape",
            1,
            3,
            64,
            64,
            "--num-classes",
            2,
            "-tr",
            "nnUNetTrainer",
            "--skip-latency",
            "--skip-memory",
            "--json",
            shape_report,
        )
        == 0
    )
    by_shape = json.loads(shape_report.read_text())["profiles"][0]
    assert by_shape["params"] == profiles[BASELINE]["params"] and by_shape["flops"] == profiles[BASELINE]["flops"]


@pytest.mark.slow
def test_plan_matched_parameter_count_and_nnunet_trainer(trained, capsys):
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_lite.comparison.matched_plans import verify
    from nnunet_lite.comparison.nnunet_io import build_network, find_trainer_class, load_plans

    assert cli("plan-matched", "-d", DATASET, "-c", "2d", "--match", "nnUNetTrainerLGMSNet", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    plans, dataset_json, _ = load_plans(trained.name)
    target, _ = build_network(find_trainer_class("nnUNetTrainerLGMSNet"), plans, "2d", dataset_json)
    target_params = count_parameters(target)
    assert info["plans_name"] == "nnUNetPlans_matched_lgmsnet" and info["target_params"] == target_params
    assert verify(info["plans_file"], "2d") == info["params"]
    assert abs(info["params"] - target_params) <= 0.1 * target_params

    # nnU-Net's own trainer accepts the plans and reuses the existing preprocessed data (same data_identifier)
    trainer = get_trainer_from_args(
        str(DATASET), "2d", 0, BASELINE, "nnUNetPlans_matched_lgmsnet", device=torch.device("cpu")
    )
    trainer.initialize()
    assert abs(count_parameters(trainer.network) - target_params) <= 0.1 * target_params
    assert Path(trainer.preprocessed_dataset_folder).name == "nnUNetPlans_2d"
    assert Path(trainer.preprocessed_dataset_folder).is_dir()

    assert cli("plan-matched", "-d", DATASET, "-c", "2d", "--match", "nnUNetTrainerLGMSNet") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli("plan-matched", "-d", DATASET, "-c", "2d", "--features", 8, "--json") == 0
    assert json.loads(capsys.readouterr().out)["features"][0] == 8
