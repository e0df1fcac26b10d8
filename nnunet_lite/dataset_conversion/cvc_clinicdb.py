"""CVC-ClinicDB polyps (Bernal et al., CMIG 2015) -> nnU-Net raw ``Dataset512_CVCClinicDB`` (2D PNG, RGB, 1 label).

A zero-shot target for Kvasir-SEG models (same channel convention). Layout as distributed:
``CVC-ClinicDB/Original/<n>.tif`` (RGB 384x288) and ``CVC-ClinicDB/Ground Truth/<n>.tif``. The RGB TIFFs have a header
Pillow rejects, so they are read with tifffile. The ground truth is 0/255 with anti-aliased edges and is thresholded at
127. Case IDs are ``cvc_0001`` .. ``cvc_0612``. The Kaggle mirror's ``PNG/`` and ``TIF/`` copies are accepted (the TIFF
copy is preferred).

The README maps frames to 29 video sequences; ``split="sequence"`` writes 5 video-level folds (sequence s goes to fold
(s - 1) mod 5), so that frames of one video never sit on both sides, unlike PraNet's frame-level 550/62.
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
    find_dirs,
    index_cases,
    pair_files,
    single_dir,
)

SPLITS = {
    NNUNET_SPLIT: "no splits_final.json: nnU-Net's 5 random (frame-level) folds",
    "sequence": "5 video-level folds from the README's frame-to-sequence table (sequence s -> fold (s-1) mod 5)",
}
REFERENCE = (
    "Bernal J, Sanchez FJ, Fernandez-Esparrach G, Gil D, Rodriguez C, Vilarino F. WM-DOVA maps for accurate polyp "
    "highlighting in colonoscopy: validation vs. saliency maps from physicians. CMIG 43:99-111 (2015), "
    "doi:10.1016/j.compmedimag.2015.02.007"
)
MASK_THRESHOLD = 127
# First frame of each of the 29 sequences (README.txt of the distribution); the last sequence ends at frame 612.
SEQUENCE_STARTS = (1, 26, 51, 68, 79, 104, 127, 152, 178, 200, 206, 228, 253, 278, 298, 318, 343, 364, 384, 409, 429,
                   448, 467, 479, 504, 529, 547, 572, 592)  # fmt: skip
LAST_FRAME = 612
NUM_SEQUENCE_FOLDS = 5


def sequence_of(frame: int) -> int | None:
    """Video sequence (1..29) of a frame number (1..612), None outside that range."""
    if not 1 <= frame <= LAST_FRAME:
        return None
    return sum(1 for start in SEQUENCE_STARTS if start <= frame)


def cvc_case_id(token: str) -> str | None:
    """``"12"``, ``"12.tif"``, ``"Original/12.tif"``, ``"cvc_0012"`` -> ``"cvc_0012"``."""
    name = os.path.basename(token.strip().replace("\\", "/"))
    m = re.fullmatch(r"(?:cvc_)?(\d+)(?:\.(?:tiff?|png|bmp|jpe?g))?", name, re.IGNORECASE)
    return f"cvc_{int(m.group(1)):04d}" if m else None


def _gt_dir(d: Path) -> Path | None:
    return child_dir(d, "Ground Truth", "GroundTruth", "GT")


def _is_root(d: Path) -> bool:
    return child_dir(d, "Original") is not None and _gt_dir(d) is not None


def _has_tiffs(d: Path) -> bool:
    return any(p.suffix.lower() in (".tif", ".tiff") for p in child_dir(d, "Original").iterdir())


def _frame_id(path: Path) -> tuple[str | None, str]:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, "non-image files"
    if not path.stem.isdigit():
        return None, "images not named <frame number>"
    return f"cvc_{int(path.stem):04d}", ""


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    report = Report()
    roots = find_dirs(source, _is_root)
    if len(roots) > 1:
        tiff_roots = [r for r in roots if _has_tiffs(r)]
        if len(tiff_roots) == 1:
            others = ", ".join(str(r) for r in roots if r not in tiff_roots)
            report.notes.append(f"using the TIFF copy {tiff_roots[0]}; ignored: {others}")
            roots = tiff_roots
    root = single_dir(roots, source, "CVC-ClinicDB", "Original/<n>.tif and 'Ground Truth'/<n>.tif")
    image_dir, gt_dir = child_dir(root, "Original"), _gt_dir(root)
    images = index_cases(image_dir, report, _frame_id)
    masks = defaultdict(list, {k: [v] for k, v in index_cases(gt_dir, report, _frame_id).items()})
    pairs = pair_files(images, masks, image_dir, gt_dir, lambda p: p.name)
    sequences = {case_id: sequence_of(int(case_id[4:])) for case_id, _, _ in pairs}
    cases = [
        Case2D(cid, image, ms, group=None if sequences[cid] is None else f"sequence {sequences[cid]:02d}")
        for cid, image, ms in pairs
    ]

    splits = None
    if options.split == "sequence":
        outside = [cid for cid, seq in sequences.items() if seq is None]
        if outside:
            raise ConversionError(
                f"--split sequence: {len(outside)} frames lie outside 1..{LAST_FRAME}, e.g. {outside[:3]}",
                image_dir,
                hint="the sequence table covers the official 612 frames only; use the default split",
            )
        folds = {cid: (seq - 1) % NUM_SEQUENCE_FOLDS for cid, seq in sequences.items()}
        splits = [
            {"train": [c for c, f in folds.items() if f != k], "val": [c for c, f in folds.items() if f == k]}
            for k in range(NUM_SEQUENCE_FOLDS)
        ]

    return convert_2d(spec, options, cases, report, splits=splits)


SPEC = DatasetSpec(
    name="cvc-clinicdb",
    folder_name="CVCClinicDB",
    default_id=512,
    title="CVC-ClinicDB polyps (Bernal et al., CMIG 2015), zero-shot target for Kvasir-SEG",
    layout='CVC-ClinicDB/Original/<n>.tif + "CVC-ClinicDB/Ground Truth"/<n>.tif (PNG/ copies accepted)',
    source="https://polyp.grand-challenge.org/CVCClinicDB/",
    license="research and education only, commercial use forbidden (README.txt)",
    role="zero-shot",
    reference=REFERENCE,
    splits=SPLITS,
    convert=_convert,
    case_id=cvc_case_id,
    label_name="polyp",
    mask_threshold=MASK_THRESHOLD,
)


convert_cvc_clinicdb = SPEC  # convert_cvc_clinicdb(source, dataset_id, **options): see DatasetSpec.__call__
