"""Synthetic copies of the distributed layouts of the 3D datasets (tiny NIfTI volumes) for the converter tests.

``make_btcv(root)`` writes Synapse's ``RawData/Training/{img,label}`` + ``RawData/Test/img`` with anisotropic spacing
and non-identity directions; ``make_kits23(root)`` writes the kits23 repository's ``dataset/case_XXXXX/`` with the
official header quirk (arrays stored (z, y, x), affine I-P-L, origin 0, sform only), ``kits23.json`` and
``instances/``. Both return the folder a user would pass as SOURCE.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

# An oblique, flipped grid (15 degrees about z, x and y reversed): what scanners' NIfTI exports look like
_ANGLE = np.deg2rad(15)
OBLIQUE_RAS = (
    -np.cos(_ANGLE),
    np.sin(_ANGLE),
    0.0,
    -np.sin(_ANGLE),
    -np.cos(_ANGLE),
    0.0,
    0.0,
    0.0,
    1.0,
)
FLIPPED_RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def write_sitk(
    array_zyx: np.ndarray,
    path: Path,
    spacing_xyz: Sequence[float] = (0.78, 0.78, 2.5),
    origin: Sequence[float] = (-120.0, 95.5, -310.25),
    direction: Sequence[float] = FLIPPED_RAS,
) -> Path:
    """A volume from a (z, y, x) array, SimpleITK conventions (spacing and origin in x, y, z order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(s) for s in spacing_xyz))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection(tuple(float(d) for d in direction))
    sitk.WriteImage(img, str(path))
    return path


def organ_label(shape_zyx: tuple[int, int, int], seed: int, max_label: int = 13) -> np.ndarray:
    """Blocks of organ labels 1..max_label (each present) on background."""
    z, y, x = shape_zyx
    label = np.zeros(shape_zyx, np.uint8)
    rng = np.random.default_rng(seed)
    cells = [(j, i) for j in range(4) for i in range(4)]
    rng.shuffle(cells)
    by, bx = max(1, y // 4), max(1, x // 4)
    for value, (j, i) in zip(range(1, max_label + 1), cells, strict=False):
        label[1 : max(2, z - 1), j * by + 1 : (j + 1) * by, i * bx + 1 : (i + 1) * bx] = value
    return label


def ct_from_label(label: np.ndarray, seed: int) -> np.ndarray:
    """int16 HU-like values: air outside, soft tissue, brighter organs."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(-80, 15, label.shape) + 12.0 * label
    return ct.round().astype(np.int16)


def make_btcv(
    root: Path,
    numbers: Sequence[int] = (1, 2, 3, 21, 22),
    test_numbers: Sequence[int] = (61, 62),
    shape_zyx: tuple[int, int, int] = (6, 16, 16),
    spacing_xyz: Sequence[float] = (0.78, 0.78, 2.5),
) -> Path:
    """Abdomen/RawData/Training/{img,label}/img0001.nii.gz, label0001.nii.gz (+ Test/img), int16 CT, uint8 labels.

    Case 2 (if present) uses an oblique direction, the others a flipped one; volume sizes vary a little.
    """
    base = root / "Abdomen" / "RawData"
    for k, n in enumerate(numbers):
        shape = (shape_zyx[0] + k % 2, shape_zyx[1], shape_zyx[2])
        label = organ_label(shape, seed=n)
        direction = OBLIQUE_RAS if n == 2 else FLIPPED_RAS
        write_sitk(
            ct_from_label(label, n), base / "Training" / "img" / f"img{n:04d}.nii.gz", spacing_xyz, direction=direction
        )
        write_sitk(label, base / "Training" / "label" / f"label{n:04d}.nii.gz", spacing_xyz, direction=direction)
    for n in test_numbers:
        write_sitk(
            ct_from_label(organ_label(shape_zyx, n), n), base / "Test" / "img" / f"img{n:04d}.nii.gz", spacing_xyz
        )
    return root


def kits_affine(spacing_zyx: Sequence[float]) -> np.ndarray:
    """The official KiTS23 affine: voxel axes (z, y, x) point I, P, L; origin 0."""
    sz, sy, sx = spacing_zyx
    return np.array([[0, 0, -sx, 0], [0, -sy, 0, 0], [-sz, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def save_kits_nifti(
    array_zyx: np.ndarray, path: Path, header: nib.Nifti1Header | None = None, spacing_zyx=None
) -> Path:
    """Write like the official files: sform code 2 (aligned), qform code 0; or copy ``header`` (real samples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if header is not None:
        img = nib.Nifti1Image(array_zyx, None, header=header.copy())
        img.set_data_dtype(array_zyx.dtype)
    else:
        img = nib.Nifti1Image(array_zyx, kits_affine(spacing_zyx))
        img.set_sform(kits_affine(spacing_zyx), code=2)
        img.set_qform(None, code=0)
    nib.save(img, str(path))
    return path


def kits_label(shape_zyx: tuple[int, int, int], seed: int, cyst: bool) -> np.ndarray:
    """A kidney ellipsoid (1) with a tumour (2) inside and optionally a cyst (3)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0 : shape_zyx[0], 0 : shape_zyx[1], 0 : shape_zyx[2]].astype(np.float32)
    centre = rng.uniform(0.4, 0.6, 3) * np.array(shape_zyx)
    radii = np.array(shape_zyx) * np.array([0.35, 0.3, 0.25])
    dist = sum(((c - m) / r) ** 2 for c, m, r in zip((zz, yy, xx), centre, radii, strict=True))
    label = (dist < 1).astype(np.uint8)
    label[dist < 0.25] = 2
    if cyst:
        label[(dist > 0.5) & (dist < 0.8) & (yy < centre[1])] = 3
    return label


def make_kits23(
    root: Path,
    n: int = 3,
    shape_zyx: tuple[int, int, int] = (6, 16, 16),
    spacing_zyx: Sequence[float] = (5.0, 0.78, 0.78),
    missing_imaging: Sequence[int] = (),
    first: int = 0,
) -> Path:
    """kits23/dataset/case_XXXXX/{imaging,segmentation}.nii.gz (+ instances/, kits23.json); case 1 has a cyst."""
    base = root / "kits23" / "dataset"
    entries = []
    for k in range(first, first + n):
        case = base / f"case_{k:05d}"
        label = kits_label(shape_zyx, seed=k, cyst=k % 3 == 1)
        save_kits_nifti(label, case / "segmentation.nii.gz", spacing_zyx=spacing_zyx)
        if k not in missing_imaging:
            ct = (np.random.default_rng(k).normal(-60, 20, label.shape) + np.array([0, 120, 220, 20])[label]).round()
            save_kits_nifti(ct.astype(np.int16), case / "imaging.nii.gz", spacing_zyx=spacing_zyx)
        save_kits_nifti(
            (label > 0).astype(np.uint8),
            case / "instances" / "kidney_instance-1_annotation-1.nii.gz",
            spacing_zyx=spacing_zyx,
        )
        entries.append({"case_id": f"case_{k:05d}", "age_at_nephrectomy": 50 + k, "gender": "female"})
    (base / "kits23.json").write_text(json.dumps(entries, indent=1))
    (root / "kits23" / "README.md").write_text("# KiTS23\n")
    return root / "kits23"


def truncate_gzip(path: Path, keep: float = 0.6) -> None:
    """Cut a .nii.gz short, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: max(20, int(len(data) * keep))])


def gunzip_to_nii(path: Path) -> Path:
    """Replace ``x.nii.gz`` by an uncompressed ``x.nii`` (some users decompress the download)."""
    out = path.with_name(path.name[: -len(".gz")])
    out.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return out
