"""``robustness make`` on CT/MR volumes: float corruptions that never pass intensities through 8 bits.

The 8-bit reference implementations (Pillow's brightness, contrast, JPEG, box resize) quantise every severity of a
CT to 256 levels (16 HU steps on a 4000 HU range). Volumes and other non-8-bit images use float variants; JPEG has
none and is left out of a suite (or refused when named). No training: only nnUNet_raw is needed.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_lite.cli import main
from nnunet_lite.robustness.corruptions import SUITES, case_rng
from nnunet_lite.robustness.make import corrupt_array

from .conftest import SHARED_DATASETS

REAL_CT = SHARED_DATASETS / "totalsegmentator-example-ct" / "tests" / "reference_files"
MIN_LEVELS = 1024  # "far more than 256": an 8-bit round trip leaves at most 256 per volume


def cli(*args) -> int:
    return main([str(a) for a in args])


def synthetic_ct(shape: tuple[int, int, int] = (12, 128, 128), seed: int = 0) -> np.ndarray:
    """Float HU values from -1000 to 3000 with fine gradations: smooth anatomy-like ramps and blobs plus noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    body = 1000 * np.exp(-((y - 0.5) ** 2 + (x - 0.5) ** 2) / 0.08) + 300 * z
    bone = 2000 * np.exp(-((y - 0.6) ** 2 + (x - 0.45) ** 2) / 0.004)
    volume = -1000 + body + bone + rng.normal(0, 5, shape)
    volume.flat[0], volume.flat[-1] = -1000, 3000  # the full range
    return volume.astype(np.float32)


FLOAT_CORRUPTIONS = [(s, c) for s, cs in SUITES.items() for c in cs if c.float_function() is not None]


@pytest.mark.parametrize("suite,corruption", FLOAT_CORRUPTIONS, ids=[f"{s}-{c.name}" for s, c in FLOAT_CORRUPTIONS])
def test_float_corruptions_keep_gradations_grow_and_repeat(suite, corruption):
    ct = synthetic_ct().astype(np.float64)
    x = (ct - ct.min()) / (ct.max() - ct.min())  # as read_image scales a volume
    assert len(np.unique(x)) > 0.99 * x.size
    out = [corrupt_array(x, corruption, s, case_rng(0, corruption.name, "ct_0000.nii.gz"), True, False) for s in
           range(1, 6)]  # fmt: skip
    levels = [len(np.unique(o)) for o in out]
    assert min(levels) >= MIN_LEVELS, levels
    distance = [np.abs(o - x).mean() for o in out]
    assert all(o.shape == x.shape and o.min() >= 0 and o.max() <= 1 for o in out)
    assert distance[0] > 0 and all(np.diff(distance) > 0), distance
    again = corrupt_array(x, corruption, 3, case_rng(0, corruption.name, "ct_0000.nii.gz"), True, False)
    np.testing.assert_array_equal(again, out[2])


def test_jpeg_has_no_float_version_and_8bit_path_is_unchanged():
    jpeg = next(c for c in SUITES["generic"] if c.name == "jpeg_compression")
    assert jpeg.float_function() is None and "8-bit" in jpeg.float_refusal()
    with pytest.raises(ValueError, match="jpeg_compression: no float implementation"):
        jpeg.apply(np.zeros((8, 8)), 1, np.random.default_rng(0), eight_bit=False)
    # the 8-bit path: the reference function, unchanged (brightness through Pillow: 256 levels at most)
    brightness = next(c for c in SUITES["generic"] if c.name == "brightness_up")
    x = np.linspace(0, 1, 4096).reshape(64, 64)
    eight = brightness.apply(x, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(eight, brightness.function(x, 1.2, None).clip(0, 1))
    assert len(np.unique(eight)) <= 256 < len(np.unique(brightness.apply(x, 2, None, eight_bit=False)))


def write_volume(array: np.ndarray, path: Path, spacing=(1.5, 1.0, 1.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[::-1])
    sitk.WriteImage(image, str(path), useCompression=True)


@pytest.fixture
def ct_dataset(nnunet_env) -> Path:
    """A raw NIfTI dataset: a float32 synthetic CT and, when the shared sample is there, the real int16 CT."""
    raw = Path(os.environ["nnUNet_raw"]) / "Dataset936_CTVolumes"
    shutil.rmtree(raw / "robustness", ignore_errors=True)  # the nnU-Net folders are shared by the session
    for sub in ("imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    ct = synthetic_ct((6, 96, 96))
    write_volume(ct, raw / "imagesTs" / "synth_0000.nii.gz")
    write_volume((ct > 0).astype(np.uint8), raw / "labelsTs" / "synth.nii.gz")
    if (REAL_CT / "example_ct_sm.nii.gz").is_file():
        (raw / "imagesTs" / "real_0000.nii.gz").write_bytes((REAL_CT / "example_ct_sm.nii.gz").read_bytes())
        (raw / "labelsTs" / "real.nii.gz").write_bytes((REAL_CT / "example_seg.nii.gz").read_bytes())
        real = read(raw / "imagesTs" / "real_0000.nii.gz")  # int16 HU with 1711 levels, which 8 bits would destroy
        assert real.dtype == np.int16 and len(np.unique(real)) > 1000
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "body": 1}, "numTraining": 0}
    (raw / "dataset.json").write_text(json.dumps({**dataset_json, "file_ending": ".nii.gz"}))
    return raw


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_make_on_ct_volumes_keeps_float_intensities(ct_dataset, capsys):
    """Every corrupted CT keeps its dtype, geometry and far more than 256 levels at every severity; severities grow;
    the same seed writes the same bytes; labels are byte-identical copies; JPEG is left out with a note."""
    args = ["robustness", "make", "-d", 936, "--suite", "generic", "--seed", 3]
    assert cli(*args) == 0
    out = capsys.readouterr().out
    folder = ct_dataset / "robustness" / "generic"
    manifest = json.loads((folder / "manifest.json").read_text())
    corruptions = [c["name"] for c in manifest["corruptions"]]
    cases = manifest["cases"]
    for case in cases:
        assert (folder / "labelsTs" / f"{case}.nii.gz").read_bytes() == (
            ct_dataset / "labelsTs" / f"{case}.nii.gz"
        ).read_bytes()
        clean_image = sitk.ReadImage(str(ct_dataset / "imagesTs" / f"{case}_0000.nii.gz"))
        clean = sitk.GetArrayFromImage(clean_image).astype(np.float64)
        for name in corruptions:
            distances = []
            for severity in range(1, 6):
                image = sitk.ReadImage(str(folder / f"{name}_s{severity}" / "imagesTs" / f"{case}_0000.nii.gz"))
                array = sitk.GetArrayFromImage(image)
                assert array.dtype == sitk.GetArrayViewFromImage(clean_image).dtype
                assert image.GetSpacing() == clean_image.GetSpacing() and image.GetOrigin() == clean_image.GetOrigin()
                # int16 keeps whole HU only: contrast 0.4 leaves 40% of the sample's 2307 HU (753 levels measured)
                levels, least = len(np.unique(array)), MIN_LEVELS if array.dtype.kind == "f" else 2 * 256
                assert levels >= least, (case, name, severity, levels)
                assert clean.min() <= array.min() and array.max() <= clean.max()
                distances.append(np.abs(array - clean).mean())
            assert distances[0] > 0 and all(np.diff(distances) > 0), (case, name, distances)
    assert "left out jpeg_compression: the images are not 8-bit" in out
    assert list(manifest["skipped_corruptions"]) == ["jpeg_compression"]
    assert len(corruptions) == 10 and "jpeg_compression" not in corruptions and "pixelate" in corruptions

    # same seed, same bytes (a new manifest id)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.nii.gz")}
    assert cli(*args, "--overwrite") == 0
    assert before == {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.nii.gz")}
    assert json.loads((folder / "manifest.json").read_text())["id"] != manifest["id"]


def test_make_refuses_named_jpeg_on_volumes(ct_dataset, capsys):
    args = ["robustness", "make", "-d", 936, "--suite", "generic", "--corruptions", "jpeg_compression", "pixelate"]
    before = sorted((ct_dataset / "robustness").rglob("*")) if (ct_dataset / "robustness").exists() else []
    assert cli(*args, "--overwrite") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--corruptions jpeg_compression" in err and "8-bit codec" in err
    after = sorted((ct_dataset / "robustness").rglob("*")) if (ct_dataset / "robustness").exists() else []
    assert after == before


@pytest.mark.slow  # nnU-Net's predictor searches its whole trainer tree (~30 s on the shared 2 cores)
def test_run_refuses_unknown_trainers_in_one_line(ct_dataset, capsys):
    """A trainer without a model folder (closest trained one suggested), a half-created model folder, and a
    checkpoint whose trainer class nnU-Net cannot import: one line each, no traceback."""
    import torch

    from .test_fast_predict import stub_plans

    make = ["robustness", "make", "-d", 936, "--suite", "generic", "--corruptions", "gaussian_noise"]
    assert cli(*make, "--severities", 1) == 0
    model = Path(os.environ["nnUNet_results"]) / ct_dataset.name / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model / "fold_0").mkdir(parents=True)
    run = ["robustness", "run", "-d", 936, "-c", "3d_fullres", "-f", 0, "--device", "cpu"]
    capsys.readouterr()

    def one_line_error(trainer: str) -> str:
        assert cli(*run, "-tr", trainer) == 1
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s]" not in line]
        assert len(lines) == 1, lines  # one line besides the progress bar
        return lines[0]

    err = one_line_error("nnUNetTrainr")
    assert "unknown trainer 'nnUNetTrainr'" in err and "did you mean -tr nnUNetTrainer?" in err
    assert "lacks plans.json and dataset.json" in one_line_error("nnUNetTrainer")

    (model / "plans.json").write_text(json.dumps(stub_plans("SimpleITKIO", "DefaultPreprocessor")))
    (model / "dataset.json").write_text((ct_dataset / "dataset.json").read_text())
    checkpoint = {
        "trainer_name": "nnUNetTrainerGone",
        "init_args": {"configuration": "3d_fullres"},
        "network_weights": {},
    }
    torch.save(checkpoint, model / "fold_0" / "checkpoint_final.pth")
    err = one_line_error("nnUNetTrainer")
    assert "trainer class 'nnUNetTrainerGone'" in err and "nnUNet_extTrainer" in err
    assert not (model / "robustness").exists() or not any((model / "robustness").rglob("summary.json"))


def test_make_on_3d_tiff_corrupts_slices_and_keeps_spacing_sidecars(nnunet_env):
    """A Tiff3DIO dataset (3D .tif plus CASE.json spacing): corrupted slice by slice like NIfTI, in float, and every
    image folder keeps the spacing sidecars (without them nnU-Net would assume 1 x 1 x 1 mm)."""
    import tifffile

    raw = Path(os.environ["nnUNet_raw"]) / "Dataset933_TiffVolumes"
    shutil.rmtree(raw, ignore_errors=True)
    for sub in ("imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True)
    ct = synthetic_ct((5, 96, 96))
    tifffile.imwrite(raw / "imagesTs" / "vol_0000.tif", ct)
    tifffile.imwrite(raw / "labelsTs" / "vol.tif", (ct > 0).astype(np.uint8))
    for sub in ("imagesTs", "labelsTs"):
        (raw / sub / "vol.json").write_text(json.dumps({"spacing": [3.0, 0.8, 0.8]}))
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "body": 1}, "numTraining": 0}
    (raw / "dataset.json").write_text(json.dumps({**dataset_json, "file_ending": ".tif"}))

    args = ["robustness", "make", "-d", 933, "--suite", "generic", "--corruptions", "gaussian_blur", "brightness_up"]
    assert cli(*args, "--severities", 1, 5) == 0
    folder = raw / "robustness" / "generic"
    assert (folder / "labelsTs" / "vol.json").read_bytes() == (raw / "labelsTs" / "vol.json").read_bytes()
    blurred = []
    for sub in ("clean", "gaussian_blur_s1", "gaussian_blur_s5", "brightness_up_s1", "brightness_up_s5"):
        assert json.loads((folder / sub / "imagesTs" / "vol.json").read_text())["spacing"] == [3.0, 0.8, 0.8]
        out = tifffile.imread(folder / sub / "imagesTs" / "vol_0000.tif")
        assert out.shape == ct.shape and out.dtype == np.float32 and len(np.unique(out)) >= MIN_LEVELS, sub
        blurred.append(out)
    # slice by slice: a blur of the (z, y) planes would mix the 3 mm slices; here each slice is blurred alone
    x = (ct - ct.min()) / (ct.max() - ct.min())
    blur = next(c for c in SUITES["generic"] if c.name == "gaussian_blur")
    expected = corrupt_array(x.astype(np.float64), blur, 5, case_rng(0, "gaussian_blur", "vol_0000.tif"), True, False)
    np.testing.assert_allclose(blurred[2], expected * (ct.max() - ct.min()) + ct.min(), rtol=0, atol=1e-2)
