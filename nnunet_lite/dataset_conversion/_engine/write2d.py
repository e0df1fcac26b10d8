"""The 2D driver: checks, one worker call per case (lossless PNG), dataset.json, splits, summary."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .discovery import check_unique_ids
from .errors import ConversionError
from .images import binarize_mask, load_image_array, to_rgb
from .output import atomic_dataset_folder, start_dataset
from .pool import parallel_map
from .records import Case2D, CaseResult, Options2D, _naming_the_case, write_dataset_json, write_test_sets
from .report import Report, format_summary
from .spec import ConvertOptions, DatasetSpec
from .splits import load_split_file, validate_splits, write_splits

# One channel convention for every 2D dataset, RGB or not (grey images are replicated to 3 channels): nnU-Net divides
# by 255 (RGBTo01Normalization) instead of z-scoring each image, so models apply across datasets (zero-shot).
CHANNELS_RGB: dict[str, str] = {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}


FILE_ENDING_2D = ".png"


def _save_png(arr: np.ndarray, path: Path, compress_level: int) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG", compress_level=compress_level)


def _describe_size_mismatch(image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> str:
    text = f"mask is {mask_hw[1]}x{mask_hw[0]} (WxH) but the image is {image_hw[1]}x{image_hw[0]}"
    if image_hw == mask_hw[::-1]:
        text += "; width and height are swapped (an EXIF orientation tag on the image?)"
    return text


def convert_case_2d(job: tuple[Case2D, Path, Options2D]) -> CaseResult:
    """Worker: read, check, binarise, OR-merge, optionally resize, and write one case as lossless PNG."""
    return _naming_the_case(_convert_case_2d, *job)


def _convert_case_2d(case: Case2D, out_dir: Path, options: Options2D) -> CaseResult:
    from PIL import Image

    rgb, grey = to_rgb(load_image_array(case.image), case.image)
    hw = rgb.shape[:2]
    digest = hashlib.blake2b(rgb.tobytes() + str(rgb.shape).encode(), digest_size=16).hexdigest()
    mask = np.zeros(hw, dtype=np.uint8)
    for mask_path in case.masks:
        m = binarize_mask(load_image_array(mask_path), mask_path, options.mask_threshold)
        if m.shape != hw:
            raise ConversionError(
                _describe_size_mismatch(hw, m.shape),
                mask_path,
                hint=f"image and mask must have the same size; check that it belongs to {case.image.name}",
            )
        mask |= m
    if options.resize:
        n = options.resize
        rgb = np.asarray(Image.fromarray(rgb).resize((n, n), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((n, n), Image.Resampling.NEAREST))
    _save_png(rgb, out_dir / f"images{case.subset}" / f"{case.case_id}_0000.png", options.compress_level)
    _save_png(mask, out_dir / f"labels{case.subset}" / f"{case.case_id}.png", options.compress_level)
    return CaseResult(
        case_id=case.case_id,
        subset=case.subset,
        part=case.part,
        group=case.group,
        size=(int(hw[0]), int(hw[1])),
        out_size=(int(mask.shape[0]), int(mask.shape[1])),
        foreground=int(np.count_nonzero(mask)),
        grey=grey,
        digest=digest,
        image=str(case.image),
    )


def convert_2d(
    spec: DatasetSpec,
    options: ConvertOptions,
    cases: Sequence[Case2D],
    report: Report,
    *,
    splits: Sequence[dict[str, list[str]]] | None = None,
    settings: dict[str, Any] | None = None,
    check_results: Callable[[Sequence[CaseResult], Report], None] | None = None,
) -> Path:
    """Write ``DatasetXXX_<spec.folder_name>`` from ``cases`` atomically and print a summary.

    ``splits`` that the converter built for ``options.split`` win, otherwise ``options.split_file`` (if given) is read
    with ``spec.case_id`` against the training cases. ``check_results(results, report)`` may add notes or warnings
    after the cases are written, or raise ConversionError to abort (nothing is left behind then).

    Returns:
        the dataset folder.
    """
    if splits is None and options.split_file is not None:
        splits = load_split_file(options.split_file, spec.case_id, [c.case_id for c in cases if c.subset == "Tr"])
    if options.resize is not None and (not isinstance(options.resize, int) or options.resize < 8):
        raise ConversionError(f"--resize must be an integer >= 8, got {options.resize!r}")
    t = options.mask_threshold
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 0 < t <= 255):
        raise ConversionError(
            f"--mask-threshold must be an integer from 1 to 255 (8-bit mask values), got {t!r}",
            hint="values > T become foreground; 127 suits lossy 0/255 masks",
        )
    root, dataset_name, training = start_dataset(spec, options, cases, report, "no image/mask pairs")
    check_unique_ids(cases)
    if splits is not None:
        splits = validate_splits(splits, [c.case_id for c in training], report)
    writing = Options2D(resize=options.resize, mask_threshold=options.mask_threshold)

    with atomic_dataset_folder(root, dataset_name, options.dataset_id, options.overwrite) as tmp:
        for subset in sorted({c.subset for c in cases}):
            (tmp / f"images{subset}").mkdir()
            (tmp / f"labels{subset}").mkdir()
        results: list[CaseResult] = parallel_map(
            convert_case_2d, [(c, tmp, writing) for c in cases], options.num_workers, desc=f"{dataset_name}"
        )
        _check_foreground(results, writing, report)
        if check_results is not None:
            check_results(results, report)
        test = [r for r in results if r.subset == "Ts"]
        write_dataset_json(
            tmp,
            channel_names=CHANNELS_RGB,
            labels={"background": 0, spec.label_name: 1},
            num_training=len(training),
            file_ending=FILE_ENDING_2D,
            dataset_name=dataset_name,
            reference=spec.reference,
            license=spec.license,
            description=spec.title,
            numTest=len(test),
            nnunet_lite={
                "converter": spec.name,
                "resize": options.resize,
                "mask_rule": "binary (0 and one value)" if t is None else f"value > {t}",
                "channels": "RGB uint8, grey sources replicated to 3 channels",
                "split": options.split_setting,
                **(settings or {}),
            },
        )
        write_test_sets(tmp, [(r.part, r.case_id) for r in test])
        if splits is not None:
            write_splits(tmp, splits)

    target = root / dataset_name
    if options.verbose:
        print(format_summary(target, results, report, writing, spec.label_name, splits))
    return target


def _check_foreground(results: Sequence[CaseResult], options: Options2D, report: Report) -> None:
    """Refuse a dataset whose masks all came out empty or all full (a wrong threshold or mask rule); warn about
    single full masks."""
    rule = "binary masks" if options.mask_threshold is None else f"--mask-threshold {options.mask_threshold}"
    full = [r.case_id for r in results if r.foreground == r.out_size[0] * r.out_size[1]]
    if results and all(r.foreground == 0 for r in results):
        raise ConversionError(
            f"all {len(results)} masks are empty (no foreground pixel) with {rule}",
            hint="check the masks and the threshold: values > T are foreground (127 for 0/255 masks)",
        )
    if results and len(full) == len(results):
        raise ConversionError(
            f"all {len(results)} masks are entirely foreground with {rule}",
            hint="check the masks and the threshold: values > T are foreground (127 for 0/255 masks)",
        )
    if full:
        report.warnings.append(
            f"{len(full)} masks are entirely foreground (inverted or blank masks?), e.g. {', '.join(full[:3])}"
        )
