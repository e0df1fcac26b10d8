"""The conversion engine shared by all dataset converters (private: converters import from here, users do not).

- :mod:`.spec`: :class:`DatasetSpec` (what a converter module declares) and :class:`ConvertOptions`.
- :mod:`.errors`: :class:`ConversionError` (names the file and says what to do), SIGTERM as an exception.
- :mod:`.output`: output root, dataset ID and target checks, the atomic dataset folder, stale ``.partial`` folders.
- :mod:`.discovery`: finding the download's folders, listing and pairing files, case IDs.
- :mod:`.splits`: published split lists, ``splits_final.json``.
- :mod:`.report`: what a conversion skipped or noticed, and the printed summaries.
- :mod:`.pool`: the spawn-safe process pool.
- :mod:`.records`: case and result records, ``dataset.json``.
- :mod:`.images`, :mod:`.write2d`: 2D images and masks, the 2D driver.
- :mod:`.nifti`, :mod:`.write3d`: NIfTI checks and lossless copies, the 3D driver.
"""

from .discovery import (
    IMAGE_SUFFIXES,
    child_dir,
    describe_found,
    find_dirs,
    find_folders,
    find_one_dir,
    has_images,
    index_cases,
    list_files,
    pair_files,
    pair_folders,
    require_source,
    sanitize_id,
    single_dir,
)
from .errors import ConversionError, Terminated
from .nifti import Geometry, check_nifti_complete, geometry_mismatch, nifti_stem, orientation_code, read_nifti_header
from .records import Case2D, Case3D, CaseResult, Options3D
from .report import Report, id_ranges
from .spec import ConvertOptions, DatasetSpec
from .splits import NNUNET_SPLIT, SPLITS_DIR, check_split_args, load_split_file, read_id_list, validate_splits
from .write2d import convert_2d
from .write3d import convert_3d

__all__ = [
    "IMAGE_SUFFIXES",
    "NNUNET_SPLIT",
    "SPLITS_DIR",
    "Case2D",
    "Case3D",
    "ConvertOptions",
    "DatasetSpec",
    "CaseResult",
    "ConversionError",
    "Geometry",
    "Options3D",
    "Report",
    "Terminated",
    "check_nifti_complete",
    "check_split_args",
    "child_dir",
    "convert_2d",
    "convert_3d",
    "describe_found",
    "find_dirs",
    "find_folders",
    "find_one_dir",
    "geometry_mismatch",
    "has_images",
    "id_ranges",
    "index_cases",
    "list_files",
    "load_split_file",
    "nifti_stem",
    "orientation_code",
    "pair_files",
    "pair_folders",
    "read_id_list",
    "read_nifti_header",
    "require_source",
    "sanitize_id",
    "single_dir",
    "validate_splits",
]
