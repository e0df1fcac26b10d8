"""PH2 dermoscopy (Mendonca et al., EMBC 2013) -> nnU-Net raw ``Dataset511_PH2`` (2D PNG, RGB, 1 label).

A zero-shot target for ISIC-trained models: same channel convention (R, G, B with ``rgb_to_0_1``). Layout as
distributed: ``PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` with the lesion mask
``IMDxxx_lesion/IMDxxx_lesion.bmp``; the colour-class masks in ``IMDxxx_roi/`` are not used. Lesion masks are 1-bit
BMPs except a few 24-bit RGB ones (IMD002); both become {0, 1}. All 200 cases go to imagesTr/labelsTr.
"""

from __future__ import annotations

import re
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
    list_files,
)

SPLITS = {NNUNET_SPLIT: "no splits_final.json: nnU-Net's 5 random folds (PH2 is normally only evaluated on)"}
REFERENCE = (
    "Mendonca T, Ferreira PM, Marques JS, Marcal ARS, Rozeira J. PH2 - A dermoscopic image database for research and "
    "benchmarking. EMBC 2013, doi:10.1109/EMBC.2013.6610779"
)
CASE_RE = re.compile(r"^IMD(\d+)$", re.IGNORECASE)


def ph2_case_id(token: str) -> str | None:
    """``"IMD002"``, ``"imd002.bmp"`` -> ``"IMD002"``."""
    m = re.search(r"IMD(\d+)", token, re.IGNORECASE)
    return f"IMD{m.group(1)}" if m else None


def _case_dirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and CASE_RE.match(p.name))
    except OSError:
        return []


def _is_root(d: Path) -> bool:
    return any(child_dir(c, f"{c.name}_Dermoscopic_Image") is not None for c in _case_dirs(d))


def _one_image(folder: Path | None, stem: str, case_dir: Path, what: str, report: Report) -> Path:
    if folder is None:
        raise ConversionError(
            f"{what} folder {case_dir.name}_{'Dermoscopic_Image' if what == 'image' else 'lesion'} is missing",
            case_dir,
            hint="restore the case folder from the official download, or remove it",
        )
    files = [p for p in list_files(folder, report) if p.suffix.lower() in IMAGE_SUFFIXES]
    exact = [p for p in files if p.stem.lower() == stem.lower()]
    if len(exact) == 1:
        return exact[0]
    if len(files) == 1 and not exact:
        return files[0]
    raise ConversionError(
        f"expected one {what} {stem}.bmp, found {len(exact) or len(files)} candidate(s)"
        + (f": {', '.join(p.name for p in (exact or files)[:4])}" if files else ""),
        folder,
        hint="restore the folder from the official download",
    )


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    report = Report()
    root = find_one_dir(
        source, _is_root, "PH2 image folder", "'PH2 Dataset images'/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp"
    )
    for other in sorted(p for p in root.iterdir() if p.is_dir() and not CASE_RE.match(p.name)):
        report.ignore(other, "folders not named IMDxxx")
    cases: list[Case2D] = []
    roi = 0
    for case_dir in _case_dirs(root):
        case_id = f"IMD{CASE_RE.match(case_dir.name).group(1)}"
        image = _one_image(
            child_dir(case_dir, f"{case_dir.name}_Dermoscopic_Image"), case_dir.name, case_dir, "image", report
        )
        mask = _one_image(
            child_dir(case_dir, f"{case_dir.name}_lesion"), f"{case_dir.name}_lesion", case_dir, "lesion mask", report
        )
        roi += child_dir(case_dir, f"{case_dir.name}_roi") is not None
        cases.append(Case2D(case_id, image, (mask,)))
    if roi:
        report.notes.append(f"colour-class masks (IMDxxx_roi, {roi} cases) are not used")

    return convert_2d(spec, options, cases, report)


SPEC = DatasetSpec(
    name="ph2",
    folder_name="PH2",
    default_id=511,
    title="PH2 dermoscopy (Mendonca et al., EMBC 2013), zero-shot target for ISIC",
    layout='PH2Dataset/"PH2 Dataset images"/IMDxxx/{IMDxxx_Dermoscopic_Image/IMDxxx.bmp, '
    "IMDxxx_lesion/IMDxxx_lesion.bmp}",
    source="https://www.fc.up.pt/addi/ph2%20database.html",
    license="free for research use; cite the paper",
    role="zero-shot",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=ph2_case_id,
    label_name="lesion",
)


convert_ph2 = SPEC  # convert_ph2(source, dataset_id, **options): see DatasetSpec.__call__
