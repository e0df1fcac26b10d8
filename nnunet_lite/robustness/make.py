"""``nnunet_lite robustness make``: corrupted copies of a dataset's test (or fold-validation) images, written once.

Layout, inside the raw dataset (nothing existing is touched; only this folder is added)::

    nnUNet_raw/DatasetXXX_Name/robustness/<set>/      <set> = <suite>, or <suite>_fold<F> with --from-fold F
        manifest.json                                 suite, seed, parameters, cases, source folders, timings
        labelsTs/                                     byte-identical copies of the reference segmentations
        clean/imagesTs/                               the uncorrupted images of the same cases
        <corruption>_s<k>/imagesTs/                   one nnU-Net image folder per corruption and severity

Every trainer (nnU-Net's own included) is then evaluated on identical pixels by ``robustness run``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_folder
from ..comparison.nnunet_io import ComparisonError, dataset_name, require_env
from .corruptions import SEVERITIES, WHOLE_VOLUME, case_rng, get_suite

NATURAL_IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
CLEAN = "clean"
ARTEFACT_FOLDER = "artefactsTs"  # <set>/<artefact>_s<k>/artefactsTs/<case>.png: the pixels the artefact covers (255)


def set_folder(dataset: str, set_name: str) -> Path:
    return require_env("nnUNet_raw") / dataset / "robustness" / set_name


def set_name_for(suite: str, from_fold: int | None) -> str:
    return suite if from_fold is None else f"{suite}_fold{from_fold}"


def _source_cases(raw: Path, dataset: str, ending: str, from_fold: int | None) -> tuple[Path, Path, list[str]]:
    """Image folder, label folder and case IDs: imagesTs/labelsTs, or the validation cases of fold ``from_fold``."""
    if from_fold is None:
        images, labels = raw / "imagesTs", raw / "labelsTs"
        if not labels.is_dir() or not any(labels.glob(f"*{ending}")):
            raise ComparisonError(
                f"{labels} has no reference segmentations (*{ending}); robustness needs a labelled test set, or use "
                f"--from-fold F for the validation cases of a fold"
            )
        cases = sorted(p.name.removesuffix(ending) for p in labels.glob(f"*{ending}"))
        return images, labels, cases
    splits_file = require_env("nnUNet_preprocessed") / dataset / "splits_final.json"
    if not splits_file.is_file():
        raise ComparisonError(f"{splits_file} not found: run nnUNetv2_plan_and_preprocess and train once to create it")
    splits = json.loads(splits_file.read_text())
    if not 0 <= from_fold < len(splits):
        raise ComparisonError(f"--from-fold {from_fold}: {splits_file} has folds 0-{len(splits) - 1}")
    return raw / "imagesTr", raw / "labelsTr", sorted(splits[from_fold]["val"])


def channel_files(images: Path, case: str, ending: str) -> list[Path]:
    """The ``<case>_XXXX<ending>`` files of one case (one per input channel, nnU-Net naming)."""
    pattern = re.compile(re.escape(case) + r"_\d{4}" + re.escape(ending) + "$")
    return sorted(p for p in images.glob(f"{case}_*{ending}") if pattern.match(p.name))


def read_image(path: Path) -> tuple[np.ndarray, object]:
    """A float image in [0, 1] as H x W (x C) for 2D files, or Z x H x W for volumes, and what ``write_image`` needs.

    8-bit 2D images are divided by 255 (the corruptions' parameters assume this range); anything else is rescaled by
    its own min and max, corrupted in float (never through 8 bits) and mapped back after corruption."""
    name = path.name.lower()
    if name.endswith(NATURAL_IMAGE_ENDINGS):
        if name.endswith((".tif", ".tiff")):
            import tifffile

            array = tifffile.imread(path)
        else:
            from PIL import Image

            array = np.asarray(Image.open(path))
        if array.dtype == np.uint8:
            return array / 255.0, ("natural", array.dtype, 0.0, 255.0)
        low, high = float(array.min()), float(array.max())
        return (array - low) / max(high - low, 1e-12), ("natural", array.dtype, low, high)
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    low, high = float(array.min()), float(array.max())
    return (array - low) / max(high - low, 1e-12), ("sitk", image, low, high)


def is_tiff_volume(dataset_json: dict, example: Path) -> bool:
    """nnU-Net's choice between NaturalImage2DIO and Tiff3DIO for a TIFF dataset: the one dataset.json names, else
    Tiff3DIO when the 2D reader refuses the file (three axes, the last not 3 or 4 colour channels)."""
    if not example.name.lower().endswith((".tif", ".tiff")):
        return False
    named = dataset_json.get("overwrite_image_reader_writer")
    if named in ("Tiff3DIO", "NaturalImage2DIO"):
        return named == "Tiff3DIO"
    import tifffile

    with tifffile.TiffFile(example) as tif:
        shape = tif.series[0].shape
    return len(shape) == 3 and shape[-1] not in (3, 4)


def is_eight_bit(path: Path) -> bool:
    """Whether ``path`` holds 8-bit 2D pixels, which use the corruptions' reference implementations; anything else
    (CT, MR, 16-bit, float) is corrupted in float (:meth:`Corruption.apply`)."""
    if not path.name.lower().endswith(NATURAL_IMAGE_ENDINGS):
        return False
    kind, dtype, _, _ = read_image(path)[1]
    return np.dtype(dtype) == np.uint8


def write_image(array: np.ndarray, info: object, path: Path) -> None:
    kind, meta, low, high = info
    values = array * (high - low) + low
    if kind == "natural":
        dtype = np.dtype(meta)
        values = np.round(values).astype(dtype) if dtype.kind in "iu" else values.astype(dtype)
        if path.name.lower().endswith((".tif", ".tiff")):
            import tifffile

            tifffile.imwrite(path, values)
        else:
            from PIL import Image

            Image.fromarray(values).save(path)
        return
    import SimpleITK as sitk

    reference = meta
    pixel = sitk.GetArrayViewFromImage(reference).dtype
    values = np.round(values).astype(pixel) if pixel.kind in "iu" else values.astype(pixel)
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(reference)
    sitk.WriteImage(out, str(path), useCompression=True)


def write_mask(mask: np.ndarray, path: Path) -> None:
    """An artefact mask as an 8-bit PNG, 255 where the artefact lies (viewable as is)."""
    from PIL import Image

    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def corrupt_array(
    array: np.ndarray, corruption, severity: int, rng: np.random.Generator, volume: bool, eight_bit: bool = True
) -> np.ndarray:
    """2D images directly; volumes slice by slice along the first (z) axis (the corruptions are 2D acquisition
    artefacts), the slices drawing from one stream in order, except the float intensity changes that use the whole
    volume's statistics (:data:`~nnunet_lite.robustness.corruptions.WHOLE_VOLUME`). ``eight_bit``: see
    :meth:`Corruption.apply`."""
    if not volume or (not eight_bit and corruption.float_function() in WHOLE_VOLUME):
        return corruption.apply(array, severity, rng, eight_bit=eight_bit)
    return np.stack([corruption.apply(array[z], severity, rng, eight_bit=eight_bit) for z in range(array.shape[0])])


def _drop_8bit_only(chosen: tuple, explicit: bool, dataset: str) -> tuple[tuple, dict[str, str]]:
    """The corruptions that have a float implementation, and the dropped ones with the reason. Corruptions the user
    named explicitly are refused instead of dropped."""
    refused = {c.name: c.float_refusal() for c in chosen if c.float_refusal()}
    if refused and explicit:
        name, why = next(iter(refused.items()))
        raise ComparisonError(
            f"--corruptions {name}: {dataset} has non-8-bit intensities and {name} has no float implementation ({why});"
            f" leave it out"
        )
    return tuple(c for c in chosen if c.name not in refused), refused


def make_corrupted_sets(
    dataset: str | int,
    suite: str,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    from_fold: int | None = None,
    corruptions: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Writes the corrupted copies of ``dataset``'s test images (or fold ``from_fold``'s validation images).

    Args:
        dataset: dataset ID or name (its nnUNet_raw folder is read, never modified).
        suite: corruption suite (dermoscopy, ultrasound, endoscopy, generic).
        severities: subset of 1-5.
        seed: the only source of randomness; the same seed gives the same pixels.
        from_fold: use the validation cases of this fold (imagesTr/labelsTr) instead of imagesTs/labelsTs.
        corruptions: restrict the suite to these corruption names.
        overwrite: replace an existing set (its results in nnUNet_results are then recomputed by ``run``).

    Returns:
        The set's folder.
    """
    name = dataset_name(dataset)
    raw = require_env("nnUNet_raw") / name
    if not (raw / "dataset.json").is_file():
        raise ComparisonError(f"{raw / 'dataset.json'} not found: robustness make needs the nnU-Net raw dataset")
    try:
        chosen = get_suite(suite, list(corruptions) if corruptions else None)
    except KeyError as e:
        raise ComparisonError(e.args[0]) from e
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ComparisonError(f"--severities must be among {list(SEVERITIES)}, got {list(severities)}")
    severities = sorted(set(severities))
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    images, labels, cases = _source_cases(raw, name, ending, from_fold)
    files = {case: channel_files(images, case, ending) for case in cases}
    lacking = [case for case, found in files.items() if not found]
    if lacking:
        raise ComparisonError(
            f"{images} has no image files <case>_XXXX{ending} for {len(lacking)} cases: {lacking[:5]}"
        )
    first = next(iter(files.values()))[0]
    volume = not ending.lower().endswith(NATURAL_IMAGE_ENDINGS) or is_tiff_volume(dataset_json, first)
    # Tiff3DIO's spacing sidecars (CASE.json, no channel suffix) go with every copy of the images and labels
    sidecars = {case: images / f"{case}.json" for case in cases} if ending.lower() in (".tif", ".tiff") else {}
    eight_bit = {f: is_eight_bit(f) for case_files in files.values() for f in case_files}
    skipped: dict[str, str] = {}
    if not all(eight_bit.values()):
        chosen, skipped = _drop_8bit_only(chosen, bool(corruptions), name)
        if not chosen:
            raise ComparisonError(f"no corruption of suite {suite} applies to the non-8-bit images of {name}")
    if volume and any(c.is_artefact for c in chosen):  # e.g. an 8-bit 3D TIFF: no hair on a volume's slices
        artefacts = [c.name for c in chosen if c.is_artefact]
        if corruptions:
            raise ComparisonError(
                f"--corruptions {artefacts[0]}: {name} holds 3D volumes; hair, ruler and ink_marker only apply to "
                f"natural RGB (8-bit) dermoscopy photographs; leave them out"
            )
        skipped.update({a: "the images are 3D volumes, not RGB dermoscopy photographs" for a in artefacts})
        chosen = tuple(c for c in chosen if not c.is_artefact)
    set_name = set_name_for(suite, from_fold)
    target = set_folder(name, set_name)
    n_files = sum(len(f) for f in files.values())
    timings = {}
    with atomic_folder(target, overwrite=overwrite) as tmp:
        (tmp / "labelsTs").mkdir()
        (tmp / CLEAN / "imagesTs").mkdir(parents=True)
        for case, case_files in files.items():
            shutil.copy2(labels / f"{case}{ending}", tmp / "labelsTs")
            if sidecars and (labels / f"{case}.json").is_file():
                shutil.copy2(labels / f"{case}.json", tmp / "labelsTs")
            for f in case_files:
                shutil.copy2(f, tmp / CLEAN / "imagesTs")
        bar = tqdm(total=n_files * len(chosen) * len(severities), disable=not progress, desc=f"robustness {set_name}")
        for corruption in chosen:
            # read each file once per corruption and corrupt it at every severity with the same random stream
            for severity in severities:
                (tmp / f"{corruption.name}_s{severity}" / "imagesTs").mkdir(parents=True)
                if corruption.is_artefact:
                    (tmp / f"{corruption.name}_s{severity}" / ARTEFACT_FOLDER).mkdir()
            started = time.perf_counter()
            for case, case_files in files.items():
                for f in case_files:
                    array, info = read_image(f)
                    for severity in severities:
                        folder = tmp / f"{corruption.name}_s{severity}"
                        if corruption.is_artefact:
                            # drawn from the case's stream, so every channel file of a case gets the same artefact
                            rng = case_rng(seed, corruption.name, case)
                            out, mask = corruption.apply_with_mask(array, severity, rng)
                            write_mask(mask, folder / ARTEFACT_FOLDER / f"{case}.png")
                        else:
                            rng = case_rng(seed, corruption.name, f.name)
                            out = corrupt_array(array, corruption, severity, rng, volume, eight_bit[f])
                        write_image(out, info, folder / "imagesTs" / f.name)
                        bar.update()
            timings[corruption.name] = (time.perf_counter() - started) / len(severities)
        bar.close()
        for sidecar in sidecars.values():
            if sidecar.is_file():
                for folder in [CLEAN] + [f"{c.name}_s{s}" for c in chosen for s in severities]:
                    shutil.copy2(sidecar, tmp / folder / "imagesTs")
        manifest = {
            "id": uuid.uuid4().hex,
            "dataset": name,
            "suite": suite,
            "set": set_name,
            "seed": seed,
            "severities": severities,
            "source": "imagesTs" if from_fold is None else f"fold {from_fold} validation cases",
            "from_fold": from_fold,
            "images": str(images),
            "labels": str(labels),
            "file_ending": ending,
            "cases": cases,
            "corruptions": [
                {
                    "name": c.name,
                    "function": c.function.__name__,
                    "parameters": [c.parameters[s - 1] for s in severities],
                    "source": c.source,
                    "seconds_per_set": round(timings[c.name], 3),
                }
                for c in chosen
            ],
            "intensities": "8-bit" if all(eight_bit.values()) else "float (non-8-bit images present)",
            "skipped_corruptions": skipped,
            "sets": [CLEAN] + [f"{c.name}_s{s}" for c in chosen for s in severities],
            # set -> folder (relative to the set) of the artefact masks, <case>.png, nonzero where the artefact is
            "artefact_masks": {
                f"{c.name}_s{s}": f"{c.name}_s{s}/{ARTEFACT_FOLDER}"
                for c in chosen
                if c.is_artefact
                for s in severities
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def load_manifest(dataset: str, set_name: str | None) -> dict:
    """The manifest of ``set_name``, or of the only set of ``dataset`` when None."""
    root = require_env("nnUNet_raw") / dataset / "robustness"
    found = sorted(p.parent.name for p in root.glob("*/manifest.json")) if root.is_dir() else []
    if set_name is None:
        if len(found) != 1:
            raise ComparisonError(
                f"{dataset} has {'no' if not found else len(found)} corrupted sets ({found or 'run robustness make'}); "
                f"name one with --set"
            )
        set_name = found[0]
    manifest_file = root / set_name / "manifest.json"
    if not manifest_file.is_file():
        raise ComparisonError(f"no corrupted set {set_name!r} for {dataset} (found: {found or 'none'})")
    manifest = json.loads(manifest_file.read_text())
    manifest["folder"] = str(manifest_file.parent)
    return manifest
