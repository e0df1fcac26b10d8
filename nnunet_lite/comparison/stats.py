"""Paired statistics and pooled metrics for comparing segmentation models case by case."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pooled_dice_iou(tp: Sequence[float], fp: Sequence[float], fn: Sequence[float]) -> tuple[float, float]:
    """Dataset-level Dice and IoU from one confusion matrix over all pixels of all cases (the lightweight papers'
    convention): ``2 sum(TP) / (2 sum(TP) + sum(FP) + sum(FN))`` and ``sum(TP) / (sum(TP) + sum(FP) + sum(FN))``."""
    tp_sum, fp_sum, fn_sum = float(np.sum(tp)), float(np.sum(fp)), float(np.sum(fn))
    if tp_sum + fp_sum + fn_sum == 0:
        return float("nan"), float("nan")
    return 2 * tp_sum / (2 * tp_sum + fp_sum + fn_sum), tp_sum / (tp_sum + fp_sum + fn_sum)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(p.shape, np.nan)
    m = len(valid)
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def wilcoxon_signed_rank(differences: Sequence[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences; ``(statistic, p)``, NaN when undefined.

    ``zero_method="wilcox"`` (scipy's default) drops zero differences, so cases where both models score the same do
    not count; exact p-values for small samples, normal approximation otherwise (scipy's ``method="auto"``).
    """
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return float("nan"), float("nan")
    if np.all(d == 0):
        return 0.0, 1.0
    result = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def bootstrap_mean_ci(
    values: Sequence[float], n_resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (scipy.stats.bootstrap, cases resampled, seeded)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if np.all(v == v[0]):  # every resample has the same mean; scipy warns and returns NaN for a degenerate sample
        return float(v[0]), float(v[0])
    result = bootstrap(
        (v,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
