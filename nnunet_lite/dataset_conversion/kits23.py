"""KiTS23 kidney, tumour and cyst CT (Heller et al.) -> nnU-Net raw ``Dataset521_KiTS23`` (3D NIfTI, 1 CT channel,
region-based labels).

Layout of the official repository (github.com/neheller/kits23) after its download step: ``dataset/case_00000/``
holds ``segmentation.nii.gz`` (in git) and ``imaging.nii.gz`` (fetched by ``kits23_download_data``), next to
``dataset/kits23.json`` (clinical metadata, not used) and per-case ``instances/`` folders (not used). Volumes are
copied unchanged after the same checks as every 3D converter (complete files, one voxel grid, labels 0..3).

The dataset.json is nnU-Net's own KiTS23 setup, that of ``nnunetv2.dataset_conversion.Dataset220_KiTS2023`` (a test
compares the two): channel ``CT``; regions ``kidney (1, 2, 3)``, ``masses (2, 3)``, ``tumor 2`` with
``regions_class_order (1, 3, 2)`` (nnU-Net trains one sigmoid output per region); reader ``NibabelIOWithReorient``.
KiTS stores arrays in (z, y, x) order with an I-P-L affine; that reader reorients every volume to RAS when reading
(and back when writing predictions), so nothing is resampled or re-oriented here.

Cases whose ``imaging.nii.gz`` is missing (an interrupted download) are listed by ID and stop the conversion unless
``skip_missing_imaging`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from ._engine import (
    NNUNET_SPLIT,
    Case3D,
    ConversionError,
    ConvertOptions,
    DatasetSpec,
    Options3D,
    Report,
    convert_3d,
    find_one_dir,
    id_ranges,
    list_files,
    load_split_file,
    nifti_stem,
)

SPLITS = {NNUNET_SPLIT: "all cases in imagesTr (nnU-Net's 5 folds, or --split-file)"}
REFERENCE = (
    "Heller N, Isensee F, Trofimova D, et al. The KiTS21 Challenge: Automatic segmentation of kidneys, renal tumors, "
    "and renal cysts in corticomedullary-phase CT. arXiv:2307.01984 (2023); KiTS23: https://kits-challenge.org/kits23/"
)
# Raw voxel values of segmentation.nii.gz (kits23/configuration/labels.py); the regions come from nnU-Net
LABEL_NAMES: dict[int, str] = {1: "kidney", 2: "tumor", 3: "cyst"}
# nnU-Net's own KiTS23 dataset.json setup, as nnunetv2.dataset_conversion.Dataset220_KiTS2023 writes it (regions as
# tuples); test_convert_3d.py checks it against that converter's output, so an nnU-Net that changes it fails the tests.
NNUNET_KITS23_SETUP: dict[str, Any] = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "kidney": (1, 2, 3), "masses": (2, 3), "tumor": 2},
    "file_ending": ".nii.gz",
    "regions_class_order": (1, 3, 2),
    "reader": "NibabelIOWithReorient",
}
STORED_ORIENTATION = "IPL"  # axes of the official files: (z, y, x) arrays, affine I-P-L, origin 0
_CASE_RE = re.compile(r"^case_(\d+)$", re.IGNORECASE)


def kits23_case_id(token: str) -> str | None:
    """``"case_00021"``, ``"00021"``, ``"case_00021_0000.nii.gz"``, ``"dataset/case_00021/imaging.nii.gz"`` ->
    ``"case_00021"``."""
    text = str(token).strip().replace("\\", "/")
    m = re.search(r"case_(\d+)", text, re.IGNORECASE)
    if m is None:
        name = os.path.basename(text)
        m = re.fullmatch(r"(\d+)", nifti_stem(name) or name)
    return f"case_{int(m.group(1)):05d}" if m else None


_FILES = {name: (f"{name}.nii.gz", f"{name}.nii") for name in ("imaging", "segmentation")}


def _is_root(d: Path) -> bool:
    try:
        return any(
            p.is_dir() and _CASE_RE.match(p.name) and any((p / f).exists() for f in _FILES["segmentation"])
            for p in d.iterdir()
        )
    except OSError:
        return False


def _case_file(case_dir: Path, name: str) -> Path | None:
    found = [case_dir / f for f in _FILES[name] if (case_dir / f).is_file()]
    if len(found) > 1:
        raise ConversionError(
            f"both {found[0].name} and {found[1].name}", case_dir, hint="keep one of them (the .nii.gz original)"
        )
    return found[0] if found else None


def _check_metadata(root: Path, case_ids: list[str], report: Report) -> None:
    path = root / "kits23.json"
    if not path.is_file():
        return
    try:
        listed = {str(e["case_id"]) for e in json.loads(path.read_text(encoding="utf-8"))}
    except (ValueError, KeyError, TypeError) as e:
        report.warnings.append(f"kits23.json is not the expected list of cases ({e}); not cross-checked")
        return
    report.notes.append(f"kits23.json (clinical metadata) not used; it lists {len(listed)} cases")
    unknown = [c for c in case_ids if c not in listed]
    if unknown:
        report.warnings.append(f"{len(unknown)} case folders are not listed in kits23.json: {id_ranges(unknown)}")


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    setup = NNUNET_KITS23_SETUP
    report = Report()
    root = find_one_dir(source, _is_root, "KiTS23 dataset folder", "dataset/case_00000/segmentation.nii.gz")
    cases: list[Case3D] = []
    without_imaging: list[str] = []
    instances = 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == "kits23.json":
            continue
        if not (entry.is_dir() and _CASE_RE.match(entry.name)):
            report.ignore(entry, "entries that are not case_XXXXX folders")
            continue
        case_id = kits23_case_id(entry.name)
        segmentation = _case_file(entry, "segmentation")
        imaging = _case_file(entry, "imaging")
        if segmentation is None:
            raise ConversionError(
                f"case folder without segmentation.nii.gz{' (imaging only)' if imaging else ''}",
                entry,
                hint="segmentations are in the kits23 git repository: restore it (git checkout -- dataset), "
                "or remove this folder",
            )
        instances += (entry / "instances").is_dir()
        for path in list_files(entry, report):
            if path not in (segmentation, imaging):
                report.ignore(path, "other files in case folders")
        if imaging is None:
            without_imaging.append(case_id)
            continue
        cases.append(Case3D(case_id, imaging, segmentation))
    _check_metadata(root, [c.case_id for c in cases] + without_imaging, report)
    if instances:
        report.notes.append(f"per-annotator instances/ folders ({instances} cases) not used")

    total = len(cases) + len(without_imaging)
    if without_imaging:
        listed = id_ranges(without_imaging)
        if not cases:
            raise ConversionError(
                f"none of the {total} cases has imaging.nii.gz (only the segmentations from git?)",
                root,
                hint="imaging is downloaded separately: run kits23_download_data in the kits23 repository",
            )
        if not options.extra["skip_missing_imaging"]:
            raise ConversionError(
                f"{len(without_imaging)} of {total} cases have no imaging.nii.gz: {listed}",
                root,
                hint="the imaging download is incomplete: run kits23_download_data again (it fetches what is "
                f"missing), or pass --skip-missing-imaging to convert the {len(cases)} cases that have it",
            )
        n = len(without_imaging)
        report.skip(f"{n} case{'s' if n != 1 else ''} without imaging.nii.gz (--skip-missing-imaging)", listed)

    splits = None
    if options.split_file is not None:
        splits = load_split_file(options.split_file, kits23_case_id, [c.case_id for c in cases])

    return convert_3d(
        spec,
        options,
        cases,
        report,
        labels=setup["labels"],
        label_names=LABEL_NAMES,
        checks=Options3D(
            label_values=(0, *LABEL_NAMES),
            label_hint="0 background, " + ", ".join(f"{k} {v}" for k, v in LABEL_NAMES.items()),
            expected_orientation=STORED_ORIENTATION,
        ),
        channel_names=setup["channel_names"],
        regions_class_order=setup["regions_class_order"],
        reader=setup["reader"],
        splits=splits,
        settings={
            "setup_from": "nnunetv2.dataset_conversion.Dataset220_KiTS2023",
            "skipped_missing_imaging": sorted(without_imaging),
        },
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--skip-missing-imaging``."""
    parser.add_argument(
        "--skip-missing-imaging",
        dest="skip_missing_imaging",
        action="store_true",
        help="convert only the cases whose imaging.nii.gz is present (an interrupted kits23_download_data) instead "
        "of failing; the skipped case IDs are listed in the summary",
    )


SPEC = DatasetSpec(
    name="kits23",
    folder_name="KiTS23",
    default_id=521,
    title="KiTS23 kidney, tumour and cyst CT (Heller et al., KiTS 2023 challenge), 3D, region-based",
    layout="dataset/case_00000/{imaging.nii.gz, segmentation.nii.gz} (github.com/neheller/kits23 after "
    "kits23_download_data)",
    source="https://github.com/neheller/kits23 (segmentations in git; imaging via kits23_download_data)",
    license="CC BY-NC-SA 4.0 (data); cite Heller et al.",
    role="train",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=kits23_case_id,
    dimension=3,
    extra_options={"skip_missing_imaging": False},
    add_arguments=add_arguments,
)


convert_kits23 = SPEC  # convert_kits23(source, dataset_id, **options): see DatasetSpec.__call__
