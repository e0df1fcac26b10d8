"""``nnunet_lite figure``: the qualitative figure of a segmentation paper, drawn from nnU-Net's results tree.

Rows are cases, chosen by the baseline's Dice (best / median / worst) or by the largest difference between the
baseline and another trainer; the first column is the image with the ground truth, then one column per trainer with
its prediction as a contour and its Dice, read from nnU-Net's ``summary.json`` (the evaluator's per-case value). For
3D images the slice with the largest ground-truth area is shown. Colours are Okabe & Ito's colour-blind-safe palette.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .comparison.nnunet_io import ComparisonError, dataset_name, quiet, require_env
from .robustness.make import CLEAN, channel_files, load_manifest
from .robustness.paths import model_folder, result_folder
from .robustness.report import OKABE_ITO

SELECTIONS = ("best", "median", "worst", "diff")


@dataclass
class Panel:
    case: str
    trainer: str  # "" for the image + ground truth column
    dice: float
    row: int
    column: int


def _case_dice(summary_file: Path, ending: str) -> dict[str, tuple[float, str]]:
    """Per case: the foreground-mean Dice of nnU-Net's evaluator and the reference file."""
    summary = json.loads(summary_file.read_text())
    out = {}
    for case in summary["metric_per_case"]:
        values = [m["Dice"] for m in case["metrics"].values()]
        dice = float(np.nanmean(values)) if not all(v is None or np.isnan(v) for v in values) else float("nan")
        out[Path(case["reference_file"]).name.removesuffix(ending)] = (dice, case["reference_file"])
    return out


def select_cases(scores: dict[str, dict[str, float]], trainers: Sequence[str], how: Sequence[str]) -> list[str]:
    """Case IDs for ``best``/``median``/``worst`` of the baseline (``trainers[0]``) and ``diff`` (largest absolute
    difference between the baseline and ``trainers[1]``); duplicates are dropped."""
    base = scores[trainers[0]]
    ranked = sorted((d, c) for c, d in base.items() if not math.isnan(d))
    if not ranked:
        raise ComparisonError(f"{trainers[0]} has no case with a defined Dice")
    chosen = []
    for item in how:
        if item == "best":
            chosen.append(ranked[-1][1])
        elif item == "worst":
            chosen.append(ranked[0][1])
        elif item == "median":
            chosen.append(ranked[(len(ranked) - 1) // 2][1])
        elif item == "diff":
            if len(trainers) < 2:
                raise ComparisonError("--cases diff needs at least two trainers")
            other = scores[trainers[1]]
            gaps = sorted(
                ((abs(other[c] - base[c]), c) for c in base if c in other and not math.isnan(other[c] - base[c])),
                reverse=True,
            )
            chosen.append(next((c for _, c in gaps if c not in chosen), gaps[0][1]))
        else:
            raise ComparisonError(f"--cases: unknown selection {item!r} (choose from {SELECTIONS})")
    return list(dict.fromkeys(chosen))


def _display(image: np.ndarray) -> np.ndarray:
    """(c, y, x) -> an RGB or grey image in [0, 1] for imshow."""
    if image.shape[0] == 3:
        rgb = np.moveaxis(image, 0, -1).astype(np.float64)
        return np.clip(rgb / 255 if rgb.max() > 1 else rgb, 0, 1)
    grey = image[0].astype(np.float64)
    low, high = np.percentile(grey, (0.5, 99.5))
    return np.clip((grey - low) / max(high - low, 1e-12), 0, 1)


def make_figure(
    dataset: str | int,
    configuration: str,
    trainers: Sequence[str],
    output: Path,
    fold: int | str = 0,
    plans_name: str = "nnUNetPlans",
    cases: Sequence[str] = ("best", "median", "worst"),
    ids: Sequence[str] | None = None,
    baseline: str | None = None,
    set_name: str | None = None,
    corruption: str | None = None,
    severity: int | None = None,
):
    """Draws the figure and saves it as PNG and PDF (``output`` with either suffix; both are written).

    Source of images, references and predictions: fold ``fold``'s nnU-Net validation (default), or a robustness
    set's clean copy (``set_name``) or one of its corrupted copies (``corruption`` and ``severity``).

    Returns:
        ``(figure, panels, files)``: the matplotlib figure, one ``Panel`` per axis and the written files.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    name = dataset_name(dataset)
    baseline = baseline or trainers[0]
    if baseline not in trainers:
        raise ComparisonError(f"--baseline {baseline} is not among the trainers {list(trainers)}")
    trainers = [baseline] + [t for t in trainers if t != baseline]
    fold = str(fold)
    models = {t: model_folder(name, t, plans_name, configuration) for t in trainers}
    dataset_json = json.loads((models[baseline] / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    if (corruption is None) != (severity is None):
        raise ComparisonError("give both --corruption and --severity, or neither")
    if set_name is None and corruption is None:
        folders = {t: m / f"fold_{fold}" / "validation" for t, m in models.items()}
        images_folder = require_env("nnUNet_raw") / name / "imagesTr"
        where = f"fold {fold} validation"
    else:
        manifest = load_manifest(name, set_name)
        sub = CLEAN if corruption is None else f"{corruption}_s{severity}"
        if sub not in manifest["sets"]:
            raise ComparisonError(f"set {manifest['set']} has no {sub} (has: {', '.join(manifest['sets'])})")
        folders = {t: result_folder(m, manifest["set"], fold, sub) for t, m in models.items()}
        images_folder = Path(manifest["folder"]) / sub / "imagesTs"
        where = f"{manifest['set']}: {sub.replace('_s', ' severity ') if sub != CLEAN else 'clean'}, fold {fold}"
    for t, folder in folders.items():
        if not (folder / "summary.json").is_file():
            hint = "nnunet_lite robustness run" if set_name or corruption else "nnUNetv2_train ... --val"
            raise ComparisonError(f"no {folder / 'summary.json'} for {t} (run {hint})")
    per_case = {t: _case_dice(f / "summary.json", ending) for t, f in folders.items()}
    scores = {t: {c: d for c, (d, _) in v.items()} for t, v in per_case.items()}
    if ids:
        unknown = [i for i in ids if i not in scores[baseline]]
        if unknown:
            raise ComparisonError(
                f"--ids {unknown} not among the evaluated cases ({', '.join(sorted(scores[baseline]))})"
            )
        chosen = list(ids)
    else:
        chosen = select_cases(scores, trainers, cases)

    with quiet():
        io = determine_reader_writer_from_dataset_json(dataset_json, per_case[baseline][chosen[0]][1])()
    labels = sorted({int(v) for v in dataset_json["labels"].values() if not isinstance(v, list) and int(v) > 0})
    n_cols = 1 + len(trainers)
    fig, axes = plt.subplots(len(chosen), n_cols, figsize=(2.3 * n_cols, 2.3 * len(chosen) + 0.4), squeeze=False)
    panels = []
    for row, case in enumerate(chosen):
        image, _ = io.read_images([str(p) for p in channel_files(images_folder, case, ending)])
        reference, _ = io.read_seg(per_case[baseline][case][1])
        z = int(np.argmax((reference[0] > 0).reshape(reference.shape[1], -1).sum(1))) if reference.shape[1] > 1 else 0
        shown, ref = _display(image[:, z]), reference[0, z]
        predictions = {t: io.read_seg(str(folders[t] / f"{case}{ending}"))[0][0, z] for t in trainers}
        for col in range(n_cols):
            ax = axes[row, col]
            ax.imshow(shown, cmap=None if shown.ndim == 3 else "gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for i, label in enumerate(labels):
                colour = OKABE_ITO[(i + 2) % len(OKABE_ITO)]
                if (ref == label).any():
                    style = (
                        dict(linewidths=1.4, linestyles="solid")
                        if col == 0
                        else dict(linewidths=0.8, linestyles="dashed")
                    )
                    ax.contour(ref == label, levels=[0.5], colors=["white" if col else colour], **style)
                if col and (predictions[trainers[col - 1]] == label).any():
                    ax.contour(
                        predictions[trainers[col - 1]] == label, levels=[0.5], colors=[OKABE_ITO[1]], linewidths=1.4
                    )
            if col == 0:
                ax.set_ylabel(case, fontsize=8)
                if row == 0:
                    ax.set_title("image + ground truth", fontsize=8)
                panels.append(Panel(case, "", float("nan"), row, col))
            else:
                trainer = trainers[col - 1]
                dice = scores[trainer][case]
                ax.set_title((f"{trainer}\n" if row == 0 else "") + f"Dice {dice:.3f}", fontsize=8)
                panels.append(Panel(case, trainer, dice, row, col))
    fig.suptitle(f"{name} ({configuration}), {where}", fontsize=9)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    files = [output.with_suffix(".png"), output.with_suffix(".pdf")]
    for f in files:
        tmp = f.with_name(f".{f.name}.tmp{f.suffix}")
        fig.savefig(tmp, dpi=150 if f.suffix == ".png" else None)
        tmp.replace(f)
    return fig, panels, files
