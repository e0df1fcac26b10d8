"""Small synthetic datasets in nnU-Net raw format, for the demo and the tests.

``make_lesion_dataset_2d`` imitates dermoscopy: RGB skin-coloured background with shading and noise, one irregular
dark lesion per image, and hair-like dark curves that cross it (the classic distractor). ``make_organ_dataset_3d``
writes anisotropic NIfTI volumes with a two-label ellipsoid "organ", optionally as nested regions (KiTS-style).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from PIL import Image, ImageDraw

RGB_CHANNELS = {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}


def _lesion_case(
    rng: np.random.Generator,
    size: int,
    centre_range: tuple[float, float] = (0.3, 0.7),
    radius_range: tuple[float, float] = (0.12, 0.28),
) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    skin = np.array([205, 160, 135], np.float32) + rng.normal(0, 12, 3)
    shade = 1 + 0.12 * np.sin(
        2 * np.pi * (xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1)) / size + rng.uniform(0, 2 * np.pi)
    )
    image = skin[None, None] * shade[..., None]

    cy, cx = rng.uniform(*centre_range, 2) * size
    radius = rng.uniform(*radius_range) * size
    theta = np.arctan2(yy - cy, xx - cx)
    boundary = radius * (
        1 + 0.18 * np.sin(3 * theta + rng.uniform(0, 2 * np.pi)) + 0.1 * np.sin(5 * theta + rng.uniform(0, 2 * np.pi))
    )
    mask = np.hypot(yy - cy, xx - cx) < boundary
    lesion = np.array([115, 70, 55], np.float32) + rng.normal(0, 12, 3)
    texture = 1 + 0.1 * rng.standard_normal((size, size)).astype(np.float32)
    image[mask] = lesion[None] * texture[mask][:, None]

    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(1, 4)):  # hairs: dark quadratic curves across the image
        p0, p1, p2 = rng.uniform(-0.1, 1.1, (3, 2)) * size
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        draw.line([tuple(p) for p in curve], fill=(40, 30, 25), width=1)
    image = np.asarray(canvas, np.float32) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def make_lesion_dataset_2d(
    raw_folder: Path,
    dataset_id: int,
    num_train: int = 40,
    num_test: int = 10,
    size: int = 64,
    seed: int = 0,
    name: str = "SyntheticLesions",
    centre_range: tuple[float, float] = (0.3, 0.7),
    radius_range: tuple[float, float] = (0.12, 0.28),
) -> Path:
    """Writes ``raw_folder/DatasetXXX_<name>`` with imagesTr/labelsTr/imagesTs/labelsTs; returns its path.

    Lesion centres are drawn uniformly in ``centre_range`` and radii in ``radius_range`` (fractions of ``size``). The
    defaults keep lesions near the centre, where a constant centred disc already scores Dice ~0.5; tests that must
    tell a segmenting network from one that ignores its input widen both ranges.
    """
    out = Path(raw_folder) / f"Dataset{dataset_id:03d}_{name}"
    rng = np.random.default_rng(seed)
    for split, count in (("Tr", num_train), ("Ts", num_test)):
        (out / f"images{split}").mkdir(parents=True, exist_ok=True)
        (out / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = _lesion_case(rng, size, centre_range, radius_range)
            case = f"lesion_{split.lower()}_{i:03d}"
            Image.fromarray(image).save(out / f"images{split}" / f"{case}_0000.png")
            Image.fromarray(mask).save(out / f"labels{split}" / f"{case}.png")
    generate_dataset_json(
        str(out),
        RGB_CHANNELS,
        {"background": 0, "lesion": 1},
        num_train,
        ".png",
        dataset_name=out.name,
        description="Synthetic dermoscopy-like lesions with hair artefacts (nnunet_lite.synthetic)",
        license="CC0",
        converted_by="nnunet_lite",
    )
    return out


def make_organ_dataset_3d(
    raw_folder: Path,
    dataset_id: int,
    num_train: int = 8,
    num_test: int = 2,
    shape: tuple[int, int, int] = (16, 48, 48),
    spacing: tuple[float, float, float] = (3.0, 1.0, 1.0),
    regions: bool = False,
    seed: int = 0,
    name: str = "SyntheticOrgans",
) -> Path:
    """Anisotropic CT-like volumes (z, y, x) with label 1 = organ and 2 = lesion inside it.

    With ``regions=True`` the dataset.json declares KiTS-style nested regions (``organ`` = (1, 2), ``lesion`` = 2), so
    nnU-Net trains sigmoid heads.
    """
    out = Path(raw_folder) / f"Dataset{dataset_id:03d}_{name}"
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    for split, count in (("Tr", num_train), ("Ts", num_test)):
        (out / f"images{split}").mkdir(parents=True, exist_ok=True)
        (out / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            center = rng.uniform(0.35, 0.65, 3) * np.array(shape)
            radii = rng.uniform(0.2, 0.3, 3) * np.array(shape)
            dist = ((zz - center[0]) / radii[0]) ** 2 + ((yy - center[1]) / radii[1]) ** 2
            dist += ((xx - center[2]) / radii[2]) ** 2
            seg = (dist < 1).astype(np.uint8)
            seg[dist < 0.3] = 2
            ct = rng.normal(-100, 20, shape) + 150 * (seg == 1) + 250 * (seg == 2)
            case = f"organ_{split.lower()}_{i:03d}"
            for array, path in (
                (ct.astype(np.float32), out / f"images{split}" / f"{case}_0000.nii.gz"),
                (seg, out / f"labels{split}" / f"{case}.nii.gz"),
            ):
                img = sitk.GetImageFromArray(array)
                img.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # SimpleITK spacing is (x, y, z)
                sitk.WriteImage(img, str(path))
    labels = {"background": 0, "organ": (1, 2), "lesion": 2} if regions else {"background": 0, "organ": 1, "lesion": 2}
    generate_dataset_json(
        str(out),
        {"0": "CT"},
        labels,
        num_train,
        ".nii.gz",
        regions_class_order=(1, 2) if regions else None,
        dataset_name=out.name,
        description="Synthetic anisotropic CT-like volumes (nnunet_lite.synthetic)",
        license="CC0",
        converted_by="nnunet_lite",
    )
    return out


def save_untrained_checkpoint(dataset: str, configuration: str, trainer_name: str, fold: int = 0) -> Path:
    """The trainer's own ``checkpoint_final.pth`` of its freshly initialised network in ``nnUNet_results``, with
    ``plans.json`` and ``dataset.json`` beside it, as ``nnUNetv2_train`` leaves them; returns the model folder.

    For speed and equality tests of inference, which do not depend on the weights. The checkpoint records the
    trainer's test-time mirroring axes, which nnU-Net only sets when training starts: without them
    ``nnUNetv2_predict`` and ``nnunet_lite predict`` would silently skip TTA. Needs the dataset planned and
    preprocessed, and the trainers discoverable (:func:`nnunet_lite.nnunet_env.make_trainers_discoverable`).
    """
    import shutil

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset, configuration, fold, trainer_name, device=torch.device("cpu"))
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets inference_allowed_mirroring_axes
    output = Path(trainer.output_folder)
    output.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(output / "checkpoint_final.pth"))
    preprocessed = Path(trainer.preprocessed_dataset_folder_base)
    for name, target in (("nnUNetPlans.json", "plans.json"), ("dataset.json", "dataset.json")):
        shutil.copy(preprocessed / name, Path(trainer.output_folder_base) / target)
    return Path(trainer.output_folder_base)
