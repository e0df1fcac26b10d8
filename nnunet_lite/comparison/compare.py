"""``nnunet_lite compare``: per-case statistics of nnU-Net results trees, with cost next to accuracy.

Reads ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/fold_N/validation/summary.json`` (nnU-Net's
evaluation of the final checkpoint on each fold's validation cases), optional test-set prediction folders (evaluated
here with nnU-Net's per-case metrics) and zero-shot evaluations written by ``nnunet_lite zeroshot``. One long table
holds every (model, source, fold, case, label) score; everything else is a group-by of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .cases import (
    CV,
    STATS_COLUMNS,
    case_units,
    describe,
    folds_text,
    label_names,
    paired_statistics,
    per_case_foreground,
    shared_sources,
    summary_rows,
)
from .nnunet_io import (
    ComparisonError,
    ModelFolder,
    build_network,
    dataset_name,
    evaluate_folder,
    find_model_folders,
    find_trainer_class,
)
from .stats import bootstrap_mean_ci, pooled_dice_iou

ENSEMBLE = "ensemble"
# extra per-model columns a caller adds (e.g. the robustness results): (models, folds) -> {label: {column: value}}
ExtraColumns = Callable[[Sequence[ModelFolder], list[str]], dict[str, dict[str, float]]]


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
    shared: set[str] = field(default_factory=set)  # sources whose cases every fold's model predicts
    baseline_reason: str = ""  # how the baseline was chosen, or why there is none


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
        for summary in sorted((model.path / "zeroshot").glob(f"*/{ENSEMBLE}/summary.json")):
            # nnU-Net's fold ensemble (zeroshot --ensemble): one prediction per case, its own source
            target = summary.parent.parent.name
            rows += summary_rows(summary, model.label, f"zero-shot {target} ({ENSEMBLE})", ENSEMBLE, names, ending)
        for test_model, pred, labels in tests:
            if test_model != model:
                continue
            source = "test" if len(test_labels) == 1 else f"test {labels.parent.name}/{labels.name}"
            out = evaluation_folder / f"{model.identifier}__{len(rows)}.json" if evaluation_folder else None
            evaluate_folder(labels, pred, dataset_json, load_json(model.path / "plans.json"), out)
            rows += summary_rows(out, model.label, source, "test", names, ending)
    columns = ["model", "source", "fold", "case", "label", "Dice", "IoU", "TP", "FP", "FN"]
    return pd.DataFrame(rows, columns=columns), missing


def aggregate(cases: pd.DataFrame, shared: set[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (model, source, label) and per (model, source) summaries: mean/std over cases and over folds, pooled.

    In ``shared`` sources each case's Dice is first averaged over the folds, so "per case" statistics and ``n_cases``
    count distinct cases; "per fold" is the spread of the fold models' means either way.
    """
    label_rows = []
    for (model, source, label), group in cases.groupby(["model", "source", "label"], sort=False):
        pooled = pooled_dice_iou(group["TP"], group["FP"], group["FN"])
        units = case_units(group, source in shared, keys=("model", "source", "label"))
        row = {"model": model, "source": source, "label": label, "n_cases": int(units["Dice"].notna().sum())}
        for metric, pooled_value in zip(("Dice", "IoU"), pooled, strict=True):
            row[f"{metric}_mean_cases"], row[f"{metric}_std_cases"] = describe(units[metric])
            row[f"{metric}_mean_folds"], row[f"{metric}_std_folds"] = describe(group.groupby("fold")[metric].mean())
            row[f"{metric}_pooled"] = pooled_value
        label_rows.append(row)
    labels = pd.DataFrame(label_rows)
    foreground_rows = []
    fg = per_case_foreground(cases)
    for (model, source), group in fg.groupby(["model", "source"], sort=False):
        per_label = labels[(labels["model"] == model) & (labels["source"] == source)]
        units = case_units(group, source in shared)
        row = {
            "model": model,
            "source": source,
            "folds": sorted(group["fold"].unique().tolist()),
            "n_cases": int(units["Dice"].notna().sum()),
        }
        for metric in ("Dice", "IoU"):
            row[f"{metric}_mean_cases"], row[f"{metric}_std_cases"] = describe(units[metric])
            row[f"{metric}_mean_folds"], row[f"{metric}_std_folds"] = describe(group.groupby("fold")[metric].mean())
            row[f"{metric}_pooled"] = float(per_label[f"{metric}_pooled"].mean())  # mean over labels, like nnU-Net
        foreground_rows.append(row)
    return labels, pd.DataFrame(foreground_rows)


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


def choose_baseline(
    baseline: str | None, models: Sequence[ModelFolder], no_baseline: str | None
) -> tuple[ModelFolder | None, str]:
    """The baseline model and a sentence saying how it was chosen (or why there is none).

    An explicit ``baseline`` must be among ``models``; no other model is ever substituted for it. Only when none is
    given is a default chosen (nnU-Net's ``nnUNetTrainer__nnUNetPlans``, else the first model), unless ``no_baseline``
    says why there must be none.
    """
    if baseline is not None:
        try:
            return match_model(baseline, models), "given"
        except ComparisonError as e:
            if any(baseline in (m.identifier, m.path.name, m.label, m.trainer) for m in models):
                raise ComparisonError(f"--baseline {e}") from None  # ambiguous: several plans
            known = ", ".join(m.identifier for m in models)
            raise ComparisonError(
                f"--baseline {baseline}: no results of that model here (models: {known}); name one of them, or leave "
                "--baseline out to use the default"
            ) from None
    if no_baseline:
        return None, no_baseline
    default = [m for m in models if m.identifier == "nnUNetTrainer__nnUNetPlans"]
    if default:
        return default[0], "chosen by default (no baseline given): nnU-Net's own nnUNetTrainer with nnUNetPlans"
    return models[0], (
        "chosen by default (no baseline given, and no nnUNetTrainer__nnUNetPlans among the models): the first model "
        "found, in alphabetical order of the model folders; pass --baseline to choose"
    )


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
    extra_columns: ExtraColumns | None = None,
    no_baseline: str | None = None,
) -> Comparison:
    """Collects and summarises the results of ``dataset``/``configuration``.

    Args:
        dataset: dataset ID or name.
        configuration: nnU-Net configuration.
        trainers: trainer names (or ``TRAINER__PLANS``) to include; None: every model folder found.
        plans: plans identifiers to include; None: all.
        folds: the folds every model should have; missing ones are reported, never filled in.
        baseline: model the paired statistics compare against; it must be among the models (never substituted).
            None: ``nnUNetTrainer__nnUNetPlans`` if present, else the first model (the table says which and why).
        test_folders: ``PRED=LABELS`` specs; the prediction folder's name selects the model (trainer,
            ``TRAINER__PLANS`` or the model folder name).
        stats_on: "cv" (validation cases of all folds) or the name of a test or zero-shot source.
        n_resamples: bootstrap resamples; seed: bootstrap seed.
        evaluation_folder: where test-set summaries are written.
        extra_columns: adds per-model columns to the table (the callers pass the robustness results).
        no_baseline: with ``baseline`` None, no default is chosen and no paired tests are run; this sentence says
            why in the table (e.g. the study's baseline has no results for the dataset).
    """
    name = dataset_name(dataset)
    models = select_models(name, configuration, trainers, plans)
    baseline_model, baseline_reason = choose_baseline(baseline, models, no_baseline)
    tests = []
    for spec in test_folders:
        pred, labels = parse_test_folder(spec)
        tests.append((match_model(pred.name, models), pred, labels))
    if evaluation_folder is not None:
        evaluation_folder.mkdir(parents=True, exist_ok=True)
    fold_names = [str(f) for f in folds]
    cases, missing = collect_cases(models, fold_names, tests, evaluation_folder)
    if cases.empty:
        raise ComparisonError(
            f"no fold_N/validation/summary.json for folds {list(folds)}, no test and no zero-shot results in "
            f"{', '.join(m.path.name for m in models)} (train with nnUNetv2_train, or run nnUNetv2_train ... --val)"
        )
    if stats_on not in set(cases["source"]):
        raise ComparisonError(f"--stats-on {stats_on}: no such results (have: {sorted(set(cases['source']))})")
    notes = []
    if baseline_model is not None:
        models = [baseline_model] + [m for m in models if m != baseline_model]  # baseline first in every table
    shared = shared_sources(cases)
    label_table, table = aggregate(cases, shared)
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
        for column in ("Dice_mean_cases", "Dice_std_cases", "Dice_mean_folds", "Dice_std_folds", "Dice_pooled"):
            main[f"{source}: {column}"] = main["model"].map(sub[column])
        main[f"{source}: n_cases"] = main["model"].map(sub["n_cases"])
        main[f"{source}: folds"] = main["model"].map(sub["folds"])
    extra = extra_columns(models, fold_names) if extra_columns else {}
    for column in dict.fromkeys(c for values in extra.values() for c in values):
        main[column] = [extra.get(m, {}).get(column, np.nan) for m in main["model"]]
    notes += _shared_notes(cases, shared)
    if baseline_model is not None:
        stats = paired_statistics(cases, baseline_model.label, stats_on, n_resamples, seed, shared=stats_on in shared)
        if not (cases[cases["source"] == stats_on]["model"] == baseline_model.label).any():
            notes.append(f"The baseline {baseline_model.label} has no results on {stats_on}: no paired tests.")
    else:
        stats = pd.DataFrame(columns=STATS_COLUMNS)
    main = main.merge(stats, on="model", how="left")
    fg = case_units(per_case_foreground(cases[cases["source"] == stats_on]), stats_on in shared)
    cis = [bootstrap_mean_ci(fg.loc[fg["model"] == model, "Dice"], n_resamples, seed=seed) for model in main["model"]]
    main["Dice_ci_low"], main["Dice_ci_high"] = [c[0] for c in cis], [c[1] for c in cis]
    return Comparison(
        name,
        configuration,
        models,
        fold_names,
        baseline_model,
        stats_on,
        cases,
        main,
        label_table,
        notes,
        shared,
        baseline_reason,
    )


def _shared_notes(cases: pd.DataFrame, shared: set[str]) -> list[str]:
    """One note per source whose cases are shared across folds: what was averaged, decided from which data."""
    notes = []
    for source in [s for s in dict.fromkeys(cases["source"]) if s in shared]:
        rows = cases[cases["source"] == source]
        folds = folds_text(rows["fold"].unique())
        notes.append(
            f"{source}: the same case ids appear under several folds (folds {folds}: each fold's model predicted "
            f"the same {rows['case'].nunique()} cases), so each case's Dice is averaged over the folds of its model "
            "before the per-case mean ± std, the paired tests and the bootstrap CI; n counts distinct cases, and "
            "'per fold' is mean ± std over the fold models' means. (Decided from the case ids in the results, not "
            "from the source's name; cases validated by one fold only stay paired on (fold, case).)"
        )
    return notes
