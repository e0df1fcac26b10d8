"""``nnunet_lite zeroshot``: a model trained on dataset A predicts and is evaluated on dataset B, untouched.

Results go to ``nnUNet_results/<A>/<trainer>__<plans>__<config>/zeroshot/<B>/fold_N/`` (predictions, nnU-Net's
``summary.json`` and ``zeroshot.json``), where ``nnunet_lite compare`` picks them up as a "zero-shot <B>" column
(every fold's model predicts the same cases: compare averages each case over the folds). With ``ensemble`` the folds
predict together, as nnU-Net's fold ensemble (softmax averaged), into ``zeroshot/<B>/ensemble/``: one prediction per
case, compare's "zero-shot <B> (ensemble)" column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_folder
from ..checkpoints import CheckpointError, load_checkpoint
from ..nnunet_env import make_trainers_discoverable
from .nnunet_io import ComparisonError, dataset_name, evaluate_folder, quiet, require_env


def _channels(dataset_json: dict) -> list[str]:
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    return [channels[k] for k in sorted(channels, key=int)]


def _labels(dataset_json: dict) -> dict:
    return {name: tuple(v) if isinstance(v, list) else v for name, v in dataset_json["labels"].items()}


def incompatibilities(source: dict, target: dict) -> list[str]:
    """What keeps a model trained with ``source`` (dataset.json) from being evaluated on ``target``."""
    problems = []
    src_channels, tgt_channels = _channels(source), _channels(target)
    if len(src_channels) != len(tgt_channels):
        problems.append(f"{len(src_channels)} input channels {src_channels} vs {len(tgt_channels)} {tgt_channels}")
    elif src_channels != tgt_channels:
        problems.append(
            f"channel names (which select nnU-Net's normalisation) differ: {src_channels} vs {tgt_channels}"
        )
    if source["file_ending"] != target["file_ending"]:
        problems.append(f"file endings differ: {source['file_ending']} vs {target['file_ending']}")
    src_labels, tgt_labels = _labels(source), _labels(target)
    if sorted(src_labels.values(), key=str) != sorted(tgt_labels.values(), key=str):
        problems.append(f"label values/regions differ: {src_labels} vs {tgt_labels}")
    elif src_labels != tgt_labels:
        problems.append(f"label names differ: {src_labels} vs {tgt_labels}")
    if source.get("regions_class_order") != target.get("regions_class_order"):
        problems.append(
            f"regions_class_order differs: {source.get('regions_class_order')} vs {target.get('regions_class_order')}"
        )
    return problems


def target_folders(raw_target: Path, images: Path | None, labels: Path | None) -> tuple[Path, Path]:
    """Explicit folders, else the target's imagesTs/labelsTs, else imagesTr/labelsTr (all of it is unseen)."""
    if images is not None or labels is not None:
        if images is None or labels is None:
            raise ComparisonError("give both --images and --labels, or neither")
        pairs = [(Path(images), Path(labels))]
    else:
        pairs = [(raw_target / "imagesTs", raw_target / "labelsTs"), (raw_target / "imagesTr", raw_target / "labelsTr")]
    for image_folder, label_folder in pairs:
        if image_folder.is_dir() and label_folder.is_dir() and any(label_folder.iterdir()):
            return image_folder, label_folder
    raise ComparisonError(f"no images/labels folders with labels among {[str(p) for pair in pairs for p in pair]}")


def run_zeroshot(
    source: str | int,
    target: str | int,
    trainer: str,
    configuration: str = "2d",
    folds: Sequence[int | str] = (0,),
    plans_name: str = "nnUNetPlans",
    images: Path | None = None,
    labels: Path | None = None,
    device: str = "auto",
    use_mirroring: bool = True,
    checkpoint: str = "checkpoint_final.pth",
    num_processes: int = 1,
    overwrite: bool = False,
    ensemble: bool = False,
) -> list[dict]:
    """Predicts the target dataset with each fold's model and evaluates it with nnU-Net's per-case metrics.

    Args:
        source: dataset the model was trained on (ID or name).
        target: dataset to evaluate on (ID or name; its raw folder and dataset.json are used).
        trainer: trainer name; configuration and plans_name select the model folder.
        folds: folds to evaluate separately (not ensembled), so ``compare`` can report mean ± std over folds.
        images: image folder to predict (default imagesTs of the target if it has labelsTs, else imagesTr).
        labels: reference segmentations for ``images``.
        device: "cpu", "cuda" or "auto"; use_mirroring: test-time mirroring as nnU-Net's default.
        checkpoint: checkpoint file name in each fold folder (final by default: never select on the target).
        num_processes: nnU-Net preprocessing/export workers; 1 predicts sequentially in this process.
        overwrite: replace earlier results for the same model, target and fold.
        ensemble: predict with all ``folds`` at once (nnU-Net's fold ensemble) into ``zeroshot/<B>/ensemble``.

    Returns:
        The ``foreground_mean`` and case count per fold (one entry, fold "ensemble", with ``ensemble``).
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    src, tgt = dataset_name(source), dataset_name(target)
    if src == tgt:
        raise ComparisonError(f"source and target are the same dataset ({src}); use nnU-Net's own evaluation")
    model = require_env("nnUNet_results") / src / f"{trainer}__{plans_name}__{configuration}"
    if not model.is_dir():
        found = sorted(p.name for p in model.parent.glob("*__*__*")) if model.parent.is_dir() else []
        raise ComparisonError(f"no model folder {model} (found: {found or 'none'})")
    raw_target = require_env("nnUNet_raw") / tgt
    if not (raw_target / "dataset.json").is_file():
        raise ComparisonError(f"{raw_target / 'dataset.json'} not found: the target must be an nnU-Net raw dataset")
    source_json, target_json = load_json(str(model / "dataset.json")), load_json(str(raw_target / "dataset.json"))
    problems = incompatibilities(source_json, target_json)
    if problems:
        raise ComparisonError(
            f"a {trainer} model trained on {src} cannot be evaluated on {tgt}: " + "; ".join(problems)
        )
    image_folder, label_folder = target_folders(raw_target, images, labels)
    fold_names = [str(f) for f in folds]
    if ensemble and len(set(fold_names)) < 2:
        raise ComparisonError(f"--ensemble averages several folds' predictions; got -f {' '.join(fold_names)}")
    absent = [f for f in fold_names if not (model / f"fold_{f}" / checkpoint).is_file()]
    if absent:
        trained = sorted(p.parent.name for p in model.glob(f"fold_*/{checkpoint}"))
        raise ComparisonError(f"{model.name} has no {checkpoint} for fold(s) {absent} (trained: {trained or 'none'})")
    for f in fold_names:  # safely first: nnU-Net's loader below unpickles with weights_only=False
        try:
            load_checkpoint(model / f"fold_{f}" / checkpoint)
        except CheckpointError as e:
            raise ComparisonError(str(e)) from None
    if ensemble:  # one run with every fold's model: (label of the output, folds it uses)
        runs = [("ensemble", tuple(fold_names))]
    else:
        runs = [(f, (f,)) for f in fold_names]
    outputs = [model / "zeroshot" / tgt / (name if ensemble else f"fold_{name}") for name, _ in runs]
    existing = [str(o) for o in outputs if o.exists()]
    if existing and not overwrite:
        raise ComparisonError(f"{existing} exist; pass --overwrite to replace them")

    make_trainers_discoverable()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    plans = load_json(str(model / "plans.json"))
    results = []
    for (fold, use_folds), output in zip(runs, outputs, strict=True):
        with atomic_folder(output, overwrite=overwrite) as tmp, quiet():
            predictor = nnUNetPredictor(
                use_mirroring=use_mirroring,
                perform_everything_on_device=device == "cuda",
                device=torch.device(device),
                allow_tqdm=False,
            )
            predictor.initialize_from_trained_model_folder(
                str(model), use_folds=tuple(f if f == "all" else int(f) for f in use_folds), checkpoint_name=checkpoint
            )
            if num_processes <= 1:
                predictor.predict_from_files_sequential(str(image_folder), str(tmp))
            else:
                predictor.predict_from_files(
                    str(image_folder),
                    str(tmp),
                    num_processes_preprocessing=num_processes,
                    num_processes_segmentation_export=num_processes,
                )
            summary = evaluate_folder(label_folder, tmp, source_json, plans, tmp / "summary.json")
            info = {
                "source_dataset": src,
                "target_dataset": tgt,
                "model_folder": str(model),
                "fold": fold,
                "folds": list(use_folds),
                "checkpoint": checkpoint,
                "images": str(image_folder),
                "labels": str(label_folder),
                "use_mirroring": use_mirroring,
                "num_cases": len(summary["metric_per_case"]),
                "foreground_mean": summary["foreground_mean"],
            }
            (tmp / "zeroshot.json").write_text(json.dumps(info, indent=2) + "\n")
        results.append({**info, "output": str(output)})
    return results
