"""ISIC 2017 Part 1 and ISIC 2018 Task 1 lesion segmentation -> nnU-Net raw ``Dataset501_ISIC2017`` /
``Dataset502_ISIC2018`` (2D PNG, RGB, 1 label).

Only ``ISIC_<digits>.jpg`` inputs and ``ISIC_<digits>_segmentation.png`` masks are read (case-insensitively);
``LICENSE.txt``, ``ATTRIBUTION.txt``, ``*_superpixels.png`` and the metadata CSVs are skipped. The official training set
goes to imagesTr. The validation and test sets (each only if its ground-truth folder is present) go to
imagesTs/labelsTs, listed in ``test_sets.json``; ``split="official"`` moves the validation set into imagesTr instead and
writes it as fold 0 of ``splits_final.json``; ``"trainval"`` and ``"all"`` pool sets into imagesTr without a split.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ._engine import (
    NNUNET_SPLIT,
    Case2D,
    ConversionError,
    ConvertOptions,
    DatasetSpec,
    Report,
    convert_2d,
    describe_found,
    find_folders,
    index_cases,
    pair_files,
)

SPLITS = {
    NNUNET_SPLIT: "training set in imagesTr (nnU-Net's 5 folds); validation and test sets in imagesTs/labelsTs",
    "official": "training + validation sets in imagesTr, splits_final.json = 1 fold (train / official validation); "
    "test set in imagesTs/labelsTs",
    "trainval": "training + validation sets in imagesTr (nnU-Net's 5 folds, or --split-file), e.g. for the 7:3 "
    "splits of EGE-UNet/MALUNet over 2150 / 2694 images; test set in imagesTs/labelsTs",
    "all": "training, validation and test sets all in imagesTr (nnU-Net's 5 folds, or --split-file)",
}
# where each official set goes, per --split
_PLACEMENT = {
    NNUNET_SPLIT: {"training": "Tr", "validation": "Ts", "test": "Ts"},
    "official": {"training": "Tr", "validation": "Tr", "test": "Ts"},
    "trainval": {"training": "Tr", "validation": "Tr", "test": "Ts"},
    "all": {"training": "Tr", "validation": "Tr", "test": "Tr"},
}

# (part, input folder, ground-truth folder), as in the official zips
_SETS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "isic2017": (
        ("training", "ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
        ("validation", "ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
        ("test", "ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
    ),
    "isic2018": (
        ("training", "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
        ("validation", "ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
        ("test", "ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
    ),
}
_REFERENCES = {
    "isic2017": "Codella et al., Skin lesion analysis toward melanoma detection: a challenge at ISBI 2017, "
    "ISBI 2018 (arXiv:1710.05006)",
    "isic2018": "Codella et al., Skin lesion analysis toward melanoma detection 2018, arXiv:1902.03368; "
    "Tschandl et al., The HAM10000 dataset, Sci Data 5:180161 (2018)",
}
IMAGE_RE = re.compile(r"^ISIC_(\d+)\.jpe?g$", re.IGNORECASE)
MASK_RE = re.compile(r"^ISIC_(\d+)_segmentation\.png$", re.IGNORECASE)


def isic_case_id(token: str) -> str | None:
    """``"ISIC_0000000"``, ``"isic_0000000.jpg"``, ``"ISIC_0000000_segmentation.png"`` -> ``"ISIC_0000000"``."""
    m = re.search(r"ISIC_(\d+)", token, re.IGNORECASE)
    return f"ISIC_{m.group(1)}" if m else None


def _case_id_by(pattern: re.Pattern) -> Callable[[Path], tuple[str | None, str]]:
    def case_id(path: Path) -> tuple[str | None, str]:
        m = pattern.match(path.name)
        if m is not None:
            return f"ISIC_{m.group(1)}", ""
        name = path.name.lower()
        if name.endswith("_superpixels.png"):
            return None, "*_superpixels.png files"
        return None, "metadata CSV files" if name.endswith(".csv") else "other files"

    return case_id


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    name, split = spec.name, options.split
    sets = _SETS[name]
    wanted: dict[str, tuple[str, ...]] = {}
    labels: dict[str, str] = {}
    for part, image_dir, gt_dir in sets:
        wanted[part + "/input"], wanted[part + "/gt"] = (image_dir,), (gt_dir,)
        labels[part + "/input"], labels[part + "/gt"] = image_dir, gt_dir
    found = find_folders(source, wanted)
    if found["training/input"] is None or found["training/gt"] is None:
        keys = ["training/input", "training/gt"]
        raise ConversionError(
            "the training folders of the official download were not found: "
            + describe_found({k: found[k] for k in keys}, labels),
            source,
            hint=f"pass the folder you unpacked the {name.upper()} zips into (or the folder that contains it)",
        )

    report = Report()
    cases: list[Case2D] = []
    for part, image_name, gt_name in sets:
        image_dir, gt_dir = found[part + "/input"], found[part + "/gt"]
        if image_dir is None and gt_dir is None:
            report.skip(f"{part} set", f"{image_name} and {gt_name} not found")
            continue
        if image_dir is None:
            report.skip(f"{part} set", f"{gt_name} found, but not {image_name}")
            continue
        images = index_cases(image_dir, report, _case_id_by(IMAGE_RE))
        if gt_dir is None:
            report.skip(f"{part} set ({len(images)} images)", f"no ground truth ({gt_name} not found)")
            continue
        if not images:
            raise ConversionError(
                "no ISIC_<id>.jpg images in this folder", image_dir, hint="check that the zip was unpacked completely"
            )
        masks = {k: [v] for k, v in index_cases(gt_dir, report, _case_id_by(MASK_RE)).items()}
        pairs = pair_files(images, masks, image_dir, gt_dir, lambda p: f"{p.stem}_segmentation.png")
        subset = _PLACEMENT[split][part]
        cases += [Case2D(cid, image, ms, subset=subset, part=part) for cid, image, ms in pairs]
        report.notes.append(f"{part} set from {image_dir.name} + {gt_dir.name}")

    splits = None
    if split == "official":
        validation = [c.case_id for c in cases if c.part == "validation"]
        if not validation:
            raise ConversionError(
                f"--split official needs the validation set with its ground truth ({sets[1][1]} + {sets[1][2]})",
                source,
                hint="unpack the validation zips next to the training ones, or use the default split",
            )
        splits = [{"train": [c.case_id for c in cases if c.part == "training"], "val": validation}]

    return convert_2d(spec, options, cases, report, splits=splits)


SPEC_2017 = DatasetSpec(
    name="isic2017",
    folder_name="ISIC2017",
    default_id=501,
    title="ISIC 2017 Part 1 lesion segmentation (Codella et al., ISBI 2018), dermoscopy RGB",
    layout="ISIC-2017_Training_Data/ISIC_*.jpg + ISIC-2017_Training_Part1_GroundTruth/*_segmentation.png; "
    "optional ISIC-2017_Validation_Data/_Part1_GroundTruth, ISIC-2017_Test_v2_Data/_Part1_GroundTruth",
    source="https://challenge.isic-archive.com/data/#2017",
    license="CC-0 (ISIC 2017 challenge data); read LICENSE.txt in the download",
    role="train",
    reference=_REFERENCES["isic2017"],
    splits=SPLITS,
    convert=_convert,
    case_id=isic_case_id,
    label_name="lesion",
    split_file_with=(NNUNET_SPLIT, "trainval", "all"),
)

SPEC_2018 = DatasetSpec(
    name="isic2018",
    folder_name="ISIC2018",
    default_id=502,
    title="ISIC 2018 Task 1 lesion boundary segmentation (Codella et al., 2019), dermoscopy RGB",
    layout="ISIC2018_Task1-2_Training_Input/ISIC_*.jpg + ISIC2018_Task1_Training_GroundTruth/"
    "*_segmentation.png; optional ISIC2018_Task1-2_{Validation,Test}_Input + "
    "ISIC2018_Task1_{Validation,Test}_GroundTruth",
    source="https://challenge.isic-archive.com/data/#2018",
    license="see LICENSE.txt in the ISIC 2018 zips (CC BY-NC 4.0 is usually cited)",
    role="train",
    reference=_REFERENCES["isic2018"],
    splits=SPLITS,
    convert=_convert,
    case_id=isic_case_id,
    label_name="lesion",
    split_file_with=(NNUNET_SPLIT, "trainval", "all"),
)


convert_isic2017 = SPEC_2017  # convert_isic2017(source, dataset_id, **options): see DatasetSpec.__call__
convert_isic2018 = SPEC_2018  # convert_isic2018(source, dataset_id, **options): see DatasetSpec.__call__
