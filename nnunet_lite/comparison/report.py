"""Renders a ``Comparison``: comparison.md, comparison.csv, per_case.csv and comparison.png."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import CV, Comparison
from .nnunet_io import markdown_table


def _num(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean_std(mean: float, std: float, note: str = "") -> str:
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.3f}{note}"
    return f"{mean:.3f} ± {std:.3f}"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _folds(row: pd.Series) -> str:
    found = row["folds"] if isinstance(row["folds"], list) else []
    text = ", ".join(found) if found else "none"
    return f"{text} (MISSING {', '.join(row['folds_missing'])})" if row["folds_missing"] else text


def extra_sources(comparison: Comparison) -> list[str]:
    return [s for s in dict.fromkeys(comparison.cases["source"]) if s != CV]


def markdown(comparison: Comparison, command: str | None = None) -> str:
    t = comparison.table
    shapes = sorted({s for s in t["flops_input"].dropna() if s})
    flops_header = f"GFLOPs @ {shapes[0]}" if len(shapes) == 1 else "GFLOPs @ patch"
    header = [
        "model",
        "folds",
        "cases",
        "params",
        flops_header,
        "epochs",
        "s/epoch",
        "Dice per case",
        "Dice per fold",
        "IoU per case",
        "pooled Dice",
        "pooled IoU",
    ]
    sources = extra_sources(comparison)
    for s in sources:
        header += [f"{s} Dice"] + ([f"{s} Dice per fold"] if s in comparison.shared else [])
    robust_sets = [c.removesuffix(": corrupted Dice") for c in t.columns if c.endswith(": corrupted Dice")]
    header += [f"{s}: clean / corrupted Dice (drop)" for s in robust_sets]
    rows = []
    for _, r in t.iterrows():
        n_folds = len(r["folds"]) if isinstance(r["folds"], list) else 0
        row = [
            f"**{r['model']}**" if comparison.baseline and r["model"] == comparison.baseline.label else r["model"],
            _folds(r),
            "–" if math.isnan(r["n_cases"]) else int(r["n_cases"]),
            "–" if math.isnan(r["params"]) else f"{int(r['params']):,}",
            _num(r["flops"] / 1e9),
            r["epochs"] or "–",
            _num(r["seconds_per_epoch"], 1),
            _mean_std(r["Dice_mean_cases"], r["Dice_std_cases"]),
            _mean_std(r["Dice_mean_folds"], r["Dice_std_folds"], f" ({n_folds} fold)" if n_folds == 1 else ""),
            _mean_std(r["IoU_mean_cases"], r["IoU_std_cases"]),
            _num(r["Dice_pooled"]),
            _num(r["IoU_pooled"]),
        ]
        for s in sources:
            n, folds = r[f"{s}: n_cases"], r[f"{s}: folds"]
            where = "" if pd.isna(n) else f" (n={int(n)}" + (f", folds {' '.join(folds)})" if len(folds) > 1 else ")")
            row.append(_mean_std(r[f"{s}: Dice_mean_cases"], r[f"{s}: Dice_std_cases"]) + where)
            if s in comparison.shared:  # the spread of the fold models, next to the per-case one
                row.append(_mean_std(r[f"{s}: Dice_mean_folds"], r[f"{s}: Dice_std_folds"]))
        for s in robust_sets:
            clean, corrupted, drop = (r[f"{s}: {k}"] for k in ("clean Dice", "corrupted Dice", "relative drop"))
            cell = "–" if pd.isna(clean) else f"{clean:.3f} / {corrupted:.3f} ({100 * drop:.1f}%)"
            if f"{s}: artefact FP rate" in r and not pd.isna(r[f"{s}: artefact FP rate"]):  # hair, ruler, ink sets
                cell += f"; artefact FP {r[f'{s}: artefact FP rate (clean)']:.3f} → {r[f'{s}: artefact FP rate']:.3f}"
            row.append(cell)
        rows.append(row)
    base = comparison.baseline.label if comparison.baseline else "–"
    stats_rows = [
        [
            r["model"],
            int(r["n_pairs"]),
            f"{r['delta_dice']:+.3f}" if not math.isnan(r["delta_dice"]) else "–",
            f"[{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}]" if not math.isnan(r["delta_ci_low"]) else "–",
            _num(r["wilcoxon_W"], 1),
            _p(r["p"]),
            _p(r["p_holm"]),
        ]
        for _, r in t.iterrows()
        if r["model"] != base and not pd.isna(r.get("n_pairs"))
    ]
    source_text = "validation cases of all folds" if comparison.stats_on == CV else comparison.stats_on
    shared = comparison.stats_on in comparison.shared
    lines = [f"# Comparison: {comparison.dataset}, configuration {comparison.configuration}", ""]
    if comparison.baseline is None:
        lines += [f"Baseline: none ({comparison.baseline_reason}).", ""]
    elif comparison.baseline_reason != "given":
        lines += [f"Baseline: **{base}**, {comparison.baseline_reason}.", ""]
    lines += [markdown_table(header, rows), ""]
    if stats_rows:
        stats_header = ["model", "pairs", "mean ΔDice", "95% CI (bootstrap)", "Wilcoxon W", "p", "p (Holm)"]
        matched = (
            "pairs matched by case, each model's Dice averaged over its folds first; pairs = distinct cases"
            if shared
            else "pairs matched by fold and case"
        )
        lines += [
            f"Paired against **{base}** on {source_text} (per-case foreground Dice, {matched}):",
            "",
            markdown_table(stats_header, stats_rows),
            "",
        ]
    elif comparison.baseline is None:
        lines += [f"No paired statistics: {comparison.baseline_reason}.", ""]
    else:
        lines += [f"No paired statistics: no other model shares cases with the baseline **{base}**.", ""]
    labels = comparison.label_table
    if labels["label"].nunique() > 1:
        label_rows = [
            [
                r["model"],
                r["source"],
                r["label"],
                int(r["n_cases"]),
                _mean_std(r["Dice_mean_cases"], r["Dice_std_cases"]),
                _num(r["Dice_pooled"]),
                _mean_std(r["IoU_mean_cases"], r["IoU_std_cases"]),
                _num(r["IoU_pooled"]),
            ]
            for _, r in labels.iterrows()
        ]
        header = ["model", "source", "label", "cases", "Dice per case", "pooled Dice", "IoU per case", "pooled IoU"]
        lines += ["Per label or region:", "", markdown_table(header, label_rows), ""]
    lines += [
        "Notes:",
        f"- Folds expected: {', '.join(comparison.expected_folds)}; cross-validation numbers come from nnU-Net's "
        "`fold_N/validation/summary.json` (final checkpoint). Missing folds are listed, never filled in.",
        "- Dice per case: mean ± std over cases (validation cases of all folds together), foreground labels averaged "
        "per case; per fold: mean ± std of the fold means; pooled: one confusion matrix over all pixels of all cases, "
        "2ΣTP / (2ΣTP + ΣFP + ΣFN), averaged over labels (the convention of the lightweight papers). Every "
        "case count (cases, n=, pairs) counts distinct cases.",
        f"- {flops_header}: one forward pass at the plans' patch size (batch 1), torch FlopCounterMode, 2 FLOPs per "
        "multiply-add (GMACs = GFLOPs / 2); params: all parameters of the network nnU-Net builds for these plans.",
        "- s/epoch: mean of epoch_end - epoch_start over all epochs of all folds (checkpoint_final.pth logging); "
        "epochs: as trained.",
        "- Statistics: two-sided Wilcoxon signed-rank test of the paired differences (scipy, zero differences "
        "dropped), Holm correction across models, percentile bootstrap 95% CI of the mean difference.",
        *[f"- {note}" for note in comparison.notes],
    ]
    if command:
        lines += ["", f"Generated by `{command}`."]
    return "\n".join(lines) + "\n"


def plot(comparison: Comparison, output: Path) -> None:
    """Dice vs parameters (log scale), colour = GFLOPs, error bars = 95% bootstrap CI of the mean per-case Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    t = comparison.table
    prefix = "" if comparison.stats_on == CV else f"{comparison.stats_on}: "
    dice = t[f"{prefix}Dice_mean_cases"].astype(float)
    ok = t["params"].notna() & dice.notna()
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    if ok.any():
        sub, y = t[ok], dice[ok]
        gflops = sub["flops"].astype(float) / 1e9
        low, high = (y - sub["Dice_ci_low"]).clip(lower=0), (sub["Dice_ci_high"] - y).clip(lower=0)
        ax.errorbar(
            sub["params"], y, yerr=[low.fillna(0), high.fillna(0)], fmt="none", ecolor="0.5", capsize=3, zorder=1
        )
        vmin, vmax = float(np.nanmin(gflops)), float(np.nanmax(gflops))
        norm = LogNorm(vmin=vmin / 1.5, vmax=vmax * 1.5) if vmin > 0 else None
        points = ax.scatter(sub["params"], y, c=gflops, cmap="viridis", norm=norm, s=70, zorder=2, edgecolors="k")
        fig.colorbar(points, ax=ax, label=f"GFLOPs ({', '.join(sorted(set(sub['flops_input'])))})")
        for x_, y_, name in zip(sub["params"], y, sub["model"], strict=True):
            ax.annotate(
                name.replace(" (", "\n("),  # plans on a second line
                (x_, y_),
                textcoords="offset points",
                xytext=(7, 4),
                fontsize=8,
                zorder=3,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            )
        ax.set_xscale("log")
        ax.margins(x=0.45, y=0.15)
    source = "cross-validation" if comparison.stats_on == CV else comparison.stats_on
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(f"Dice, mean over cases ({source})")
    ax.set_title(f"{comparison.dataset} {comparison.configuration}: Dice vs parameters (bars: 95% bootstrap CI)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(output)
    plt.close(fig)


def write_report(comparison: Comparison, folder: Path, command: str | None = None) -> None:
    """Writes comparison.md, comparison.csv (one row per model), per_case.csv (long) and comparison.png."""
    (folder / "comparison.md").write_text(markdown(comparison, command))
    table = comparison.table.copy()
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, list)).any():
            table[column] = table[column].map(lambda v: " ".join(v) if isinstance(v, list) else "")
    table.to_csv(folder / "comparison.csv", index=False)
    comparison.label_table.to_csv(folder / "per_label.csv", index=False)
    comparison.cases.to_csv(folder / "per_case.csv", index=False)
    plot(comparison, folder / "comparison.png")
