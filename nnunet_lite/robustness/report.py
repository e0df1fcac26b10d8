"""The robustness report: clean vs corrupted Dice per trainer, paired statistics and the Dice-vs-severity plot.

Metrics (Kamann & Rother, IJCV 2021, for segmentation; ImageNet-C / MedMNIST-C for the normalisation):

- clean Dice: mean per-case foreground Dice on the uncorrupted copies of the set's cases;
- corrupted Dice: mean over every corruption and severity of that set's mean Dice;
- relative drop: ``(clean - corrupted) / clean``;
- mCE: MedMNIST-C's / ImageNet-C's normalised corruption error with ``1 - Dice`` as the error, relative to the
  baseline trainer: ``mean_c [sum_s E(c, s) / sum_s E_baseline(c, s)]`` (1 = as robust as the baseline, below 1 =
  more robust);
- worst corruption: lowest Dice averaged over severities;
- artefact false-positive rate (sets of drawn artefacts: hair, ruler, ink_marker): of the pixels an artefact covers
  outside the reference lesion, the share the model segments as lesion (any foreground label), on the corrupted image
  and, for the same pixels, on the clean image; per case averaged over the folds, then the mean over the cases that
  have such pixels (n), per set and over a model's artefact sets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..comparison.cases import (
    case_units,
    folds_text,
    label_names,
    paired_statistics,
    per_case_foreground,
    shared_sources,
    summary_rows,
)
from ..comparison.nnunet_io import ComparisonError, dataset_name, markdown_table
from ..comparison.stats import wilcoxon_signed_rank
from .make import CLEAN, load_manifest
from .paths import model_folder, result_folder

CORRUPTED = "corrupted"
# Okabe & Ito (2008) colour-blind-safe palette, without black (kept for text and ground truth)
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")


@dataclass
class RobustnessReport:
    dataset: str
    configuration: str
    set_name: str
    manifest: dict
    baseline: str
    cases: pd.DataFrame  # per (model, set, fold, case) foreground Dice
    shared: bool  # a case id under more than one fold: per-case values are averaged over the folds
    per_set: pd.DataFrame  # per (model, corruption, severity)
    table: pd.DataFrame  # one row per model
    notes: list[str] = field(default_factory=list)
    artefacts: pd.DataFrame = field(default_factory=pd.DataFrame)  # artefact FP rate per (model, corruption, severity)


def _split(sub: str) -> tuple[str, int]:
    if sub == CLEAN:
        return CLEAN, 0
    corruption, severity = sub.rsplit("_s", 1)
    return corruption, int(severity)


def _read_2d(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ComparisonError(f"{path} not found: the robustness results are incomplete; run robustness run again")
    if path.name.lower().endswith((".tif", ".tiff")):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    return np.asarray(Image.open(path))


def artefact_fp_rows(model: Path, manifest: dict, folds: Sequence[str], label: str) -> list[dict]:
    """Per (fold, artefact set, case) whose artefact covers pixels outside the reference lesion: their number and the
    share of them predicted as lesion (any foreground label) on the corrupted image and on the clean image."""
    masks = manifest.get("artefact_masks") or {}
    if not masks:
        return []
    folder, ending = Path(manifest["folder"]), manifest["file_ending"]
    rows = []
    for case in manifest["cases"]:
        reference = _read_2d(folder / "labelsTs" / f"{case}{ending}") > 0
        outside = {}
        for sub, mask_folder in masks.items():
            artefact = _read_2d(folder / mask_folder / f"{case}.png") > 0
            if artefact.shape != reference.shape:
                raise ComparisonError(
                    f"{folder / mask_folder / case}.png is {artefact.shape}, its reference {reference.shape}: the set "
                    f"is inconsistent; make it again with --overwrite"
                )
            if (artefact & ~reference).any():
                outside[sub] = artefact & ~reference
        for fold in folds:
            if not outside:
                break
            clean = _read_2d(result_folder(model, manifest["set"], fold, CLEAN) / f"{case}{ending}") > 0
            for sub, pixels in outside.items():
                predicted = _read_2d(result_folder(model, manifest["set"], fold, sub) / f"{case}{ending}") > 0
                corruption, severity = _split(sub)
                n = int(pixels.sum())
                rows.append(
                    {
                        "model": label,
                        "corruption": corruption,
                        "severity": severity,
                        "fold": fold,
                        "case": case,
                        "artefact_pixels": n,
                        "fp_rate": float((predicted & pixels).sum() / n),
                        "fp_rate_clean": float((clean & pixels).sum() / n),
                    }
                )
    return rows


def artefact_summary(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (model, corruption, severity) and per model: mean artefact FP rate (corrupted and clean) over the cases,
    each case first averaged over the folds (every fold's model predicts the same cases of a set), and n cases."""
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame()
    units = rows.groupby(["model", "corruption", "severity", "case"], as_index=False, sort=False)[
        ["fp_rate", "fp_rate_clean", "artefact_pixels"]
    ].mean()
    per_set = (
        units.groupby(["model", "corruption", "severity"], sort=False)
        .agg(
            artefact_fp_rate=("fp_rate", "mean"),
            artefact_fp_rate_clean=("fp_rate_clean", "mean"),
            n_cases=("case", "count"),
            artefact_pixels_mean=("artefact_pixels", "mean"),
        )
        .reset_index()
    )
    per_model = (
        per_set.groupby("model", sort=False)[["artefact_fp_rate", "artefact_fp_rate_clean"]].mean().reset_index()
    )
    per_model["artefact_fp_n_cases"] = per_model["model"].map(units.groupby("model")["case"].nunique())
    return per_set, per_model


def collect(
    dataset: str, configuration: str, trainers: Sequence[str], plans_name: str, manifest: dict, folds: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The per-label rows of every (trainer, fold, set) result, and the results that are missing."""
    rows, missing = [], []
    for trainer in trainers:
        model = model_folder(dataset, trainer, plans_name, configuration)
        dataset_json = json.loads((model / "dataset.json").read_text())
        names, ending = label_names(dataset_json), dataset_json["file_ending"]
        for fold in folds:
            for sub in manifest["sets"]:
                folder = result_folder(model, manifest["set"], fold, sub)
                info = folder / "robustness.json"
                if not info.is_file() or json.loads(info.read_text())["manifest"] != manifest["id"]:
                    missing.append(f"{trainer} fold {fold} {sub}")
                    continue
                rows += summary_rows(folder / "summary.json", trainer, sub, fold, names, ending)
    return pd.DataFrame(rows), missing


def build_report(
    dataset: str | int,
    configuration: str,
    trainers: Sequence[str],
    folds: Sequence[int | str] = (0,),
    plans_name: str = "nnUNetPlans",
    set_name: str | None = None,
    baseline: str | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> RobustnessReport:
    name = dataset_name(dataset)
    manifest = load_manifest(name, set_name)
    baseline = baseline or trainers[0]
    if baseline not in trainers:
        raise ComparisonError(f"--baseline {baseline} is not among the trainers {list(trainers)}")
    trainers = [baseline] + [t for t in trainers if t != baseline]
    label_rows, missing = collect(name, configuration, trainers, plans_name, manifest, [str(f) for f in folds])
    if missing:
        raise ComparisonError(
            f"{len(missing)} results missing for set {manifest['set']} (e.g. {missing[:3]}); run nnunet_lite "
            f"robustness run with the same -tr, -f and -p first"
        )
    cases = per_case_foreground(label_rows)
    parsed = cases["source"].map(_split)
    cases["corruption"], cases["severity"] = parsed.str[0], parsed.str[1]
    # every fold's model predicts the same cases: average each case over the folds first, so n counts cases
    shared = bool(shared_sources(cases))
    units = case_units(cases, shared, keys=("model", "source", "corruption", "severity"))
    per_set = (
        units.groupby(["model", "corruption", "severity"], sort=False)["Dice"]
        .agg(Dice="mean", Dice_std="std", n_cases="count")
        .reset_index()
    )
    seconds = _prediction_seconds(name, configuration, trainers, plans_name, manifest, [str(f) for f in folds])
    per_set = per_set.merge(seconds, on=["model", "corruption", "severity"], how="left")
    corrupted = per_set[per_set["corruption"] != CLEAN]
    by_corruption = corrupted.groupby(["model", "corruption"], sort=False)["Dice"].mean().reset_index()
    rows = []
    for trainer in trainers:
        mine = per_set[per_set["model"] == trainer]
        clean = float(mine.loc[mine["corruption"] == CLEAN, "Dice"].mean())
        corr = float(mine.loc[mine["corruption"] != CLEAN, "Dice"].mean())
        worst = by_corruption[by_corruption["model"] == trainer].sort_values("Dice").iloc[0]
        fold_mean, fold_std = _corrupted_fold_spread(cases[cases["model"] == trainer])
        drop_w, drop_p, drop_n = _clean_vs_corrupted(units[units["model"] == trainer])
        rows.append(
            {
                "model": trainer,
                "clean_dice": clean,
                "corrupted_dice": corr,
                "corrupted_dice_fold_mean": fold_mean,
                "corrupted_dice_fold_std": fold_std,
                "relative_drop": (clean - corr) / clean if clean > 0 else float("nan"),
                "drop_n_cases": drop_n,
                "drop_wilcoxon_W": drop_w,
                "drop_p": drop_p,
                "mCE": _mce(corrupted, trainer, baseline),
                "worst_corruption": worst["corruption"],
                "worst_corruption_dice": float(worst["Dice"]),
                "n_cases": int(mine.loc[mine["corruption"] == CLEAN, "n_cases"].sum()),
                "n_sets": int((mine["corruption"] != CLEAN).sum()),
                "folds": " ".join(str(f) for f in folds),
            }
        )
    table = pd.DataFrame(rows)
    # paired: per case, the Dice averaged over all corrupted sets (and over the folds), against the baseline's
    paired = label_rows.copy()
    paired["source"] = np.where(paired["source"] == CLEAN, CLEAN, CORRUPTED)
    stats = paired_statistics(paired, baseline, CORRUPTED, n_resamples, seed, shared=shared)
    table = table.merge(stats, on="model", how="left")
    fp_rows = [
        row
        for trainer in trainers
        for row in artefact_fp_rows(
            model_folder(name, trainer, plans_name, configuration), manifest, [str(f) for f in folds], trainer
        )
    ]
    artefacts, fp_per_model = artefact_summary(pd.DataFrame(fp_rows))
    if manifest.get("artefact_masks"):
        table = table.merge(fp_per_model, on="model", how="left") if len(fp_per_model) else table
        for column in ("artefact_fp_rate", "artefact_fp_rate_clean", "artefact_fp_n_cases"):
            table[column] = table[column] if column in table else float("nan")
    n_cases = cases["case"].nunique()
    fold_list = folds_text([str(f) for f in folds])
    if shared:
        notes = [
            f"Each of the {n_cases} cases was predicted by the model of every fold ({fold_list}): per-case Dice is "
            "averaged over the folds before any mean, std, count or test, so n (cases, pairs) counts distinct cases; "
            "'corrupted Dice per fold' is mean ± std over the fold models' corrupted Dice. (Decided from the case "
            "ids: the same case id under more than one fold.)"
        ]
    else:
        notes = [f"One prediction per case (fold {fold_list}): {n_cases} cases, paired per case."]
    if manifest.get("artefact_masks"):
        notes.append(
            "Artefact FP rate: of the pixels a drawn artefact (hair, ruler, ink marker) covers outside the reference "
            "lesion, the share segmented as lesion, on the corrupted image and (clean) on the same pixels of the "
            "uncorrupted image; per case averaged over the folds, mean over the cases that have such pixels (n)."
        )
    return RobustnessReport(
        name, configuration, manifest["set"], manifest, baseline, cases, shared, per_set, table, notes, artefacts
    )


def _corrupted_fold_spread(cases: pd.DataFrame) -> tuple[float, float]:
    """Mean ± std over folds of each fold model's corrupted Dice (mean over corrupted sets of the set means)."""
    corrupted = cases[cases["corruption"] != CLEAN]
    per_fold = corrupted.groupby(["fold", "source"])["Dice"].mean().groupby(level="fold").mean().dropna()
    if not len(per_fold):
        return float("nan"), float("nan")
    return float(per_fold.mean()), float(per_fold.std()) if len(per_fold) > 1 else float("nan")


def _clean_vs_corrupted(units: pd.DataFrame) -> tuple[float, float, int]:
    """Wilcoxon signed-rank of clean minus corrupted Dice per case (corrupted: mean over the corrupted sets)."""
    clean = units[units["corruption"] == CLEAN].groupby(["fold", "case"])["Dice"].mean()
    corrupted = units[units["corruption"] != CLEAN].groupby(["fold", "case"])["Dice"].mean()
    diff = (clean - corrupted).dropna()
    statistic, p = wilcoxon_signed_rank(diff.to_numpy())
    return statistic, p, len(diff)


def _mce(corrupted: pd.DataFrame, model: str, baseline: str) -> float:
    errors = corrupted.assign(error=1 - corrupted["Dice"]).groupby(["model", "corruption"])["error"].sum()
    ratios = [
        errors[(model, c)] / errors[(baseline, c)]
        for c in corrupted["corruption"].unique()
        if errors.get((baseline, c), 0) > 0
    ]
    return float(np.mean(ratios)) if ratios else float("nan")


def _prediction_seconds(dataset, configuration, trainers, plans_name, manifest, folds) -> pd.DataFrame:
    rows = []
    for trainer in trainers:
        model = model_folder(dataset, trainer, plans_name, configuration)
        for sub in manifest["sets"]:
            values = [
                json.loads((result_folder(model, manifest["set"], f, sub) / "robustness.json").read_text())[
                    "seconds_predict"
                ]
                for f in folds
            ]
            corruption, severity = _split(sub)
            rows.append({"model": trainer, "corruption": corruption, "severity": severity, "seconds": np.mean(values)})
    return pd.DataFrame(rows)


def _num(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def markdown(report: RobustnessReport) -> str:
    several_folds = len(report.cases["fold"].unique()) > 1
    header = ["model", "cases", "clean Dice", "corrupted Dice"]
    header += ["corrupted Dice per fold"] if several_folds else []
    header += [
        "relative drop",
        "p (clean vs corrupted)",
        "mCE",
        "worst corruption (Dice)",
        "Δ corrupted Dice [95% CI]",
        "p (Holm)",
    ]
    with_artefacts = "artefact_fp_rate" in report.table
    header += ["artefact FP rate clean → corrupted (n)"] if with_artefacts else []
    rows = []
    for _, r in report.table.iterrows():
        is_base = r["model"] == report.baseline
        delta = (
            "baseline"
            if is_base
            else f"{r['delta_dice']:+.3f} [{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}]"
            if not math.isnan(r["delta_dice"])
            else "–"
        )
        row = [f"**{r['model']}**" if is_base else r["model"], int(r["n_cases"])]
        row += [_num(r["clean_dice"]), _num(r["corrupted_dice"])]
        if several_folds:
            mean, std = r["corrupted_dice_fold_mean"], r["corrupted_dice_fold_std"]
            row.append(_num(mean) if math.isnan(std) else f"{mean:.3f} ± {std:.3f}")
        row += [
            f"{100 * r['relative_drop']:.1f}%" if not math.isnan(r["relative_drop"]) else "–",
            _p(r["drop_p"]),
            _num(r["mCE"], 2),
            f"{r['worst_corruption']} ({r['worst_corruption_dice']:.3f})",
            delta,
            "–" if is_base else _p(r["p_holm"]),
        ]
        if with_artefacts:
            row.append(_fp(r["artefact_fp_rate_clean"], r["artefact_fp_rate"], r["artefact_fp_n_cases"]))
        rows.append(row)
    return markdown_table(header, rows)


def _fp(clean: float, corrupted: float, n: float) -> str:
    if pd.isna(corrupted):
        return "– (n=0)"
    return f"{clean:.3f} → {corrupted:.3f} (n={int(n)})"


def artefact_markdown(report: RobustnessReport) -> str:
    """Per artefact and severity, one column per model: the FP rate on the clean and on the corrupted image (n)."""
    models = list(report.table["model"])
    a = report.artefacts.set_index(["model", "corruption", "severity"])
    keys = list(dict.fromkeys(zip(report.artefacts["corruption"], report.artefacts["severity"], strict=True)))
    rows = []
    for corruption, severity in keys:
        row = [corruption, severity]
        for m in models:
            if (m, corruption, severity) in a.index:
                r = a.loc[(m, corruption, severity)]
                row.append(_fp(r["artefact_fp_rate_clean"], r["artefact_fp_rate"], r["n_cases"]))
            else:
                row.append("– (n=0)")
        rows.append(row)
    return markdown_table(["artefact", "severity", *models], rows)


def per_set_markdown(report: RobustnessReport) -> str:
    wide = report.per_set.pivot_table(index=["corruption", "severity"], columns="model", values="Dice", sort=False)
    models = list(report.table["model"])
    rows = [[c, s, *[_num(wide.loc[(c, s), m]) for m in models]] for c, s in wide.index]
    return markdown_table(["corruption", "severity", *models], rows)


def plot(report: RobustnessReport, path: Path) -> None:
    """Dice vs severity, one panel per corruption, one line per trainer; severity 0 is the clean set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corruptions = [c for c in dict.fromkeys(report.per_set["corruption"]) if c != CLEAN]
    columns = min(4, len(corruptions))
    rows = math.ceil(len(corruptions) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3 * columns, 2.6 * rows + 0.6), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, corruption in zip(axes.flat, corruptions, strict=False):
        for i, model in enumerate(report.table["model"]):
            mine = report.per_set[report.per_set["model"] == model]
            line = pd.concat([mine[mine["corruption"] == CLEAN], mine[mine["corruption"] == corruption]])
            ax.plot(line["severity"], line["Dice"], "o-", color=OKABE_ITO[i % len(OKABE_ITO)], label=model, ms=3)
        ax.set_title(corruption.replace("_", " "), fontsize=9)
        ax.set_xticks(range(0, 6))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(corruptions) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("Dice")
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{report.dataset}: Dice under corruption ({report.set_name})", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: RobustnessReport, folder: Path, command: str) -> None:
    m = report.manifest
    timing = report.per_set.groupby("model")["seconds"].mean()
    lines = [
        f"# Robustness of {report.dataset} ({report.configuration}), set {report.set_name}",
        "",
        f"`{command}`",
        "",
        f"Suite {m['suite']} ({len(m['corruptions'])} corruptions x severities {m['severities']}, seed {m['seed']}) "
        f"on {len(m['cases'])} cases of {m['source']}. Baseline for mCE and paired statistics: **{report.baseline}**. "
        "Δ: mean per-case difference of the Dice averaged over all corrupted sets, percentile bootstrap CI; p: "
        "Wilcoxon signed-rank, Holm-adjusted across models; p (clean vs corrupted): Wilcoxon signed-rank of each "
        "case's clean minus corrupted Dice within the model (not adjusted).",
        "",
        markdown(report),
        "",
        *[f"- {note}" for note in report.notes],
        "",
        "Prediction time per set (mean over sets and folds): "
        + ", ".join(f"{model} {timing[model]:.1f} s" for model in report.table["model"]),
        "",
        "## Dice per corruption and severity",
        "",
        per_set_markdown(report),
        "",
        "![Dice vs severity](robustness.png)",
        "",
    ]
    if len(report.artefacts):
        lines += [
            "## Artefact false-positive rate",
            "",
            "Share of the artefact's pixels outside the reference lesion that the model segments as lesion: on the "
            "clean image → on the image with the artefact (n: cases with artefact pixels outside the lesion).",
            "",
            artefact_markdown(report),
            "",
        ]
        report.artefacts.to_csv(folder / "robustness_artefacts.csv", index=False)
    (folder / "robustness.md").write_text("\n".join(lines))
    report.table.to_csv(folder / "robustness.csv", index=False)
    report.per_set.to_csv(folder / "robustness_per_set.csv", index=False)
    report.cases.drop(columns=["source"]).to_csv(folder / "robustness_per_case.csv", index=False)
    plot(report, folder / "robustness.png")


def compare_columns(models, folds: Sequence[str]) -> dict[str, dict[str, float]]:
    """For ``compare``: per model label, ``{"robustness <set>: clean Dice" | ": corrupted Dice" | ": relative drop"}``
    from every complete robustness result of the requested folds (sets whose manifest changed are ignored)."""
    out: dict[str, dict[str, float]] = {}
    for model in models:
        root = model.path / "robustness"
        for set_dir in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
            try:
                manifest = load_manifest(model.path.parent.name, set_dir.name)
            except ComparisonError:
                continue
            clean, corrupted, done = [], [], []
            for fold in folds:
                for sub in manifest["sets"]:
                    info = result_folder(model.path, set_dir.name, fold, sub) / "robustness.json"
                    if info.is_file() and json.loads(info.read_text())["manifest"] == manifest["id"]:
                        value = json.loads(info.read_text())["foreground_mean_dice"]
                        (clean if sub == CLEAN else corrupted).append(value)
                        done += [fold] if sub == CLEAN else []
            if clean and len(corrupted) == len(clean) * (len(manifest["sets"]) - 1):
                c, k = float(np.mean(clean)), float(np.mean(corrupted))
                columns = {
                    f"robustness {set_dir.name}: clean Dice": c,
                    f"robustness {set_dir.name}: corrupted Dice": k,
                    f"robustness {set_dir.name}: relative drop": (c - k) / c if c > 0 else float("nan"),
                }
                if manifest.get("artefact_masks"):
                    rows = artefact_fp_rows(model.path, manifest, done, model.label)
                    fp = artefact_summary(pd.DataFrame(rows))[1]
                    fp = fp.iloc[0] if len(fp) else {}
                    columns[f"robustness {set_dir.name}: artefact FP rate"] = fp.get("artefact_fp_rate", float("nan"))
                    columns[f"robustness {set_dir.name}: artefact FP rate (clean)"] = fp.get(
                        "artefact_fp_rate_clean", float("nan")
                    )
                    columns[f"robustness {set_dir.name}: artefact FP n"] = fp.get("artefact_fp_n_cases", 0)
                out.setdefault(model.label, {}).update(columns)
    return out
