"""BUSI breast ultrasound (Al-Dhabyani et al., Data in Brief 2020) -> nnU-Net raw ``Dataset503_BUSI`` (2D PNG, 1 label).

Layout as distributed: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/"benign (1).png"`` with
``"benign (1)_mask.png"`` and, for multifocal lesions, ``_mask_1.png``/``_mask_2.png``: all masks of a case are
OR-merged. Also accepted: the CMUNeXt/LGMSNet layout ``images/"benign (1).png"`` + ``masks/0/"benign (1).png"``
(masks already merged).

Case IDs are ``benign_0001``, ``malignant_0053``, ``normal_0001``. The ``normal`` class (133 all-background cases) is
excluded by default, as in the papers (647 cases). Images are kept as 3 channels (R, G, B, ``rgb_to_0_1``): 632 of the
647 are grey stored as RGB and are written as such; the 15 with colour annotations keep them, as in the papers' cv2
loaders. BUS-B uses the same convention, so BUSI models apply to it unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import defaultdict
from pathlib import Path

from ._engine import (
    NNUNET_SPLIT,
    SPLITS_DIR,
    Case2D,
    ConversionError,
    ConvertOptions,
    DatasetSpec,
    Report,
    child_dir,
    convert_2d,
    find_dirs,
    list_files,
    load_split_file,
    pair_files,
    single_dir,
)

SPLITS = {
    NNUNET_SPLIT: "no splits_final.json: nnU-Net's 5 random folds",
    "cmunext": "the 3 published 452/195 folds of CMUNeXt and LGMSNet (benign + malignant, shipped with nnunet_lite)",
}
CLASSES = ("benign", "malignant", "normal")
REFERENCE = (
    "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. Data in Brief 28:104863 (2020), "
    "doi:10.1016/j.dib.2019.104863"
)
FILE_RE = re.compile(r"^(benign|malignant|normal)\s*\(\s*(\d+)\s*\)(_mask(?:_\d+)?)?\.png$", re.IGNORECASE)
_ID_RE = re.compile(r"^\s*(benign|malignant|normal)(?:\s*\(\s*(\d+)\s*\)|_(\d+))\s*(?:\.png)?\s*$", re.IGNORECASE)


def busi_case_id(token: str) -> str | None:
    """``"benign (12)"``, ``"benign (12).png"``, ``"benign_0012"`` -> ``"benign_0012"``."""
    m = _ID_RE.match(os.path.basename(token.replace("\\", "/")))
    if m is None:
        return None
    return f"{m.group(1).lower()}_{int(m.group(2) or m.group(3)):04d}"


def _is_original_root(d: Path) -> bool:
    return child_dir(d, "benign") is not None and child_dir(d, "malignant") is not None


def _is_cmunext_root(d: Path) -> bool:
    images, masks = child_dir(d, "images"), child_dir(d, "masks")
    return images is not None and masks is not None and child_dir(masks, "0") is not None


def _parse(path: Path, report: Report) -> tuple[str, bool] | None:
    m = FILE_RE.match(path.name)
    if m is None:
        report.ignore(path, "files not named '<class> (N)[_mask[_k]].png'")
        return None
    return f"{m.group(1).lower()}_{int(m.group(2)):04d}", m.group(3) is not None


def _add_image(images: dict[str, Path], case_id: str, path: Path) -> None:
    if case_id in images:
        raise ConversionError(
            f"duplicate case ID {case_id}: also {images[case_id]}", path, hint="remove one of the two files"
        )
    images[case_id] = path


def _cases_original(root: Path, include_normal: bool, report: Report) -> list[Case2D]:
    cases: list[Case2D] = []
    seen: dict[str, Path] = {}
    for cls in CLASSES:
        folder = child_dir(root, cls)
        if cls == "normal" and not include_normal:
            if folder is not None:
                n = sum(1 for p in folder.iterdir() if "_mask" not in p.name.lower() and p.suffix.lower() == ".png")
                report.skip(f"normal class ({n} images)", "excluded as in the papers; pass --include-normal to keep it")
            continue
        if folder is None:
            raise ConversionError(
                f"class folder '{cls}' not found next to " + ", ".join(p.name for p in root.iterdir() if p.is_dir()),
                root,
                hint="pass the Dataset_BUSI_with_GT folder as distributed"
                + (", or drop --include-normal" if cls == "normal" else ""),
            )
        images: dict[str, Path] = {}
        masks: dict[str, list[Path]] = defaultdict(list)
        for path in list_files(folder, report):
            parsed = _parse(path, report)
            if parsed is None:
                continue
            case_id, is_mask = parsed
            if is_mask:
                masks[case_id].append(path)
            else:
                if case_id in seen:
                    raise ConversionError(
                        f"duplicate case ID {case_id}: also {seen[case_id]}", path, hint="remove one of the two files"
                    )
                _add_image(images, case_id, path)
                seen[case_id] = path
        pairs = pair_files(images, masks, folder, folder, lambda p: f"{p.stem}_mask.png")
        cases += [Case2D(cid, image, ms, group=cid.split("_")[0]) for cid, image, ms in pairs]
    return cases


def _cases_cmunext(root: Path, include_normal: bool, report: Report) -> list[Case2D]:
    image_dir, mask_dir = child_dir(root, "images"), child_dir(child_dir(root, "masks"), "0")
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = defaultdict(list)
    for folder, is_mask_dir in ((image_dir, False), (mask_dir, True)):
        for path in list_files(folder, report):
            parsed = _parse(path, report)
            if parsed is None:
                continue
            case_id, _ = parsed
            if case_id.startswith("normal") and not include_normal:
                continue
            if is_mask_dir:
                masks[case_id].append(path)
            else:
                _add_image(images, case_id, path)
    pairs = pair_files(images, masks, image_dir, mask_dir, lambda p: p.name)
    report.notes.append(f"CMUNeXt layout ({root}): masks are already merged")
    return [Case2D(cid, image, ms, group=cid.split("_")[0]) for cid, image, ms in pairs]


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    include_normal = options.extra["include_normal"]
    report = Report()
    roots = find_dirs(source, lambda d: _is_original_root(d) or _is_cmunext_root(d))
    root = single_dir(
        roots,
        source,
        "BUSI",
        "Dataset_BUSI_with_GT/{benign,malignant,normal}/'benign (1).png' + 'benign (1)_mask.png' (or the CMUNeXt "
        "layout images/ + masks/0/)",
    )
    if _is_original_root(root):
        cases = _cases_original(root, include_normal, report)
    else:
        cases = _cases_cmunext(root, include_normal, report)

    splits = None
    if options.split == "cmunext":
        splits = load_split_file(SPLITS_DIR / "busi_cmunext", busi_case_id, [c.case_id for c in cases])

    return convert_2d(spec, options, cases, report, splits=splits, settings={"include_normal": include_normal})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--include-normal``."""
    parser.add_argument(
        "--include-normal",
        action="store_true",
        help="also convert the 133 'normal' cases (empty masks); the papers exclude them (647 cases)",
    )


SPEC = DatasetSpec(
    name="busi",
    folder_name="BUSI",
    default_id=503,
    title="BUSI breast ultrasound (Al-Dhabyani et al., Data in Brief 2020)",
    layout='Dataset_BUSI_with_GT/{benign,malignant,normal}/"<class> (N).png" + "<class> (N)_mask.png" '
    "[+ _mask_1.png, _mask_2.png]; also accepted: the CMUNeXt layout images/ + masks/0/",
    source="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset (Kaggle mirror: "
    "aryashah2k/breast-ultrasound-images-dataset)",
    license="article CC BY 4.0; no data licence on the original host (Kaggle mirror says CC0); cite the paper",
    role="train",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=busi_case_id,
    label_name="lesion",
    extra_options={"include_normal": False},
    add_arguments=add_arguments,
)


convert_busi = SPEC  # convert_busi(source, dataset_id, **options): see DatasetSpec.__call__
