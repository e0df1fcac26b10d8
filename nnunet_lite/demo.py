"""``nnunet_lite demo``: nnU-Net's full pipeline on a synthetic lesion dataset, lite networks against nnU-Net's default.

Everything happens inside one working folder (its own nnUNet_raw / nnUNet_preprocessed / nnUNet_results), so the
user's datasets are never touched. The steps are exactly nnU-Net's: dataset.json + raw images, fingerprint, plans,
preprocessing, training of fold 0 with each trainer for the same short budget, nnU-Net's validation, prediction of the
held-out test images with ``nnUNetPredictor`` and evaluation with nnU-Net's evaluator.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .nnunet_env import NNUNET_PATH_VARS, make_trainers_discoverable

DEMO_DATASET_ID = 990
DEMO_MARKER = ".nnunet_lite_demo"
DEFAULT_TRAINERS = ("nnUNetTrainerLGMSNet", "nnUNetTrainerMedLiteNet", "nnUNetTrainerAULUNet", "nnUNetTrainer")


@dataclass
class DemoResult:
    trainer: str
    params: int
    train_seconds: float
    seconds_per_epoch: float
    predict_seconds_per_case: float
    dice: float
    iou: float


def _log(message: str) -> None:
    print(f"[nnunet_lite demo] {message}", flush=True)


def prepare_work_dir(work_dir: Path, overwrite: bool) -> None:
    """Creates the demo folder; an existing non-empty folder is replaced only if it is an earlier demo and the user
    said --overwrite."""
    if work_dir.exists() and any(work_dir.iterdir()):
        if not (work_dir / DEMO_MARKER).exists():
            raise FileExistsError(f"{work_dir} exists and is not an nnunet_lite demo folder; choose another --work-dir")
        if not overwrite:
            raise FileExistsError(f"{work_dir} holds an earlier demo run; pass --overwrite to replace it")
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / DEMO_MARKER).write_text("created by nnunet_lite demo\n")


def configure_environment(work_dir: Path) -> None:
    """Points nnU-Net at the demo folder and makes the nnunet_lite trainers discoverable (this process only)."""
    for var in NNUNET_PATH_VARS:
        os.environ[var] = str(work_dir / var)
        (work_dir / var).mkdir(exist_ok=True)
    make_trainers_discoverable()
    # Few, small cases: worker pools cost more than they save on a laptop CPU.
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", str(min(2, os.cpu_count() or 1)))


def plan_and_preprocess(dataset_id: int, num_processes: int) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=("2d",), num_processes=(num_processes,))


def train(trainer_name: str, dataset_id: int, epochs: int, iterations: int, device: str):
    """Trains fold 0 with nnU-Net's own trainer loop and validation; returns the trainer."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(dataset_id), "2d", 0, trainer_name, device=torch.device(device))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = max(1, iterations // 5)
    trainer.run_training()
    trainer.perform_actual_validation()
    return trainer


def predict_and_evaluate(trainer, raw_dataset: Path, out_dir: Path, device: str) -> tuple[float, float, float]:
    """Predicts imagesTs with nnUNetPredictor, evaluates against labelsTs; returns (s/case, Dice, IoU)."""
    import torch
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2, load_summary_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device(device), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(trainer.output_folder_base, use_folds=(0,))
    cases = sorted((raw_dataset / "imagesTs").glob("*_0000.png"))
    start = time.perf_counter()
    predictor.predict_from_files(
        str(raw_dataset / "imagesTs"), str(out_dir), num_processes_preprocessing=1, num_processes_segmentation_export=1
    )
    seconds_per_case = (time.perf_counter() - start) / max(1, len(cases))
    compute_metrics_on_folder2(
        str(raw_dataset / "labelsTs"),
        str(out_dir),
        str(raw_dataset / "dataset.json"),
        os.path.join(trainer.output_folder_base, "plans.json"),
        str(out_dir / "summary.json"),
        num_processes=1,
    )
    summary = load_summary_json(str(out_dir / "summary.json"))
    return seconds_per_case, summary["foreground_mean"]["Dice"], summary["foreground_mean"]["IoU"]


def format_table(results: list[DemoResult]) -> str:
    header = ("trainer", "params", "train s", "s/epoch", "predict s/case", "test Dice", "test IoU")
    rows = [
        (
            r.trainer,
            f"{r.params:,}",
            f"{r.train_seconds:.0f}",
            f"{r.seconds_per_epoch:.1f}",
            f"{r.predict_seconds_per_case:.2f}",
            f"{r.dice:.3f}",
            f"{r.iou:.3f}",
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in (header, *rows)]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# 200 iterations per trainer: about 6 minutes in all on an idle 2-core CPU (planning and prediction included)
DEFAULT_EPOCHS = 10
DEFAULT_ITERATIONS = 20


def run_demo(
    work_dir: Path,
    trainers: tuple[str, ...] = DEFAULT_TRAINERS,
    epochs: int = DEFAULT_EPOCHS,
    iterations: int = DEFAULT_ITERATIONS,
    num_train: int = 60,
    num_test: int = 12,
    device: str = "auto",
    overwrite: bool = False,
    seed: int = 0,
) -> list[DemoResult]:
    """Runs the whole demo; returns one result per trainer and writes demo_results.{json,md} into ``work_dir``."""
    import torch

    from .synthetic import make_lesion_dataset_2d

    work_dir = Path(work_dir).resolve()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # what nnUNetv2_train -device cpu does
    prepare_work_dir(work_dir, overwrite)
    configure_environment(work_dir)

    _log(f"1/4 writing {num_train} training and {num_test} test images to {work_dir / 'nnUNet_raw'}")
    raw = make_lesion_dataset_2d(work_dir / "nnUNet_raw", DEMO_DATASET_ID, num_train, num_test, seed=seed)
    _log("2/4 nnU-Net fingerprint, plans and preprocessing (2d)")
    plan_and_preprocess(DEMO_DATASET_ID, num_processes=int(os.environ["nnUNet_def_n_proc"]))

    results = []
    for name in trainers:
        _log(f"3/4 training {name}: {epochs} epochs x {iterations} iterations on {device}, fold 0")
        start = time.perf_counter()
        trainer = train(name, DEMO_DATASET_ID, epochs, iterations, device)
        train_seconds = time.perf_counter() - start
        timestamps = trainer.logger.get_checkpoint()  # the local logger's per-epoch lists
        epoch_times = [
            e - s
            for s, e in zip(timestamps["epoch_start_timestamps"], timestamps["epoch_end_timestamps"], strict=False)
        ]
        _log(f"4/4 predicting and evaluating the {num_test} test images with {name}")
        per_case, dice, iou = predict_and_evaluate(trainer, raw, work_dir / "predictions" / name, device)
        params = sum(p.numel() for p in trainer.network.parameters())
        results.append(
            DemoResult(name, params, train_seconds, sum(epoch_times) / max(1, len(epoch_times)), per_case, dice, iou)
        )

    table = format_table(results)
    (work_dir / "demo_results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (work_dir / "demo_results.md").write_text(table + "\n")
    print()
    print(table)
    for r in results:
        if r.dice < 0.1:
            print(
                f"\nNote: {r.trainer} predicted (almost) no foreground within {epochs} x {iterations} iterations. "
                "Tiny networks can need more iterations under nnU-Net's SGD recipe (see the README section "
                "'AULUNet and nnU-Net's recipe'); rerun with more --epochs, or compare its _paper trainer."
            )
    print(
        f"\nResults tree: {work_dir / 'nnUNet_results'} (nnU-Net layout; e.g. nnUNetv2_find_best_configuration "
        f"{DEMO_DATASET_ID} -c 2d -f 0 -tr {' '.join(trainers)} works on it with the environment of this demo)"
    )
    return results
