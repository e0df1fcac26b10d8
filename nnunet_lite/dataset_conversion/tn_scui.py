"""TN-SCUI 2020 thyroid nodule ultrasound (MICCAI 2020) -> nnU-Net raw ``Dataset505_TNSCUI`` (2D PNG, 1 label).

Layout as distributed to registered participants: ``image/<ID>.PNG`` and ``mask/<ID>.PNG`` (integer IDs, upper-case
extension: matched case-insensitively) plus ``train.csv`` (columns ID, CATE). Case IDs are ``tnscui_<ID>`` with the ID
zero-padded to 4 digits. Images are written with 3 channels (grey replicated, ``rgb_to_0_1``), the same convention as
every other 2D dataset here and as the papers' cv2 loaders. The organisers forbid redistribution, so there is no public
sample; LGMSNet's three 2550/1094 lists (``tuscui_{train,val}{1,2,3}.txt``, bare IDs) can be passed as ``split_file``.
"""

from __future__ import annotations

import csv
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
)

SPLITS = {NNUNET_SPLIT: "no splits_final.json: nnU-Net's 5 random folds (LGMSNet's lists go through --split-file)"}
REFERENCE = (
    "TN-SCUI 2020: Thyroid Nodule Segmentation and Classification in Ultrasound Images, MICCAI 2020 challenge, "
    "https://tn-scui2020.grand-challenge.org/"
)


def tnscui_case_id(token: str) -> str | None:
    """``"1698"``, ``"1698.PNG"``, ``"image/1698.PNG"``, ``"tnscui_1698"`` -> ``"tnscui_1698"``."""
    name = os.path.basename(token.strip().replace("\\", "/"))
    m = re.fullmatch(r"(?:tnscui_)?(\d+)(?:\.(?:png|jpe?g|bmp|tiff?))?", name, re.IGNORECASE)
    return f"tnscui_{int(m.group(1)):04d}" if m else None


def _image_dir(d: Path) -> Path | None:
    return child_dir(d, "image", "images")


def _mask_dir(d: Path) -> Path | None:
    return child_dir(d, "mask", "masks")


def _is_root(d: Path) -> bool:
    image_dir, mask_dir = _image_dir(d), _mask_dir(d)
    return image_dir is not None and mask_dir is not None and has_images(image_dir) and has_images(mask_dir)


def _case_id(path: Path) -> tuple[str | None, str]:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, "non-image files"
    if not path.stem.isdigit():
        return None, "images not named <integer ID>"
    return f"tnscui_{int(path.stem):04d}", ""


def _categories(root: Path, report: Report) -> dict[str, str]:
    """case ID -> "CATE <value>" from train.csv next to (or above) image/ and mask/, if it is there."""
    path = next((p for p in (root / "train.csv", root.parent / "train.csv") if p.is_file()), None)
    if path is None:
        return {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        cats = {}
        for row in rows:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            cid = tnscui_case_id(row.get("id", ""))
            if cid is not None and row.get("cate", "") != "":
                cats[cid] = f"CATE {row['cate']}"
        return cats
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        report.warnings.append(f"could not read {path} ({e}); categories not reported")
        return {}


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    report = Report()
    root = find_one_dir(source, _is_root, "TN-SCUI folder", "image/<ID>.PNG + mask/<ID>.PNG")
    image_dir, mask_dir = _image_dir(root), _mask_dir(root)
    images = index_cases(image_dir, report, _case_id)
    if not images:
        raise ConversionError("no images named <integer ID>.PNG", image_dir, hint="pass the TN-SCUI training folder")
    masks = defaultdict(list, {k: [v] for k, v in index_cases(mask_dir, report, _case_id).items()})
    pairs = pair_files(images, masks, image_dir, mask_dir, lambda p: p.name)
    cats = _categories(root, report)
    cases = [Case2D(cid, image, ms, group=cats.get(cid)) for cid, image, ms in pairs]

    return convert_2d(spec, options, cases, report)


SPEC = DatasetSpec(
    name="tn-scui",
    folder_name="TNSCUI",
    default_id=505,
    title="TN-SCUI 2020 thyroid nodule ultrasound (MICCAI 2020 challenge)",
    layout="image/<ID>.PNG + mask/<ID>.PNG (+ train.csv with ID,CATE)",
    source="https://tn-scui2020.grand-challenge.org/ (registration; redistribution forbidden)",
    license="challenge terms: research only, no redistribution",
    role="train",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=tnscui_case_id,
    label_name="nodule",
)


convert_tn_scui = SPEC  # convert_tn_scui(source, dataset_id, **options): see DatasetSpec.__call__
