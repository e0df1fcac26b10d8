"""``nnunet_lite compare``: per-case statistics of nnU-Net results trees, with cost next to accuracy.

Reads ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/fold_N/validation/summary.json`` (nnU-Net's
evaluation of the final checkpoint on each fold's validation cases), optional test-set prediction folders (evaluated
here with nnU-Net's per-case metrics) and zero-shot evaluations written by ``nnunet_lite zeroshot``. One long table
holds every (model, source, fold, case, label) score; everything else is a group-by of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .nnunet_io import (
    ComparisonError,
    ModelFolder,
    build_network,
    dataset_name,
    evaluate_folder,
    find_model_folders,
    find_trainer_class,
)
from .stats import bootstrap_mean_ci, holm, pooled_dice_iou, wilcoxon_signed_rank

CV = "cv"


@dataclass
class Comparison:
    """Everything ``compare`` computed; ``report.write_report`` renders it."""

    dataset: str
    configuration: str
    models: list[ModelFolder]
    expected_folds: list[str]
    baseline: ModelFolder | None
    stats_on: str
    cases: pd.DataFrame  # long per-case table
    table: pd.DataFrame  # one row per model
    label_table: pd.DataFrame  # one row per (model, source, label)
    notes: list[str] = field(default_factory=list)


def parse_test_folder(spec: str) -> tuple[Path, Path]:
    """``PRED=LABELS`` -> two existing folders."""
    if spec.count("=") != 1:
        raise ComparisonError(f"--test-folder expects PREDICTIONS=LABELS, got {spec!r}")
    pred, labels = (Path(p).expanduser() for p in spec.split("="))
    for folder in (pred, labels):
        if not folder.is_dir():
            raise ComparisonError(f"--test-folder {spec}: {folder} is not a folder")
    return pred, labels


def match_model(name: str, models: Sequence[ModelFolder]) -> ModelFolder:
    """The model called ``name`` (trainer, trainer__plans, folder name or table label)."""
    exact = [m for m in models if name in (m.identifier, m.path.name, m.label)]
    by_trainer = [m for m in models if m.trainer == name]
    found = exact or by_trainer
    if len(found) != 1:
        known = ", ".join(m.identifier for m in models)
        what = "matches several models" if found else "matches no model"
        raise ComparisonError(f"{name!r} {what} (models: {known}); use TRAINER__PLANS")
    return found[0]


def label_names(dataset_json: dict) -> dict:
    """nnU-Net label or region key (as in summary.json after ``load_summary_json``) -> label name."""
    return {
        tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value): name
        for name, value in dataset_json["labels"].items()
    }


def summary_rows(summary_file: Path, model: str, source: str, fold: str, names: dict, ending: str) -> list[dict]:
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    rows = []
    for case in load_summary_json(str(summary_file))["metric_per_case"]:
        case_id = Path(case["reference_file"]).name.removesuffix(ending)
        for key, metrics in case["metrics"].items():
            rows.append(
                {
                    "model": model,
                    "source": source,
                    "fold": fold,
                    "case": case_id,
                    "label": names.get(key, str(key)),
                    **{m: float(metrics[m]) for m in ("Dice", "IoU", "TP", "FP", "FN")},
                }
            )
    return rows


def load_json(path: Path) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_json as _load

    return _load(str(path))


def collect_cases(
    models: Sequence[ModelFolder],
    folds: Sequence[str],
    tests: Sequence[tuple[ModelFolder, Path, Path]],
    evaluation_folder: Path | None,
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The long per-case table and, per model label, the expected folds that lack a validation summary."""
    rows, missing = [], {}
    test_labels = sorted({str(labels) for _, _, labels in tests})
    for model in models:
        dataset_json = load_json(model.path / "dataset.json")
        names, ending = label_names(dataset_json), dataset_json["file_ending"]
        missing[model.label] = []
        for fold in folds:
            summary = model.path / f"fold_{fold}" / "validation" / "summary.json"
            if summary.is_file():
                rows += summary_rows(summary, model.label, CV, fold, names, ending)
            else:
                missing[model.label].append(fold)
        for summary in sorted((model.path / "zeroshot").glob("*/fold_*/summary.json")):
            target, fold = summary.parent.parent.name, summary.parent.name.removeprefix("fold_")
            rows += summary_rows(summary, model.label, f"zero-shot {target}", fold, names, ending)
        for test_model, pred, labels in tests:
            if test_model != model:
                continue
            source = "test" if len(test_labels) == 1 else f"test {labels.parent.name}/{labels.name}"
            out = evaluation_folder / f"{model.identifier}__{len(rows)}.json" if evaluation_folder else None
            evaluate_folder(labels, pred, dataset_json, load_json(model.path / "plans.json"), out)
            rows += summary_rows(out, model.label, source, "test", names, ending)
    columns = ["model", "source", "fold", "case", "label", "Dice", "IoU", "TP", "FP", "FN"]
    return pd.DataFrame(rows, columns=columns), missing


def per_case_foreground(cases: pd.DataFrame) -> pd.DataFrame:
    """One Dice/IoU per (model, source, fold, case): the mean over foreground labels (NaNs ignored, like nnU-Net)."""
    return cases.groupby(["model", "source", "fold", "case"], as_index=False, sort=False)[["Dice", "IoU"]].mean()


def describe(values: pd.Series) -> tuple[float, float]:
    values = values.dropna()
    return (float(values.mean()), float(values.std())) if len(values) else (float("nan"), float("nan"))


def aggregate(cases: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (model, source, label) and per (model, source) summaries: mean/std over cases and over folds, pooled."""
    label_rows = []
    for (model, source, label), group in cases.groupby(["model", "source", "label"], sort=False):
        pooled = pooled_dice_iou(group["TP"], group["FP"], group["FN"])
        row = {"model": model, "source": source, "label": label, "n_cases": int(group["Dice"].notna().sum())}
        for metric, pooled_value in zip(("Dice", "IoU"), pooled, strict=True):
            row[f"{metric}_mean_cases"], row[f"{metric}_std_cases"] = describe(group[metric])
            row[f"{metric}_mean_folds"], row[f"{metric}_std_folds"] = describe(group.groupby("fold")[metric].mean())
            row[f"{metric}_pooled"] = pooled_value
        label_rows.append(row)
    labels = pd.DataFrame(label_rows)
    foreground_rows = []
    fg = per_case_foreground(cases)
    for (model, source), group in fg.groupby(["model", "source"], sort=False):
        per_label = labels[(labels["model"] == model) & (labels["source"] == source)]
        row = {
            "model": model,
            "source": source,
            "folds": sorted(group["fold"].unique().tolist()),
            "n_cases": int(group["Dice"].notna().sum()),
        }
        for metric in ("Dice", "IoU"):
            row[f"{metric}_mean_cases"], row[f"{metric}_std_cases"] = describe(group[metric])
            row[f"{metric}_mean_folds"], row[f"{metric}_std_folds"] = describe(group.groupby("fold")[metric].mean())
            row[f"{metric}_pooled"] = float(per_label[f"{metric}_pooled"].mean())  # mean over labels, like nnU-Net
        foreground_rows.append(row)
    return labels, pd.DataFrame(foreground_rows)


def paired_statistics(
    cases: pd.DataFrame, baseline: str, source: str, n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Per model against ``baseline`` on the (fold, case) pairs both have in ``source``: mean Dice difference with a
    bootstrap CI, Wilcoxon signed-rank p and Holm-adjusted p across models."""
    fg = per_case_foreground(cases[cases["source"] == source])
    base = fg[fg["model"] == baseline][["fold", "case", "Dice"]]
    rows = []
    for model in [m for m in fg["model"].unique() if m != baseline]:
        pairs = fg[fg["model"] == model][["fold", "case", "Dice"]].merge(base, on=["fold", "case"], suffixes=("", "_b"))
        diff = (pairs["Dice"] - pairs["Dice_b"]).dropna().to_numpy()
        statistic, p = wilcoxon_signed_rank(diff)
        low, high = bootstrap_mean_ci(diff, n_resamples, seed=seed)
        mean = float(diff.mean()) if len(diff) else float("nan")
        rows.append(
            {
                "model": model,
                "n_pairs": len(diff),
                "delta_dice": mean,
                "delta_ci_low": low,
                "delta_ci_high": high,
                "wilcoxon_W": statistic,
                "p": p,
            }
        )
    out = pd.DataFrame(
        rows, columns=["model", "n_pairs", "delta_dice", "delta_ci_low", "delta_ci_high", "wilcoxon_W", "p"]
    )
    out["p_holm"] = holm(out["p"].tolist()) if len(out) else []
    return out


def model_costs(model: ModelFolder, folds: Sequence[str]) -> dict:
    """Parameters and FLOPs of the network built from the model folder's plans, epoch time from the checkpoints."""
    from ..checkpoints import CheckpointError, load_checkpoint
    from ..profiling import count_flops, count_parameters

    out: dict = {"params": np.nan, "trainable_params": np.nan, "flops": np.nan, "flops_input": ""}
    try:
        trainer_class = find_trainer_class(model.trainer)
        plans, dataset_json = load_json(model.path / "plans.json"), load_json(model.path / "dataset.json")
        network, shape = build_network(trainer_class, plans, model.configuration, dataset_json)
        out.update(params=count_parameters(network), trainable_params=count_parameters(network, trainable_only=True))
        out.update(flops=count_flops(network, shape), flops_input="x".join(map(str, shape)))
    except ComparisonError as e:
        out["error"] = str(e)
    epoch_times, epochs = [], set()
    for fold in folds:
        checkpoint_file = model.path / f"fold_{fold}" / "checkpoint_final.pth"
        if checkpoint_file.is_file():
            try:  # only its logging is read: no need to unpickle anything but tensors and numbers
                checkpoint = load_checkpoint(checkpoint_file)
            except CheckpointError as e:
                raise ComparisonError(str(e)) from None
            log = checkpoint["logging"]
            starts, ends = log["epoch_start_timestamps"], log["epoch_end_timestamps"]
            epoch_times += [e - s for s, e in zip(starts[: len(ends)], ends, strict=True)]
            epochs.add(int(checkpoint["current_epoch"]))
    out["seconds_per_epoch"] = float(np.mean(epoch_times)) if epoch_times else np.nan
    out["epochs"] = "/".join(str(e) for e in sorted(epochs))
    return out


def select_models(dataset: str, configuration: str, trainers: Sequence[str] | None, plans: Sequence[str] | None):
    models = find_model_folders(dataset, configuration)
    if not models:
        raise ComparisonError(f"no model folders TRAINER__PLANS__{configuration} in the results of {dataset}")
    found = ", ".join(m.path.name for m in models)
    if plans:
        models = [m for m in models if m.plans in plans]
    if trainers:
        absent = [t for t in trainers if not any(t in (m.trainer, m.identifier) for m in models)]
        if absent:
            raise ComparisonError(f"no results for {absent} ({configuration}, plans {plans or 'any'}); found: {found}")
        models = [m for m in models if m.trainer in trainers or m.identifier in trainers]
    if not models:
        raise ComparisonError(f"no model folder matches plans {plans}; found: {found}")
    return models


def run_compare(
    dataset: str | int,
    configuration: str = "2d",
    trainers: Sequence[str] | None = None,
    plans: Sequence[str] | None = None,
    folds: Sequence[str] = ("0", "1", "2", "3", "4"),
    baseline: str | None = None,
    test_folders: Sequence[str] = (),
    stats_on: str = CV,
    n_resamples: int = 10_000,
    seed: int = 0,
    evaluation_folder: Path | None = None,
) -> Comparison:
    """Collects and summarises the results of ``dataset``/``configuration``.

    Args:
        dataset: dataset ID or name.
        configuration: nnU-Net configuration.
        trainers: trainer names (or ``TRAINER__PLANS``) to include; None: every model folder found.
        plans: plans identifiers to include; None: all.
        folds: the folds every model should have; missing ones are reported, never filled in.
        baseline: model the paired statistics compare against (default ``nnUNetTrainer`` if present).
        test_folders: ``PRED=LABELS`` specs; the prediction folder's name selects the model (trainer,
            ``TRAINER__PLANS`` or the model folder name).
        stats_on: "cv" (validation cases of all folds) or the name of a test or zero-shot source.
        n_resamples: bootstrap resamples; seed: bootstrap seed.
        evaluation_folder: where test-set summaries are written.
    """
    name = dataset_name(dataset)
    models = select_models(name, configuration, trainers, plans)
    tests = []
    for spec in test_folders:
        pred, labels = parse_test_folder(spec)
        tests.append((match_model(pred.name, models), pred, labels))
    if evaluation_folder is not None:
        evaluation_folder.mkdir(parents=True, exist_ok=True)
    cases, missing = collect_cases(models, [str(f) for f in folds], tests, evaluation_folder)
    if cases.empty:
        raise ComparisonError(
            f"no fold_N/validation/summary.json for folds {list(folds)}, no test and no zero-shot results in "
            f"{', '.join(m.path.name for m in models)} (train with nnUNetv2_train, or run nnUNetv2_train ... --val)"
        )
    notes = []
    if baseline is None:
        default = [m for m in models if m.identifier == "nnUNetTrainer__nnUNetPlans"]
        baseline_model = default[0] if default else models[0]
    else:
        baseline_model = match_model(baseline, models)
    models = [baseline_model] + [m for m in models if m != baseline_model]  # baseline first in every table
    label_table, table = aggregate(cases)
    index = pd.DataFrame({"model": [m.label for m in models]})
    main = index.merge(table[table["source"] == CV].drop(columns="source"), on="model", how="left")
    main["folds_missing"] = [missing[m.label] for m in models]
    for m in models:
        if missing[m.label]:
            notes.append(
                f"{m.label} lacks validation results of fold(s) {', '.join(missing[m.label])}: its cross-validation "
                f"numbers use only the folds listed, and paired tests only the cases both models have."
            )
    costs = pd.DataFrame([{"model": m.label, **model_costs(m, folds)} for m in models])
    main = main.merge(costs, on="model", how="left")
    for source in [s for s in table["source"].unique() if s != CV]:
        sub = table[table["source"] == source].set_index("model")
        for column in ("Dice_mean_cases", "Dice_std_cases", "Dice_pooled", "n_cases", "folds"):
            main[f"{source}: {column}"] = main["model"].map(sub[column])
    from ..robustness.report import compare_columns  # results of `nnunet_lite robustness run`, when present

    robustness = compare_columns(models, [str(f) for f in folds])
    for column in dict.fromkeys(c for values in robustness.values() for c in values):
        main[column] = [robustness.get(m, {}).get(column, np.nan) for m in main["model"]]
    if stats_on not in set(cases["source"]):
        raise ComparisonError(f"--stats-on {stats_on}: no such results (have: {sorted(set(cases['source']))})")
    stats = paired_statistics(cases, baseline_model.label, stats_on, n_resamples, seed)
    main = main.merge(stats, on="model", how="left")
    cis = [bootstrap_mean_ci(g["Dice"], n_resamples, seed=seed) for _, g in _foreground_groups(cases, main, stats_on)]
    main["Dice_ci_low"], main["Dice_ci_high"] = [c[0] for c in cis], [c[1] for c in cis]
    return Comparison(
        name, configuration, models, [str(f) for f in folds], baseline_model, stats_on, cases, main, label_table, notes
    )


def _foreground_groups(cases: pd.DataFrame, main: pd.DataFrame, source: str):
    fg = per_case_foreground(cases[cases["source"] == source])
    for model in main["model"]:
        yield model, fg[fg["model"] == model]
