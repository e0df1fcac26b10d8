"""The 3D driver: every case checked (complete, 3D, label grid and values) and copied unchanged; dataset.json."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .discovery import check_unique_ids
from .errors import ConversionError
from .nifti import (
    CHANNELS_CT,
    FILE_ENDING_NIFTI,
    Geometry,
    _geometry,
    check_nifti_complete,
    copy_nifti,
    geometry_mismatch,
    read_geometry,
    read_nifti_header,
)
from .output import atomic_dataset_folder, start_dataset
from .pool import parallel_map
from .records import Case3D, CaseResult3D, Options3D, _naming_the_case, write_dataset_json, write_test_sets
from .report import Report, format_summary_3d, id_ranges
from .spec import ConvertOptions, DatasetSpec
from .splits import validate_splits, write_splits


def _label_values(path: Path, options: Options3D, image: Geometry) -> tuple[int, ...]:
    """The values present in a label map, after checking its grid against the image's and its values."""
    import SimpleITK as sitk

    try:
        itk = sitk.ReadImage(os.fspath(path))
    except RuntimeError as e:
        raise ConversionError(
            "cannot read label map (truncated or damaged file?)", path, hint="replace it with an intact copy"
        ) from e
    geometry = _geometry(itk)
    mismatch = geometry_mismatch(image, geometry)
    if mismatch:
        raise ConversionError(
            f"label map does not match its image: {mismatch}",
            path,
            hint="image and label must share one voxel grid; check that the label belongs to this image. If it "
            "does and only the header differs, copy the image's header onto the label (e.g. SimpleITK "
            "CopyInformation) and convert again",
        )
    if geometry.components != 1:
        raise ConversionError(f"label map has {geometry.components} components per voxel, expected 1", path)
    arr = sitk.GetArrayViewFromImage(itk)  # a view of itk's buffer: itk stays referenced below
    if arr.dtype.kind == "f":
        _check_finite(path, "label map")
        if not np.array_equal(arr, np.rint(arr)):
            raise ConversionError(
                "label map has non-integer values (a resampled or probability map?)",
                path,
                hint=f"label maps hold integer labels ({options.label_hint})",
            )
    if arr.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        values = np.unique(arr)
    allowed = set(options.label_values)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        count = int(np.isin(arr, bad).sum())
        shown = ", ".join(f"{v:g}" for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise ConversionError(
            f"label values outside {min(allowed)}..{max(allowed)}: {shown} ({count} voxels)",
            path,
            hint=f"expected {options.label_hint}; this is not an original label map of the dataset",
        )
    return tuple(int(v) for v in values.tolist())


def _count_nonfinite(path: Path) -> tuple[int, int]:
    """(NaN, inf) voxel counts of a volume stored as floats, (0, 0) for integer storage (scaled or not).

    Read with nibabel, which returns the stored values: SimpleITK reads NaN as 0, so nnU-Net's SimpleITKIO would
    train on it silently, while its nibabel readers and verification reject it; inf breaks the CT normalisation.
    """
    import nibabel as nib

    try:
        img = nib.load(os.fspath(path))
        if img.get_data_dtype().kind != "f":
            return 0, 0
        voxels = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error, ValueError, ...
        raise ConversionError(
            f"cannot read volume ({type(e).__name__}: {e})", path, hint="replace it with an intact copy"
        ) from e
    return int(np.count_nonzero(np.isnan(voxels))), int(np.count_nonzero(np.isinf(voxels)))


def _check_finite(path: Path, what: str = "image") -> None:
    n_nan, n_inf = _count_nonfinite(path)
    if n_nan or n_inf:
        found = " and ".join(t for t, n in ((f"{n_nan} NaN", n_nan), (f"{n_inf} infinite", n_inf)) if n)
        raise ConversionError(
            f"{what} contains {found} voxel values, which nnU-Net cannot train on",
            path,
            hint="replace them with a real value (e.g. -1024 HU, air) and save the volume again"
            if what == "image"
            else "replace the label map with the dataset's original",
        )


def convert_case_3d(job: tuple[Case3D, Path, Options3D]) -> CaseResult3D:
    """Worker: check one case (complete files, 3D single-channel image, label grid and values) and copy it."""
    return _naming_the_case(_convert_case_3d, *job)


def _convert_case_3d(case: Case3D, out_dir: Path, options: Options3D) -> CaseResult3D:

    header = read_nifti_header(case.image)
    if header.ndim != 3:
        singleton = header.ndim > 3 and all(d == 1 for d in header.shape[3:])
        raise ConversionError(
            f"expected a 3D volume, found {header.ndim} dimensions {header.shape}",
            case.image,
            hint="drop the trailing axes of length 1 (e.g. nibabel.funcs.squeeze_image) and save the volume again"
            if singleton
            else "nnU-Net's NIfTI readers take 3D volumes with one channel",
        )
    check_nifti_complete(case.image, header)
    image = read_geometry(case.image)
    if image.components != 1:
        raise ConversionError(f"image has {image.components} components per voxel, expected 1 (CT)", case.image)
    if "float" in image.pixel_type:  # float storage, or integers with scl_slope/scl_inter (read as float)
        _check_finite(case.image)
    labels_present = None
    if case.label is not None:
        label_header = read_nifti_header(case.label)
        if label_header.ndim != 3:
            raise ConversionError(
                f"expected a 3D label map, found {label_header.ndim} dimensions {label_header.shape}", case.label
            )
        check_nifti_complete(case.label, label_header)
        labels_present = _label_values(case.label, options, image)
    written = [copy_nifti(case.image, out_dir / f"images{case.subset}" / f"{case.case_id}_0000{FILE_ENDING_NIFTI}")]
    if case.label is not None:
        written.append(copy_nifti(case.label, out_dir / f"labels{case.subset}" / f"{case.case_id}{FILE_ENDING_NIFTI}"))
    return CaseResult3D(
        case_id=case.case_id,
        subset=case.subset,
        part=case.part,
        size=image.size,
        spacing=image.spacing,
        orientation=image.orientation,
        pixel_type=image.pixel_type,
        labels_present=labels_present,
        written=tuple(written),
        image=str(case.image),
    )


def convert_3d(
    spec: DatasetSpec,
    options: ConvertOptions,
    cases: Sequence[Case3D],
    report: Report,
    *,
    labels: dict[str, int | tuple[int, ...]],
    label_names: dict[int, str],
    checks: Options3D,
    channel_names: dict[str, str] | None = None,
    regions_class_order: Sequence[int] | None = None,
    reader: str | None = None,
    splits: Sequence[dict[str, list[str]]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write ``DatasetXXX_<spec.folder_name>`` from NIfTI ``cases`` atomically and print a summary.

    Every case is checked (complete files, a 3D single-channel image, label map on the image's grid with values in
    ``checks.label_values``) and copied without resampling or re-encoding. Held-out sets (subset other than "Tr")
    are listed in ``test_sets.json``.

    Args:
        labels: dataset.json labels (ints, or tuples of ints for region-based training).
        label_names: name of each raw label value > 0, for the summary.
        reader: ``overwrite_image_reader_writer`` of dataset.json (None: nnU-Net's choice by file ending).

    Returns:
        the dataset folder.
    """
    root, dataset_name, training = start_dataset(spec, options, cases, report, "no image/label pairs")
    unlabelled = [c.case_id for c in training if c.label is None]
    if unlabelled:
        raise ConversionError(f"training cases without label map: {id_ranges(unlabelled)}")
    check_unique_ids(cases)  # type: ignore[arg-type]  # uses case_id and image only
    if splits is not None:
        splits = validate_splits(splits, [c.case_id for c in training], report)

    with atomic_dataset_folder(root, dataset_name, options.dataset_id, options.overwrite) as tmp:
        for subset in sorted({c.subset for c in cases}):
            (tmp / f"images{subset}").mkdir()
            if any(c.label is not None for c in cases if c.subset == subset):
                (tmp / f"labels{subset}").mkdir()
        results: list[CaseResult3D] = parallel_map(
            convert_case_3d, [(c, tmp, checks) for c in cases], options.num_workers, desc=dataset_name
        )
        _check_orientations(results, checks, reader, report)
        labelled = [r.labels_present for r in results if r.labels_present is not None]
        absent = [name for v, name in sorted(label_names.items()) if not any(v in present for present in labelled)]
        if absent:
            report.warnings.append(
                f"no labelled case contains {', '.join(absent)}; nnU-Net still trains an output for it"
            )
        write_dataset_json(
            tmp,
            channel_names=channel_names or CHANNELS_CT,
            labels=labels,
            num_training=len(training),
            file_ending=FILE_ENDING_NIFTI,
            dataset_name=dataset_name,
            reference=spec.reference,
            license=spec.license,
            description=spec.title,
            regions_class_order=regions_class_order,
            overwrite_image_reader_writer=reader,
            numTest=sum(r.subset == "Ts" for r in results),
            nnunet_lite={
                "converter": spec.name,
                "files": "NIfTI copied unchanged (never resampled)",
                "split": options.split_setting,
                **(settings or {}),
            },
        )
        write_test_sets(tmp, [(r.part, r.case_id) for r in results if r.subset != "Tr"])
        if splits is not None:
            write_splits(tmp, splits)

    target = root / dataset_name
    if options.verbose:
        print(format_summary_3d(target, results, report, labels, label_names, regions_class_order, reader, splits))
    return target


def _check_orientations(
    results: Sequence[CaseResult3D], options: Options3D, reader: str | None, report: Report
) -> None:
    orientations = Counter(r.orientation for r in results)
    if options.expected_orientation:
        other = [r.case_id for r in results if r.orientation != options.expected_orientation]
        if other:
            report.notes.append(
                f"{len(other)} cases are not stored in the distribution's {options.expected_orientation} orientation "
                f"(re-saved by some tool?): {id_ranges(other[:20])}{', ...' if len(other) > 20 else ''}"
            )
    if len(orientations) > 1 and not (reader and "Reorient" in reader):
        report.warnings.append(
            "volumes are stored in "
            + ", ".join(f"{k} ({v})" for k, v in orientations.most_common())
            + " orientation; nnU-Net's default reader does not reorient, so the network sees these cases in "
            "different anatomical orientations"
        )
