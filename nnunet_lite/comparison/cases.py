"""Per-case tables of nnU-Net evaluations and the paired tests on them; shared by ``compare`` and the robustness report.

A long table has one row per (model, source, fold, case, label). Whether a source's cases are *shared* across folds
is read from the data: a case id under more than one fold of the same model (zero-shot and robustness sets, which
every fold's model predicts; a fixed split repeated as several folds). Those cases are then averaged over the folds
before any per-case statistic, so each case counts once; cross-validation cases (each validated by one fold) stay
paired on (fold, case).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .stats import bootstrap_mean_ci, holm, wilcoxon_signed_rank

CV = "cv"
FOLD_AVERAGE = "avg"  # the fold value of a case averaged over folds
STATS_COLUMNS = ["model", "n_pairs", "delta_dice", "delta_ci_low", "delta_ci_high", "wilcoxon_W", "p", "p_holm"]


def label_names(dataset_json: dict) -> dict:
    """nnU-Net label or region key (as in summary.json after ``load_summary_json``) -> label name."""
    return {
        tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value): name
        for name, value in dataset_json["labels"].items()
    }


def summary_rows(summary_file: Path, model: str, source: str, fold: str, names: dict, ending: str) -> list[dict]:
    """The per-label rows of one nnU-Net ``summary.json``."""
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


def per_case_foreground(cases: pd.DataFrame) -> pd.DataFrame:
    """One Dice/IoU per (model, source, fold, case): the mean over foreground labels (NaNs ignored, like nnU-Net)."""
    return cases.groupby(["model", "source", "fold", "case"], as_index=False, sort=False)[["Dice", "IoU"]].mean()


def shared_sources(cases: pd.DataFrame) -> set[str]:
    """Sources in which some model has a case id under more than one fold (the fold models predict the same cases)."""
    if cases.empty:
        return set()
    folds = cases.groupby(["model", "source", "case"], sort=False)["fold"].nunique()
    return set(folds[folds > 1].index.get_level_values("source"))


def case_units(frame: pd.DataFrame, shared: bool, keys: tuple[str, ...] = ("model", "source")) -> pd.DataFrame:
    """The independent units of ``frame`` (rows per ``keys`` + fold + case): unchanged when not ``shared``, else one
    row per ``keys`` + case with Dice/IoU averaged over the folds (NaNs ignored) and ``fold`` = ``FOLD_AVERAGE``."""
    if not shared:
        return frame
    metrics = [m for m in ("Dice", "IoU") if m in frame.columns]
    out = frame.groupby([*keys, "case"], as_index=False, sort=False)[metrics].mean()
    out["fold"] = FOLD_AVERAGE
    return out


def fold_spread(frame: pd.DataFrame, metric: str = "Dice") -> tuple[float, float]:
    """Mean and std over the folds of the per-fold means of ``metric`` (the spread of the fold models)."""
    means = frame.groupby("fold")[metric].mean().dropna()
    if not len(means):
        return float("nan"), float("nan")
    return float(means.mean()), float(means.std()) if len(means) > 1 else float("nan")


def paired_statistics(
    cases: pd.DataFrame,
    baseline: str,
    source: str,
    n_resamples: int = 10_000,
    seed: int = 0,
    shared: bool | None = None,
) -> pd.DataFrame:
    """Per model against ``baseline`` on the units both have in ``source``: mean Dice difference with a bootstrap CI,
    Wilcoxon signed-rank p and Holm-adjusted p across models.

    Units are (fold, case) pairs, or, where the cases are shared across folds (``shared``; None: decided from the
    data), cases with each model's Dice averaged over its folds, so that ``n_pairs`` counts distinct cases.
    """
    fg = per_case_foreground(cases[cases["source"] == source])
    if shared is None:
        shared = source in shared_sources(fg)
    fg = case_units(fg, shared)
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
    out = pd.DataFrame(rows, columns=STATS_COLUMNS[:-1])
    out["p_holm"] = holm(out["p"].tolist()) if len(out) else []
    return out


def describe(values: pd.Series) -> tuple[float, float]:
    """Mean and std (ddof 1) of the non-NaN values; NaN for none."""
    values = values.dropna()
    return (float(values.mean()), float(values.std())) if len(values) else (float("nan"), float("nan"))


def folds_text(folds: list[str] | np.ndarray) -> str:
    folds = sorted(str(f) for f in folds)
    numeric = all(f.isdigit() for f in folds)
    if numeric and len(folds) > 2 and [int(f) for f in folds] == list(range(int(folds[0]), int(folds[-1]) + 1)):
        return f"{folds[0]}-{folds[-1]}"
    return ", ".join(folds)
