"""A new 2D dataset as README's "Adding a dataset" shows it: ``images/<id>.png`` + ``masks/<id>.png`` -> nnU-Net.

In the package this would be ``nnunet_lite/dataset_conversion/mydata.py`` (imports ``from ._engine import ...``) and
one more entry in the ``DATASETS`` tuple of ``dataset_conversion/__init__.py``; test_convert_2d.py converts with it.
"""

from __future__ import annotations

from pathlib import Path

from nnunet_lite.dataset_conversion._engine import (
    Case2D,
    ConvertOptions,
    DatasetSpec,
    Report,
    child_dir,
    convert_2d,
    find_one_dir,
    pair_folders,
    sanitize_id,
)


def _case_id(path: Path) -> tuple[str | None, str]:
    """Case ID of a file, or why it is not a case (counted in the summary)."""
    if path.suffix.lower() not in (".png", ".jpg"):
        return None, "files that are not PNG or JPEG"
    return sanitize_id(path.stem), ""


def _is_root(folder: Path) -> bool:
    return child_dir(folder, "images") is not None and child_dir(folder, "masks") is not None


def _convert(spec: DatasetSpec, source: Path, options: ConvertOptions) -> Path:
    report = Report()
    root = find_one_dir(source, _is_root, "MyData folder", "images/<id>.png + masks/<id>.png")
    pairs = pair_folders(child_dir(root, "images"), child_dir(root, "masks"), report, _case_id)
    return convert_2d(spec, options, [Case2D(cid, image, masks) for cid, image, masks in pairs], report)


SPEC = DatasetSpec(
    name="mydata",
    folder_name="MyData",
    default_id=530,
    title="MyData lesions (Author et al., 2025)",
    layout="images/<id>.png + masks/<id>.png",
    source="https://example.org/mydata",
    license="CC BY 4.0",
    role="train",
    reference="Author A, et al. MyData. 2025",
    splits={"nnunet": "no splits_final.json: nnU-Net's 5 random folds"},
    convert=_convert,
    case_id=lambda token: sanitize_id(Path(token.strip()).stem),
    label_name="lesion",
    mask_threshold=127,  # JPEG masks
)
