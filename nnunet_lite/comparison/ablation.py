"""Ablation tables: each ablation variant of a network against the full network, laid out like the papers' tables.

Variants are recognised from the trainer registry (``nnunet_lite.trainers.TRAINERS``: every generated ablation class
carries ``ablation`` and ``ablation_of``), never from the trainer names. The statistics are ``cases.paired_statistics``
(the same paired Wilcoxon, Holm correction and bootstrap CI as ``compare``), restricted to the full network and its
variants, so Holm corrects over the variants of one table. Cross-validation cases pair on (fold, case).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .cases import CV, case_units, describe, paired_statistics, per_case_foreground, shared_sources
from .nnunet_io import markdown_table

REPORTED_HEADER = "reported (paper's number, its own pipeline)"
# The papers' own figures for the full networks, as docs/paper-protocols.md and the design notes record them:
# (architecture class, nnunet_lite converter of the dataset) -> text. None of the papers prints a variant's figure
# that this project records, so variants get none. Never add a number that is not in the paper.
REPORTED: dict[tuple[str, str], str] = {
    ("AULUNet", "isic2017"): "DSC 92.08 ± 0.15, mIoU 85.32 ± 0.25 (Table 1; pooled over pixels, paper's split)",
    ("AULUNet", "isic2018"): "DSC 90.37 ± 0.15, mIoU 82.44 ± 0.26 (Table 1; pooled over pixels, paper's split)",
    ("MedLiteNet", "isic2018"): "Dice 0.897 ± 0.010, IoU 0.821 ± 0.015 (ISIC 2018 test set, single model)",
}
# figures of something other than one table row (MedLiteNet's three-variant ensemble): printed under the table
REPORTED_NOTES: dict[tuple[str, str], str] = {
    ("MedLiteNet", "isic2018"): "MedLiteNet paper, three-variant ensemble (members not named): Dice 0.904 ± 0.012, "
    "IoU 0.830 ± 0.018 on the ISIC 2018 test set",
}
COLUMNS = [
    "model",
    "ablation",
    "change",
    "n_cases",
    "Dice_mean",
    "Dice_std",
    "IoU_mean",
    "IoU_std",
    "n_pairs",
    "delta_dice",
    "delta_ci_low",
    "delta_ci_high",
    "p",
    "p_holm",
    "params",
    "delta_params",
    "flops",
    "reported",
]


@dataclass
class AblationGroup:
    """A full network's trainer and the ablation variants of it that a study (or a list of trainers) names."""

    full: str
    variants: list[str]
    architecture: str  # the network class, e.g. "AULUNet" (keys the papers' figures)
    full_listed: bool = True  # False: only variants are listed, the full network is not


@dataclass
class AblationTable:
    full: str
    rows: pd.DataFrame  # COLUMNS; the full network first, then the variants in the given order
    missing: list[str] = field(default_factory=list)  # trainers without any result on the source
    notes: list[str] = field(default_factory=list)
    source: str = CV


def ablation_groups(trainers: Sequence[str]) -> list[AblationGroup]:
    """The ablation groups among ``trainers`` (unbudgeted trainer class names), from the trainer registry.

    A group exists for every full network with at least one listed variant; a variant whose full network is not
    listed gives a group with ``full_listed=False`` (no table can be made: nothing to pair against)."""
    from ..trainers import TRAINERS

    groups: dict[str, AblationGroup] = {}
    for name in trainers:
        cls = TRAINERS.get(name)
        base = getattr(cls, "ablation_of", None)
        if base is None:
            continue
        group = groups.setdefault(
            base.__name__, AblationGroup(base.__name__, [], base.architecture.__name__, base.__name__ in trainers)
        )
        group.variants.append(name)
    return list(groups.values())


def describe_variant(trainer: str) -> tuple[str, str]:
    """``(suffix, change in words)`` of an ablation trainer, as its registry class records them."""
    from ..trainers import TRAINERS

    cls = TRAINERS[trainer]
    doc = (cls.__doc__ or "").split("``: ", 1)
    return cls.ablation, doc[1].strip().rstrip(".") if len(doc) == 2 else ""


def ablation_table(
    cases: pd.DataFrame,
    full: str,
    variants: Sequence[str],
    costs: Mapping[str, Mapping[str, float]] | None = None,
    *,
    source: str = CV,
    changes: Mapping[str, tuple[str, str]] | None = None,
    reported: str | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> AblationTable:
    """Each variant's Dice/IoU and its paired difference to ``full`` on ``source``.

    Args:
        cases: the long per-case table of ``compare`` (``collect_cases``); ``full`` and ``variants`` are its
            model labels.
        costs: per model label, ``params`` and ``flops`` (e.g. ``compare``'s ``model_costs``); missing: NaN.
        changes: per variant label, ``(suffix, change in words)``; None: none shown.
        reported: the paper's figure for the full network (labelled as such in the table), or None.
    """
    costs = costs or {}
    changes = changes or {}
    on_source = cases[(cases["source"] == source) & cases["model"].isin([full, *variants])]
    fg = per_case_foreground(on_source)
    shared = source in shared_sources(fg)
    units = case_units(fg, shared)
    have = set(units["model"])
    missing = [m for m in [full, *variants] if m not in have]
    if full in have:
        stats = paired_statistics(on_source, full, source, n_resamples, seed, shared=shared).set_index("model")
    else:
        stats = pd.DataFrame()
    full_params = costs.get(full, {}).get("params", math.nan)
    rows = []
    for model in [full, *variants]:
        own = units[units["model"] == model]
        dice, dice_std = describe(own["Dice"])
        iou, iou_std = describe(own["IoU"])
        params = costs.get(model, {}).get("params", math.nan)
        suffix, change = ("", "the full network") if model == full else changes.get(model, ("", ""))
        row = {
            "model": model,
            "ablation": suffix,
            "change": change,
            "n_cases": int(own["Dice"].notna().sum()),
            "Dice_mean": dice,
            "Dice_std": dice_std,
            "IoU_mean": iou,
            "IoU_std": iou_std,
            "params": params,
            "delta_params": params - full_params if model != full else math.nan,
            "flops": costs.get(model, {}).get("flops", math.nan),
            "reported": reported if model == full and reported else "",
        }
        if model in stats.index:
            s = stats.loc[model]
            row.update({k: s[k] for k in ("n_pairs", "delta_dice", "delta_ci_low", "delta_ci_high", "p", "p_holm")})
        rows.append(row)
    notes = []
    if missing:
        notes.append(f"Missing results on {source}: {', '.join(missing)}; nothing is filled in for them.")
    if full in missing:
        notes.append(f"The full network {full} has no results: no differences and no p-values.")
    if shared:
        notes.append(f"{source}: the folds predicted the same cases, so each case is averaged over the folds first.")
    return AblationTable(full, pd.DataFrame(rows, columns=COLUMNS), missing, notes, source)


def _num(value: float, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _count(value: float, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{int(value):+,}" if sign else f"{int(value):,}"


def ablation_markdown(table: AblationTable) -> str:
    """The table as markdown, the papers' layout: one row per network, the full network first."""
    header = [
        "model",
        "change",
        "Dice (mean ± std)",
        "IoU (mean ± std)",
        "n",
        "ΔDice vs full [95 % CI]",
        "p (Wilcoxon, Holm)",
        "params",
        "Δparams",
        "GFLOPs",
        REPORTED_HEADER,
    ]
    rows = []
    for r in table.rows.to_dict("records"):
        if r["model"] in table.missing:
            measured = ["MISSING", "MISSING", "0", "–", "–"]
        else:
            delta = "–"
            if not math.isnan(r["delta_dice"]):
                ci = f"[{_num(r['delta_ci_low'], sign=True)}, {_num(r['delta_ci_high'], sign=True)}]"
                delta = f"{_num(r['delta_dice'], sign=True)} {ci}"
            measured = [
                f"{_num(r['Dice_mean'])} ± {_num(r['Dice_std'])}",
                f"{_num(r['IoU_mean'])} ± {_num(r['IoU_std'])}",
                str(r["n_cases"]) if r["model"] == table.full else f"{r['n_cases']} ({_count(r['n_pairs'])} pairs)",
                delta,
                _p(r["p_holm"]),
            ]
        change = f"`_{r['ablation']}`: {r['change']}" if r["ablation"] else r["change"]
        gflops = _num(r["flops"] / 1e9) if not math.isnan(r["flops"]) else "–"
        rows.append(
            [r["model"], change, *measured]
            + [_count(r["params"]), _count(r["delta_params"], sign=True), gflops, r["reported"] or "–"]
        )
    return markdown_table(header, rows)


def write_ablation(table: AblationTable, folder: Path, name: str | None = None) -> tuple[Path, Path]:
    """Writes ``ablation_<name>.md`` and ``ablation_<name>.csv`` into ``folder`` (``name``: the full network's
    trainer without a study budget suffix; default: its label); returns their paths."""
    stem = f"ablation_{name or table.full}"
    md, csv = folder / f"{stem}.md", folder / f"{stem}.csv"
    text = [f"# Ablation table: {table.full} and its variants", "", ablation_markdown(table), "", *table.notes]
    md.write_text("\n".join(text).rstrip() + "\n")
    table.rows.to_csv(csv, index=False)
    return md, csv
