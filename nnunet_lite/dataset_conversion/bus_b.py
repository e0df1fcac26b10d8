"""BUS Dataset B (UDIAT, Yap et al., JBHI 2018) -> nnU-Net raw ``Dataset513_BUSB`` (2D PNG, 1 label).

A zero-shot target for BUSI models. Layout as distributed on request: ``BUS_Dataset_B/original/<n>.png`` and
``BUS_Dataset_B/GT/<n>.png`` plus ``DatasetB.xlsx`` (lesion type, not read). Images are written with 3 channels (grey
replicated, ``rgb_to_0_1``), exactly like BUSI, so a BUSI-trained model takes them unchanged. Case IDs are
``busb_<n>`` (the file stem, e.g. ``busb_000001``). A mask may carry a ``_GT``/``_mask`` suffix; it is matched to its
image by stem.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from ._engine import (
    IMAGE_SUFFIXES,
    NNUNET_SPLIT,
    Case2D,
    ConversionError,
    ConvertOptions,
    DatasetSpec,
    Report,
    child_dir,
    convert_2d,
    find_one_dir,
    has_images,
    index_cases,
    pair_files,
    sanitize_id,
)

SPLITS = {NNUNET_SPLIT: "no splits_final.json: nnU-Net's 5 random folds (BUS-B is normally only evaluated on)"}
REFERENCE = (
    "Yap MH, Pons G, Marti J, et al. Automated breast ultrasound lesions detection using convolutional neural "
    "networks. IEEE JBHI 22(4):1218-1226 (2018), doi:10.1109/JBHI.2017.2731873"
)
_MASK_SUFFIX = re.compile(r"[_\-](gt|mask|seg|label)$", re.IGNORECASE)


def busb_case_id(token: str) -> str | None:
    """``"000001"``, ``"000001.png"``, ``"busb_000001"`` -> ``"busb_000001"``."""
    name = os.path.basename(token.strip().replace("\\", "/"))
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_SUFFIXES:
        stem = name
    stem = re.sub(r"^busb_", "", stem, flags=re.IGNORECASE)
    if not stem:
        return None
    try:
        return "busb_" + sanitize_id(stem)
    except ConversionError:
        return None


def _image_dir(d: Path) -> Path | None:
    return child_dir(d, "original", "originals", "images")


def _gt_dir(d: Path) -> Path | None:
    return child_dir(d, "GT", "Ground Truth", "GroundTruth", "masks")


def _is_root(d: Path) -> bool:
    image_dir, gt_dir = _image_dir(d), _gt_dir(d)
    return image_dir is not None and gt_dir is not None and has_images(image_dir) and has_images(gt_dir)


def _image_id(path: Path) -> tuple[str | None, str]:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, "non-image files"
    return "busb_" + sanitize_id(path.stem), ""


def _mask_id(path: Path) -> tuple[str | None, str]:
    return _image_id(path.with_name(_MASK_SUFFIX.sub("", path.stem) + path.suffix))


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    report = Report()
    root = find_one_dir(
        source, _is_root, "BUS Dataset B folder", "BUS_Dataset_B/original/<n>.png + BUS_Dataset_B/GT/<n>.png"
    )
    image_dir, gt_dir = _image_dir(root), _gt_dir(root)
    images = index_cases(image_dir, report, _image_id)
    masks = defaultdict(list, {k: [v] for k, v in index_cases(gt_dir, report, _mask_id).items()})
    pairs = pair_files(images, masks, image_dir, gt_dir, lambda p: p.name)
    cases = [Case2D(cid, image, ms) for cid, image, ms in pairs]

    return convert_2d(spec, options, cases, report)


SPEC = DatasetSpec(
    name="bus-b",
    folder_name="BUSB",
    default_id=513,
    title="BUS Dataset B, UDIAT (Yap et al., JBHI 2018), zero-shot target for BUSI",
    layout="BUS_Dataset_B/original/<n>.png + BUS_Dataset_B/GT/<n>.png (+ DatasetB.xlsx)",
    source="on request from the authors (Yap et al., Manchester Metropolitan University)",
    license="research only, on request; no redistribution",
    role="zero-shot",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=busb_case_id,
    label_name="lesion",
)


convert_bus_b = SPEC  # convert_bus_b(source, dataset_id, **options): see DatasetSpec.__call__
