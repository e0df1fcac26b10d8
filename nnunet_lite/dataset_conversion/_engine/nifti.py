"""NIfTI volumes: names, headers (nibabel), completeness, lossless copies, geometry (SimpleITK)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConversionError

FILE_ENDING_NIFTI = ".nii.gz"


NIFTI_SUFFIXES = (".nii.gz", ".nii")


CHANNELS_CT: dict[str, str] = {"0": "CT"}  # nnU-Net's CT normalisation (dataset-wide percentile clip + z-score)


# How far image and label headers may differ and still be "the same grid". Spacing uses nnU-Net's own test
# (np.allclose defaults, an error in verify_dataset_integrity); origin and direction, which nnU-Net only warns about,
# get a tolerance for float32 header round-off (1 micrometre, 1e-4 in the direction cosines).
SPACING_RTOL, SPACING_ATOL = 1e-5, 1e-8


ORIGIN_ATOL_MM = 1e-3


DIRECTION_ATOL = 1e-4


_GZIP_MAGIC = b"\x1f\x8b"


def nifti_stem(name: str) -> str | None:
    """``"img0001.nii.gz"`` -> ``"img0001"`` (any case of the suffix); None if the name is not a NIfTI file."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1/2 header (read by nibabel) that decide how many bytes the volume has."""

    ndim: int
    shape: tuple[int, ...]
    bitpix: int
    vox_offset: int

    @property
    def expected_bytes(self) -> int:
        """Length of the uncompressed single-file (``.nii``) stream: header, extensions and voxel data."""
        return self.vox_offset + int(np.prod(self.shape, dtype=np.int64)) * self.bitpix // 8


def read_nifti_header(path: Path) -> NiftiHeader:
    """The size fields of a NIfTI-1 or NIfTI-2 file (gzip-compressed or not, whatever its name says), via nibabel.

    Raises:
        ConversionError: not a single-file NIfTI (``.nii``/``.nii.gz``), or unreadable.
    """
    import gzip
    import io

    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    try:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rb") as f:
            raw = f.read(nib.Nifti2Header.sizeof_hdr)
    except (OSError, EOFError) as e:
        raise ConversionError(
            f"cannot read NIfTI header ({e})", path, hint="replace the file with an intact copy"
        ) from e
    header = None
    for klass, magic in ((nib.Nifti1Header, b"n+1"), (nib.Nifti2Header, b"n+2")):
        if len(raw) < klass.sizeof_hdr:
            continue
        try:  # from_fileobj detects the byte order from sizeof_hdr; check=False: we check what we use below
            candidate = klass.from_fileobj(io.BytesIO(raw[: klass.sizeof_hdr]), check=False)
        except (HeaderDataError, ValueError):
            continue
        if int(candidate["sizeof_hdr"]) == klass.sizeof_hdr and candidate["magic"].item() == magic:
            header = candidate
            break
    if header is None:
        raise ConversionError(
            "not a single-file NIfTI-1/2 volume (no 'n+1'/'n+2' header)",
            path,
            hint="the file is damaged or in another format; replace it with the original .nii.gz",
        )
    dim, bitpix = header["dim"], int(header["bitpix"])
    ndim = int(dim[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        raise ConversionError(f"invalid NIfTI header (dim[0]={ndim}, bitpix={bitpix})", path)
    return NiftiHeader(ndim, tuple(int(d) for d in dim[1 : ndim + 1]), bitpix, int(header["vox_offset"]))


def check_nifti_complete(path: Path, header: NiftiHeader | None = None) -> None:
    """Raise if the file holds fewer bytes than its header announces (an interrupted download or copy).

    Cheap for intact ``.nii.gz`` files: the gzip trailer records the uncompressed length, which is compared with the
    header; only on a mismatch is the stream decompressed to find out (multi-member gzip, trailing bytes).
    """
    import gzip
    import zlib

    header = header or read_nifti_header(path)
    expected = header.expected_bytes
    hint = "the file is incomplete (interrupted download or copy?); download it again"
    size = path.stat().st_size
    if not _is_gzip(path):
        if size < expected:
            raise ConversionError(f"truncated: {size} bytes, the header announces {expected}", path, hint=hint)
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 4))
        trailer = f.read(4)
    if size >= 18 and int.from_bytes(trailer, "little") == expected % 2**32:
        return
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        raise ConversionError(f"truncated or corrupt gzip stream ({e})", path, hint=hint) from e
    if total < expected:
        raise ConversionError(
            f"truncated: {total} bytes uncompressed, the header announces {expected}", path, hint=hint
        )


def copy_nifti(src: Path, dst: Path) -> str:
    """Copy a NIfTI volume to ``dst`` (a ``.nii.gz`` name) without touching header or voxels.

    Returns:
        "copied" (the file was gzip-compressed already: byte copy) or "compressed" (an uncompressed ``.nii`` was
        gzip-compressed; the decompressed bytes equal the source, and the gzip stream is deterministic).
    """
    import gzip

    if _is_gzip(src):
        shutil.copyfile(src, dst)
        return "copied"
    with open(src, "rb") as fin, open(dst, "wb") as raw, gzip.GzipFile("", "wb", 6, raw, mtime=0) as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    return "compressed"


def orientation_code(direction: Sequence[float]) -> str:
    """Where each voxel axis points, nibabel style: SimpleITK's row-major 3x3 direction -> e.g. "RAS", "IPL"."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = (("R", "L"), ("A", "P"), ("I", "S"))  # SimpleITK world axes are LPS: +x = L, +y = P, +z = S
    code = ""
    for column in matrix.T:
        axis = int(np.argmax(np.abs(column)))
        code += letters[axis][int(column[axis] > 0)]
    return code


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of a volume as SimpleITK reads it (axes in file order i, j, k)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int
    pixel_type: str

    @property
    def orientation(self) -> str:
        return orientation_code(self.direction) if len(self.size) == 3 else "?"


def _geometry(source: Any) -> Geometry:
    """From a ``sitk.Image`` or an ``sitk.ImageFileReader`` after ``ReadImageInformation``."""
    import SimpleITK as sitk

    return Geometry(
        size=tuple(int(s) for s in source.GetSize()),
        spacing=tuple(float(s) for s in source.GetSpacing()),
        origin=tuple(float(s) for s in source.GetOrigin()),
        direction=tuple(float(s) for s in source.GetDirection()),
        components=int(
            source.GetNumberOfComponentsPerPixel() if isinstance(source, sitk.Image) else source.GetNumberOfComponents()
        ),
        pixel_type=sitk.GetPixelIDValueAsString(source.GetPixelID()),
    )


def read_geometry(path: Path) -> Geometry:
    """The header geometry of a volume, without reading its voxels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ConversionError(
            f"cannot read volume ({str(e).strip().splitlines()[-1] if str(e).strip() else e})",
            path,
            hint="replace the file with an intact copy",
        ) from e
    return _geometry(reader)


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    return "(" + ", ".join(f"{v:.{digits}g}" for v in values) + ")"


def geometry_mismatch(image: Geometry, label: Geometry) -> str | None:
    """What differs between two grids (size, spacing, origin, direction), or None if they agree within tolerance."""
    if image.size != label.size:
        text = f"size {'x'.join(map(str, label.size))} but the image is {'x'.join(map(str, image.size))}"
        if sorted(image.size) == sorted(label.size):
            text += "; the same sizes in another order (a transposed or re-oriented array?)"
        return text
    if not np.allclose(label.spacing, image.spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
        return f"spacing {_fmt(label.spacing)} mm but the image has {_fmt(image.spacing)} mm"
    if not np.allclose(label.origin, image.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {_fmt(label.origin, 6)} mm but the image has {_fmt(image.origin, 6)} mm"
    if not np.allclose(label.direction, image.direction, rtol=0, atol=DIRECTION_ATOL):
        return (
            f"direction {_fmt(label.direction, 3)} ({label.orientation}) but the image has "
            f"{_fmt(image.direction, 3)} ({image.orientation})"
        )
    return None
