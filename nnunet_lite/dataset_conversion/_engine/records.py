"""What travels between the drivers and the worker processes (cases, options, results), and dataset.json."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nnunet_lite

from .errors import ConversionError

R = TypeVar("R")
CONVERTED_BY = f"nnunet_lite {nnunet_lite.__version__}"


def write_dataset_json(
    folder: Path,
    *,
    channel_names: dict[str, str],
    labels: dict[str, int | tuple[int, ...]],
    num_training: int,
    file_ending: str,
    dataset_name: str,
    reference: str,
    license: str,
    description: str | None = None,
    regions_class_order: Sequence[int] | None = None,
    overwrite_image_reader_writer: str | None = None,
    **extra: Any,
) -> Path:
    """dataset.json via nnU-Net's own ``generate_dataset_json`` (with reference, licence and converted_by)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        os.fspath(folder),
        dict(channel_names),
        dict(labels),
        num_training,
        file_ending,
        regions_class_order=None if regions_class_order is None else tuple(regions_class_order),
        dataset_name=dataset_name,
        reference=reference,
        description=description,
        overwrite_image_reader_writer=overwrite_image_reader_writer,
        license=license,
        converted_by=CONVERTED_BY,
        **extra,
    )
    return folder / "dataset.json"


@dataclass(frozen=True)
class Case2D:
    """One image with its mask(s). Several masks are OR-merged (BUSI multi-lesion cases).

    Attributes:
        case_id: nnU-Net case identifier (no spaces or parentheses).
        image: the source image.
        masks: the source mask(s); all must have the image's size.
        subset: "Tr" (imagesTr/labelsTr) or "Ts" (imagesTs/labelsTs).
        part: the official subset it came from ("training", "validation", "test", ...).
        group: class or other grouping for the summary (e.g. "benign"), optional.
    """

    case_id: str
    image: Path
    masks: tuple[Path, ...]
    subset: str = "Tr"
    part: str = "training"
    group: str | None = None


@dataclass(frozen=True)
class Options2D:
    """How cases are written: ``resize`` to NxN (None: native) and the mask rule (see :func:`binarize_mask`)."""

    resize: int | None = None
    mask_threshold: int | None = None
    compress_level: int = 6


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    subset: str
    part: str
    group: str | None
    size: tuple[int, int]  # (H, W) of the source
    out_size: tuple[int, int]
    foreground: int  # foreground pixels written
    grey: bool
    digest: str  # hash of the decoded source pixels
    image: str


def _naming_the_case(convert: Callable[[Any, Path, Any], R], case: Case2D | Case3D, out_dir: Path, options: Any) -> R:
    """Runs ``convert(case, out_dir, options)``; any unexpected exception becomes a ConversionError naming the case."""
    try:
        return convert(case, out_dir, options)
    except ConversionError:
        raise
    except Exception as e:
        raise ConversionError(
            f"unexpected {type(e).__name__} while converting case {case.case_id}: {e}", case.image
        ) from e


@dataclass(frozen=True)
class Case3D:
    """One volume with its label map (None: an unlabelled test case).

    Attributes:
        case_id: nnU-Net case identifier.
        image: the source image (``.nii.gz`` or ``.nii``).
        label: the source label map, or None.
        subset: suffix of the output folders: "Tr" (imagesTr/labelsTr), "Ts" (imagesTs/labelsTs), or another suffix
            for extra held-out sets (e.g. "Ts_challenge" -> imagesTs_challenge).
        part: the official subset it came from ("training", "test", ...), for the summary and test_sets.json.
    """

    case_id: str
    image: Path
    label: Path | None
    subset: str = "Tr"
    part: str = "training"


@dataclass(frozen=True)
class Options3D:
    """What a label map may contain.

    Attributes:
        label_values: the allowed voxel values of a label map (0 included).
        label_hint: what the values mean, for the error message.
        expected_orientation: stored orientation code the distribution uses (e.g. "IPL"); others are noted.
    """

    label_values: tuple[int, ...]
    label_hint: str
    expected_orientation: str | None = None


@dataclass(frozen=True)
class CaseResult3D:
    case_id: str
    subset: str
    part: str
    size: tuple[int, ...]  # as stored (i, j, k)
    spacing: tuple[float, ...]
    orientation: str
    pixel_type: str
    labels_present: tuple[int, ...] | None  # None: no label map
    written: tuple[str, ...]  # "copied" / "compressed" per file
    image: str


def write_test_sets(folder: Path, held_out: Sequence[tuple[str, str]]) -> None:
    """``test_sets.json``: official part -> sorted case IDs of the held-out cases, given as (part, case ID) pairs."""
    if not held_out:
        return
    sets: dict[str, list[str]] = defaultdict(list)
    for part, case_id in held_out:
        sets[part].append(case_id)
    text = json.dumps({k: sorted(v) for k, v in sorted(sets.items())}, indent=1)
    (folder / "test_sets.json").write_text(text + "\n", encoding="utf-8")
