"""``nnunet_lite robustness run``: every trainer predicts every corrupted set with nnU-Net's predictor.

Results go next to each model, in nnU-Net's results tree::

    nnUNet_results/<dataset>/<trainer>__<plans>__<config>/robustness/<set>/fold_N/<clean | corruption_sK>/
        *.png / *.nii.gz      nnU-Net's predictions
        summary.json          nnU-Net's evaluation (per-case metrics)
        robustness.json       the set's manifest id, timing, checkpoint

A set whose ``robustness.json`` names the current manifest is skipped, so an interrupted run resumes where it stopped;
a set regenerated with ``make --overwrite`` gets a new manifest id and is predicted again.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import atomic_folder
from ..comparison.nnunet_io import ComparisonError, dataset_name, quiet, require_env
from ..nnunet_env import make_trainers_discoverable
from .make import load_manifest
from .paths import model_folder, result_folder  # torch-free home of the result paths (report and figure read them)


def trained_model_folder(dataset: str, trainer: str, plans_name: str, configuration: str) -> Path:
    """:func:`model_folder`, refusing in one line (the closest trained trainer suggested) a trainer without a model
    folder and a folder without nnU-Net's plans.json/dataset.json (e.g. left by a training that never started)."""
    results = require_env("nnUNet_results") / dataset
    if not (results / f"{trainer}__{plans_name}__{configuration}").is_dir():
        found = sorted(p.name for p in results.glob("*__*__*")) if results.is_dir() else []
        same = [name.split("__")[0] for name in found if name.endswith(f"__{plans_name}__{configuration}")]
        close = difflib.get_close_matches(trainer, same, n=1, cutoff=0.6)
        hint = f"; did you mean -tr {close[0]}?" if close else ""
        raise ComparisonError(
            f"unknown trainer {trainer!r}: no model folder {trainer}__{plans_name}__{configuration} in "
            f"{results}{hint} (found: {', '.join(found) or 'none'})"
        )
    model = model_folder(dataset, trainer, plans_name, configuration)
    missing = [name for name in ("plans.json", "dataset.json") if not (model / name).is_file()]
    if missing:
        raise ComparisonError(
            f"{model} lacks {' and '.join(missing)}: not a complete nnU-Net results folder (train it with "
            f"nnUNetv2_train, or remove the folder)"
        )
    return model


def _initialize(predictor, model: Path, fold: str, checkpoint: str) -> None:
    """``initialize_from_trained_model_folder``, with nnU-Net's multi-line "could not find trainer" error (a
    checkpoint of a trainer class that is not importable here) as one line."""
    try:
        predictor.initialize_from_trained_model_folder(
            str(model), use_folds=(int(fold) if fold != "all" else fold,), checkpoint_name=checkpoint
        )
    except RuntimeError as e:
        if "Could not find requested nnunet trainer" not in str(e):
            raise
        name = torch.load(model / f"fold_{fold}" / checkpoint, map_location="cpu", weights_only=False)["trainer_name"]
        raise ComparisonError(
            f"{model / f'fold_{fold}' / checkpoint} was trained with trainer class {name!r}, which nnU-Net cannot "
            f"import here: add the folder that defines it to nnUNet_extTrainer"
        ) from None


def is_done(folder: Path, manifest_id: str, checkpoint: str, use_mirroring: bool) -> bool:
    """A set counts as done only for the same pixels (manifest), checkpoint and mirroring."""
    info_file = folder / "robustness.json"
    if not ((folder / "summary.json").is_file() and info_file.is_file()):
        return False
    info = json.loads(info_file.read_text())
    return (info["manifest"], info["checkpoint"], info["use_mirroring"]) == (manifest_id, checkpoint, use_mirroring)


def evaluate_in_process(labels: Path, predictions: Path, dataset_json: dict, plans: dict, output_file: Path) -> dict:
    """nnU-Net's ``compute_metrics`` per case, with ``compute_metrics_on_folder``'s means and ``summary.json``
    layout, in this process: ``evaluate_folder`` spawns a worker per call (measured 27-38 s per call on 2 busy
    cores), which would dominate a run of dozens of small sets."""
    import numpy as np
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics, save_summary_json
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    ending = dataset_json["file_ending"]
    references = sorted(p.name for p in labels.glob(f"*{ending}"))
    missing = [name for name in references if not (predictions / name).is_file()]
    if missing:
        raise ComparisonError(f"{predictions} lacks predictions for {len(missing)} references: {missing[:5]}")
    reader = determine_reader_writer_from_dataset_json(dataset_json, str(labels / references[0]))()
    label_manager = PlansManager(plans).get_label_manager(dataset_json)
    regions = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    cases = [
        compute_metrics(str(labels / n), str(predictions / n), reader, regions, label_manager.ignore_label)
        for n in references
    ]
    metric_names = list(cases[0]["metrics"][regions[0]])
    means = {r: {m: np.nanmean([c["metrics"][r][m] for c in cases]) for m in metric_names} for r in regions}
    foreground = {m: np.mean([means[r][m] for r in regions if r not in (0, "0")]) for m in metric_names}
    for item in (*cases, means, foreground):
        recursive_fix_for_json_export(item)
    summary = {"metric_per_case": cases, "mean": means, "foreground_mean": foreground}
    save_summary_json(summary, str(output_file))
    return summary


def run_robustness(
    dataset: str | int,
    configuration: str,
    trainers: Sequence[str],
    folds: Sequence[int | str] = (0,),
    plans_name: str = "nnUNetPlans",
    set_name: str | None = None,
    device: str = "auto",
    use_mirroring: bool = True,
    checkpoint: str = "checkpoint_final.pth",
    progress: bool = True,
) -> list[dict]:
    """Predicts and evaluates the clean and every corrupted copy of a set with each trainer and fold.

    Args:
        dataset: dataset ID or name.
        configuration: nnU-Net configuration of the models (e.g. 2d).
        trainers: trainer names; plans_name selects the model folders.
        folds: each fold's model is evaluated separately (not ensembled), as ``zeroshot`` and ``compare`` do. A set
            made ``--from-fold F`` holds fold F's validation cases and may only be predicted by fold F.
        set_name: the corrupted set (default: the dataset's only one).
        device: "cpu", "cuda" or "auto"; use_mirroring: nnU-Net's test-time mirroring.
        checkpoint: checkpoint file in each fold folder.

    Returns:
        One row per (trainer, fold, set): whether it was predicted now or already done, seconds, mean Dice.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    name = dataset_name(dataset)
    manifest = load_manifest(name, set_name)
    set_name, folder = manifest["set"], Path(manifest["folder"])
    fold_names = [str(f) for f in folds]
    if manifest["from_fold"] is not None and fold_names != [str(manifest["from_fold"])]:
        raise ComparisonError(
            f"set {set_name} holds the validation cases of fold {manifest['from_fold']}; the models of other folds "
            f"were trained on them. Use -f {manifest['from_fold']}"
        )
    models = {trainer: trained_model_folder(name, trainer, plans_name, configuration) for trainer in trainers}
    for model in models.values():
        absent = [f for f in fold_names if not (model / f"fold_{f}" / checkpoint).is_file()]
        if absent:
            raise ComparisonError(f"{model.name} has no {checkpoint} for fold(s) {absent}")
    make_trainers_discoverable()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    labels = folder / "labelsTs"
    rows = []
    total = len(models) * len(fold_names) * len(manifest["sets"])
    bar = tqdm(total=total, disable=not progress, desc=f"robustness run {set_name}")
    try:  # the bar ends its line before an error is printed
        for trainer, model in models.items():
            dataset_json, plans = load_json(str(model / "dataset.json")), load_json(str(model / "plans.json"))
            for fold in fold_names:
                predictor = None
                for sub in manifest["sets"]:
                    output = result_folder(model, set_name, fold, sub)
                    row = {"trainer": trainer, "fold": fold, "set": sub, "output": str(output)}
                    if is_done(output, manifest["id"], checkpoint, use_mirroring):
                        info = json.loads((output / "robustness.json").read_text())
                        rows.append({**row, "status": "done before", **info})
                        bar.update()
                        continue
                    if predictor is None:  # one network load per trainer and fold, reused for every set
                        with quiet():
                            predictor = nnUNetPredictor(
                                use_mirroring=use_mirroring,
                                perform_everything_on_device=device == "cuda",
                                device=torch.device(device),
                                allow_tqdm=False,
                            )
                            _initialize(predictor, model, fold, checkpoint)
                    with atomic_folder(output, overwrite=True) as tmp, quiet():
                        started = time.perf_counter()
                        predictor.predict_from_files_sequential(str(folder / sub / "imagesTs"), str(tmp))
                        seconds = time.perf_counter() - started
                        summary = evaluate_in_process(labels, tmp, dataset_json, plans, tmp / "summary.json")
                        info = {
                            "manifest": manifest["id"],
                            "checkpoint": checkpoint,
                            "use_mirroring": use_mirroring,
                            "device": device,
                            "num_cases": len(summary["metric_per_case"]),
                            "seconds_predict": round(seconds, 3),
                            "foreground_mean_dice": summary["foreground_mean"]["Dice"],
                        }
                        (tmp / "robustness.json").write_text(json.dumps(info, indent=2) + "\n")
                    rows.append({**row, "status": "predicted", **info})
                    bar.update()
    finally:
        bar.close()
    return rows
