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
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from . import DEFAULT_IDS
from ._engine import (
    IMAGE_SUFFIXES,
    NNUNET_SPLIT,
    Case2D,
    CaseResult,
    ConversionError,
    Report,
    check_split_args,
    child_dir,
    convert_registered_2d,
    find_one_dir,
    has_images,
    index_cases,
    pair_files,
    require_source,
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


def convert_kvasir(
    source: str | os.PathLike,
    dataset_id: int = DEFAULT_IDS["kvasir"],
    *,
    split: str = NNUNET_SPLIT,
    split_file: str | os.PathLike | None = None,
    resize: int | None = None,
    mask_threshold: int | None = MASK_THRESHOLD,
    overwrite: bool = False,
    num_workers: int | None = None,
    output_root: str | os.PathLike | None = None,
    verbose: bool = True,
) -> Path:
    """Convert Kvasir-SEG as downloaded to ``Dataset<ID>_KvasirSEG``.

    Args:
        source: ``Kvasir-SEG`` (holding ``images/`` and ``masks/``) or a folder containing it.
        dataset_id: nnU-Net dataset ID.
        split: only "nnunet" (nnU-Net's 5 folds); published lists go through ``split_file``.
        split_file: e.g. the MediaEval 2020 ``kvasir-seg-train-val`` folder (``train.txt`` + ``val.txt``, 880/120),
            or an nnU-Net ``splits_final.json``.
        resize: resize to ``resize`` x ``resize`` (images bilinear, masks nearest); None keeps native resolution.
        mask_threshold: mask values above it are polyp (default 127, for the JPEG masks).
        overwrite: replace an existing dataset folder.
        num_workers: worker processes (default ``$nnUNet_def_n_proc`` or min(8, CPUs)).
        output_root: where to write (default ``$nnUNet_raw``).
        verbose: print the summary.

    Returns:
        the dataset folder.

    Raises:
        ConversionError: bad or incomplete input, or an existing target without ``overwrite``.
    """
    source = require_source(source)
    check_split_args(split, split_file, SPLITS)
    report = Report()
    root = find_one_dir(source, _is_root, "Kvasir-SEG folder", "Kvasir-SEG/images/<id>.jpg + Kvasir-SEG/masks/<id>.jpg")
    image_dir, mask_dir = child_dir(root, "images"), child_dir(root, "masks")
    images = index_cases(image_dir, report, _case_id)
    masks = defaultdict(list, {k: [v] for k, v in index_cases(mask_dir, report, _case_id).items()})
    pairs = pair_files(images, masks, image_dir, mask_dir, lambda p: p.name)
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

    return convert_registered_2d(
        "kvasir",
        cases,
        report,
        label_name="polyp",
        reference=REFERENCE,
        case_id=kvasir_case_id,
        dataset_id=dataset_id,
        split=split,
        split_file=split_file,
        resize=resize,
        mask_threshold=mask_threshold,
        overwrite=overwrite,
        num_workers=num_workers,
        output_root=output_root,
        verbose=verbose,
        check_results=check_sizes,
    )
