"""BTCV / Synapse multi-organ abdominal CT (MICCAI 2015 "Beyond the Cranial Vault") -> nnU-Net raw ``Dataset520_BTCV``
(3D NIfTI, 1 CT channel, 13 organ labels).

Layout as distributed on Synapse (``Abdomen/RawData``): ``RawData/Training/img/img0001.nii.gz`` with
``RawData/Training/label/label0001.nii.gz`` (30 labelled cases, 0001-0010 and 0021-0040), and the unlabelled challenge
test images ``RawData/Test/img/img0061.nii.gz`` (``Testing/`` is accepted too). Volumes are copied unchanged (never
resampled) after checking that image and label share one voxel grid and that labels lie in 0..13. The case
``img0001`` becomes ``btcv_0001``. The channel is named ``CT``, so nnU-Net uses its CT normalisation.

Splits (``--split``): ``nnunet`` (all 30 in imagesTr, nnU-Net's 5 folds), ``transunet`` (TransUNet's Synapse protocol:
18 cases in imagesTr, the 12 test cases in imagesTs/labelsTs; the challenge test images then go to
imagesTs_challenge so that imagesTs holds exactly the cases labelsTs scores) and ``monai`` (MONAI/UNETR's
``dataset_0.json``: all 30 in imagesTr, ``splits_final.json`` with one fold 24 train / 6 validation).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ._engine import (
    NNUNET_SPLIT,
    SPLITS_DIR,
    Case3D,
    ConversionError,
    ConvertOptions,
    DatasetSpec,
    Options3D,
    Report,
    child_dir,
    convert_3d,
    find_one_dir,
    id_ranges,
    list_files,
    load_split_file,
    nifti_stem,
    pair_files,
    read_id_list,
)

SPLITS = {
    NNUNET_SPLIT: "all 30 labelled cases in imagesTr (nnU-Net's 5 folds, or --split-file); challenge test images in "
    "imagesTs",
    "transunet": "TransUNet's Synapse protocol: 18 cases in imagesTr, the 12 test cases in imagesTs/labelsTs "
    "(challenge test images in imagesTs_challenge); papers report Dice on 8 organs",
    "monai": "MONAI/UNETR dataset_0.json: all 30 in imagesTr, splits_final.json = 1 fold, 24 train / 6 validation "
    "(0035-0040); challenge test images in imagesTs",
}
REFERENCE = (
    "Landman B, Xu Z, Iglesias JE, Styner M, Langerak TR, Klein A. MICCAI Multi-Atlas Labeling Beyond the Cranial "
    "Vault - Workshop and Challenge, 2015, doi:10.7303/syn3193805"
)
# The challenge's label names (as in nnU-Net v1's Task017 converter)
LABELS: dict[str, int] = {
    "background": 0,
    "spleen": 1,
    "right kidney": 2,
    "left kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior vena cava": 9,
    "portal vein and splenic vein": 10,
    "pancreas": 11,
    "right adrenal gland": 12,
    "left adrenal gland": 13,
}
LABEL_NAMES: dict[int, str] = {v: k for k, v in LABELS.items() if v}
# TransUNet (Chen et al., 2021) and the papers that follow its Synapse protocol report Dice and HD95 on these 8 organs
SYNAPSE_8_ORGANS: dict[str, int] = {
    name: LABELS[name]
    for name in ("aorta", "gallbladder", "left kidney", "right kidney", "liver", "pancreas", "spleen", "stomach")
}
# The 30 labelled training cases of the challenge
LABELLED_CASES = tuple(f"btcv_{n:04d}" for n in (*range(1, 11), *range(21, 41)))
_IMG_RE = re.compile(r"^img(\d+)$", re.IGNORECASE)
_LABEL_RE = re.compile(r"^label(\d+)$", re.IGNORECASE)


def btcv_case_id(token: str) -> str | None:
    """``"img0001.nii.gz"``, ``"label0001"``, ``"case0001"`` (TransUNet), ``"imagesTr/img0035.nii.gz"`` (MONAI),
    ``"0001"`` -> ``"btcv_0001"``."""
    name = os.path.basename(str(token).strip().replace("\\", "/"))
    name = nifti_stem(name) or name
    numbers = re.findall(r"\d+", name)
    return f"btcv_{int(numbers[-1]):04d}" if numbers else None


def _shipped_split(name: str) -> dict[str, list[str]]:
    folder = SPLITS_DIR / f"btcv_{name}"
    files = {"transunet": ("train_cases.txt", "test_vol.txt"), "monai": ("train.txt", "val.txt")}[name]
    train, held_out = (sorted(btcv_case_id(t) for t in read_id_list(folder / f)) for f in files)
    return {"train": train, "held_out": held_out}


def _number(path: Path, pattern: re.Pattern) -> int:
    return int(pattern.match(nifti_stem(path.name)).group(1))


def _numbered_volumes(folder: Path, pattern: re.Pattern, what: str, report: Report) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in list_files(folder, report):
        stem = nifti_stem(path.name)
        m = pattern.match(stem) if stem else None
        if m is None:
            report.ignore(path, f"files in {folder.name}/ not named {what}NNNN.nii.gz")
            continue
        number = int(m.group(1))
        if number in found:
            raise ConversionError(
                f"two files for case {number:04d}: {found[number].name} and {path.name}",
                path,
                hint="keep one of them (e.g. delete the uncompressed .nii copy)",
            )
        found[number] = path
    return found


def _is_training_dir(d: Path) -> bool:
    img, label = child_dir(d, "img"), child_dir(d, "label")
    if img is None or label is None:
        return False
    try:
        return any(nifti_stem(p.name) and _IMG_RE.match(nifti_stem(p.name)) for p in img.iterdir())
    except OSError:
        return False


def _load_user_split(split_file: str | os.PathLike, case_ids: list[str]) -> list[dict[str, list[str]]]:
    """An nnU-Net splits_final.json, train/val lists, or a MONAI datalist JSON such as ``dataset_0.json``."""
    path = Path(split_file).expanduser()
    if path.is_file() and path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
        except ValueError as e:
            raise ConversionError(f"not valid JSON ({e})", path) from e
        if isinstance(raw, dict) and "training" in raw and "validation" in raw:
            known = set(case_ids)
            fold = {}
            for key, src in (("train", "training"), ("val", "validation")):
                entries = [e.get("image", "") if isinstance(e, dict) else str(e) for e in raw[src]]
                ids = [btcv_case_id(e) for e in entries]
                unknown = [e for e, cid in zip(entries, ids, strict=True) if cid not in known]
                if unknown:
                    raise ConversionError(
                        f"{len(unknown)} of the {len(entries)} '{src}' entries are not among the {len(known)} cases "
                        f"found in SOURCE, e.g. {unknown[:3]}",
                        path,
                        hint="SOURCE must hold every case the datalist names",
                    )
                fold[key] = ids
            return [fold]
    return load_split_file(path, btcv_case_id, case_ids)


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    split, split_file = options.split, options.split_file
    report = Report()
    training_dir = find_one_dir(
        source,
        _is_training_dir,
        "BTCV training folder",
        "RawData/Training/img/img0001.nii.gz + RawData/Training/label/label0001.nii.gz",
    )
    img_dir, label_dir = child_dir(training_dir, "img"), child_dir(training_dir, "label")
    images = _numbered_volumes(img_dir, _IMG_RE, "img", report)
    labels = _numbered_volumes(label_dir, _LABEL_RE, "label", report)
    pairs = pair_files(
        images,
        {n: [path] for n, path in labels.items()},
        img_dir,
        label_dir,
        expected_mask=lambda path: f"label{_number(path, _IMG_RE):04d}.nii.gz",
        expected_image=lambda path: f"img{_number(path, _LABEL_RE):04d}.nii.gz",
        mask_word="label map",
    )
    cases = {f"btcv_{n:04d}": Case3D(f"btcv_{n:04d}", image, label) for n, image, (label,) in pairs}
    for other in sorted(p for p in training_dir.iterdir() if p.is_dir() and p not in (img_dir, label_dir)):
        report.ignore(other, "other folders next to img/ and label/")

    test_dir = child_dir(training_dir.parent, "Test", "Testing")
    test_img = child_dir(test_dir, "img") if test_dir is not None else None
    test_images = _numbered_volumes(test_img, _IMG_RE, "img", report) if test_img is not None else {}
    if not test_images:
        report.notes.append("no RawData/Test/img found: no challenge test images written")

    splits = None
    test_subset = "Ts"
    if split in ("transunet", "monai"):
        shipped = _shipped_split(split)
        needed = shipped["train"] + shipped["held_out"]
        absent = sorted(set(needed) - set(cases))
        if absent:
            raise ConversionError(
                f"--split {split} needs all 30 labelled BTCV cases; {len(absent)} missing from SOURCE: "
                f"{id_ranges(absent)}",
                training_dir,
                hint="convert the complete RawData/Training folder, or use --split nnunet",
            )
        unlisted = sorted(set(cases) - set(needed))
        if unlisted:
            report.warnings.append(
                f"{len(unlisted)} cases are not part of the {split} split and stay in imagesTr: {id_ranges(unlisted)}"
            )
        if split == "transunet":
            for cid in shipped["held_out"]:
                cases[cid] = Case3D(cid, cases[cid].image, cases[cid].label, subset="Ts", part="transunet_test")
            test_subset = "Ts_challenge"
            report.notes.append(
                "TransUNet protocol: train on all of imagesTr (nnUNetv2_train ... all); Dice on the 8 organs: "
                "nnUNetv2_evaluate_simple labelsTs PRED -l " + " ".join(str(v) for v in SYNAPSE_8_ORGANS.values())
            )
        else:
            splits = [{"train": shipped["train"], "val": shipped["held_out"]}]
    elif split_file is not None:
        splits = _load_user_split(split_file, sorted(cases))

    all_cases = list(cases.values()) + [
        Case3D(f"btcv_{n:04d}", path, None, subset=test_subset, part="challenge_test")
        for n, path in sorted(test_images.items())
    ]
    return convert_3d(
        spec,
        options,
        all_cases,
        report,
        labels=LABELS,
        label_names=LABEL_NAMES,
        checks=Options3D(
            label_values=tuple(range(14)),
            label_hint="0 background and the 13 BTCV organs: " + ", ".join(f"{v} {k}" for k, v in LABELS.items() if v),
        ),
        splits=splits,
        settings={"synapse_8_organs": SYNAPSE_8_ORGANS},
    )


SPEC = DatasetSpec(
    name="btcv",
    folder_name="BTCV",
    default_id=520,
    title="BTCV / Synapse multi-organ abdominal CT, 13 organs (Landman et al., MICCAI 2015 Beyond the "
    "Cranial Vault challenge), 3D",
    layout="RawData/Training/img/img0001.nii.gz + RawData/Training/label/label0001.nii.gz; optional "
    "RawData/Test/img/img0061.nii.gz",
    source="https://www.synapse.org/#!Synapse:syn3193805 (Synapse registration; Abdomen/RawData)",
    license="challenge terms on Synapse (registration required; no redistribution)",
    role="train",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=btcv_case_id,
    dimension=3,
)


convert_btcv = SPEC  # convert_btcv(source, dataset_id, **options): see DatasetSpec.__call__
