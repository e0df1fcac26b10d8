"""Kvasir-SEG polyps (Jha et al., MMM 2020) -> nnU-Net raw ``Dataset504_KvasirSEG`` (2D PNG, RGB, 1 label).

Layout as distributed: ``Kvasir-SEG/images/<id>.jpg`` and ``Kvasir-SEG/masks/<id>.jpg`` plus ``kavsir_bboxes.json``.
Images are JPEGs, decoded once and written as lossless PNG. Masks are 3-channel JPEGs with compression noise and are
thresholded at 127 (as LGMSNet and DUCK-Net do); no pixel of the official masks lies in 20..235, so any mid threshold
gives the same labels. Image sizes are checked against ``kavsir_bboxes.json`` when it is present (a resized copy of
the dataset is reported).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ._engine import (
    IMAGE_SUFFIXES,
    NNUNET_SPLIT,
    Case2D,
    CaseResult,
    ConversionError,
    ConvertOptions,
    DatasetSpec,
    Report,
    child_dir,
    convert_2d,
    find_one_dir,
    has_images,
    pair_folders,
    sanitize_id,
)

SPLITS = {NNUNET_SPLIT: "no splits_final.json: nnU-Net's 5 random folds (use --split-file for published lists)"}
REFERENCE = (
    "Jha D, Smedsrud PH, Riegler MA, et al. Kvasir-SEG: A Segmented Polyp Dataset. MMM 2020, "
    "doi:10.1007/978-3-030-37734-2_37"
)
MASK_THRESHOLD = 127
_JPEG_OR_PNG = (".jpg", ".jpeg", ".png")


def kvasir_case_id(token: str) -> str | None:
    """``"cju0qkwl35piu0993l0dewei2"``, ``"images/cju0qkwl35piu0993l0dewei2.jpg"`` -> the file stem."""
    name = os.path.basename(token.strip().replace("\\", "/"))
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_SUFFIXES:
        stem = name
    try:
        return sanitize_id(stem)
    except ConversionError:
        return None


def _is_root(d: Path) -> bool:
    images, masks = child_dir(d, "images"), child_dir(d, "masks")
    return images is not None and masks is not None and has_images(images) and has_images(masks)


def _case_id(path: Path) -> tuple[str | None, str]:
    if path.suffix.lower() not in _JPEG_OR_PNG:
        return None, "non-image files"
    return sanitize_id(path.stem), ""


def _check_bboxes(root: Path, report: Report) -> dict | None:
    path = next((p for p in (root / "kavsir_bboxes.json", root / "kvasir_bboxes.json") if p.is_file()), None)
    if path is None:
        report.notes.append("no kavsir_bboxes.json next to images/ and masks/; image sizes not cross-checked")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        report.warnings.append(f"{path.name} is not valid JSON ({e}); image sizes not cross-checked")
        return None


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    report = Report()
    root = find_one_dir(source, _is_root, "Kvasir-SEG folder", "Kvasir-SEG/images/<id>.jpg + Kvasir-SEG/masks/<id>.jpg")
    pairs = pair_folders(child_dir(root, "images"), child_dir(root, "masks"), report, _case_id)
    cases = [Case2D(cid, image, ms) for cid, image, ms in pairs]

    bboxes = _check_bboxes(root, report)
    if bboxes is not None:
        listed = set(bboxes)
        missing = sorted(c.case_id for c in cases if c.case_id not in listed)
        if missing:
            report.warnings.append(f"{len(missing)} images are not listed in kavsir_bboxes.json, e.g. {missing[:3]}")
        if len(cases) < len(listed):
            report.notes.append(f"SOURCE holds {len(cases)} of the {len(listed)} images listed in kavsir_bboxes.json")

    def check_sizes(results: Sequence[CaseResult], report: Report) -> None:
        if bboxes is None:
            return
        wrong = []
        for r in results:
            entry = bboxes.get(r.case_id)
            if isinstance(entry, dict) and "height" in entry and "width" in entry:
                if (int(entry["height"]), int(entry["width"])) != r.size:
                    wrong.append(r.case_id)
        if wrong:
            report.warnings.append(
                f"{len(wrong)} images differ in size from kavsir_bboxes.json (a resized copy?), e.g. {wrong[:3]}"
            )
        else:
            report.notes.append("all image sizes match kavsir_bboxes.json")

    return convert_2d(spec, options, cases, report, check_results=check_sizes)


SPEC = DatasetSpec(
    name="kvasir",
    folder_name="KvasirSEG",
    default_id=504,
    title="Kvasir-SEG polyps (Jha et al., MMM 2020), colonoscopy RGB",
    layout="Kvasir-SEG/images/<id>.jpg + Kvasir-SEG/masks/<id>.jpg (+ kavsir_bboxes.json)",
    source="https://datasets.simula.no/kvasir-seg/",
    license="research and education only; commercial use needs prior permission from Simula",
    role="train",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=kvasir_case_id,
    label_name="polyp",
    mask_threshold=MASK_THRESHOLD,
)


convert_kvasir = SPEC  # convert_kvasir(source, dataset_id, **options): see DatasetSpec.__call__
