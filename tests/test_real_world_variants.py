"""Real-world file variants through the converters' public CLI: every reader either converts a variant correctly
(asserted on the written voxels and pixels, read back the way nnU-Net reads them) or fails with one error line that
names the file, exit 1, and nothing left in nnUNet_raw.

CT volumes: int16, uint16, float32, float64, scaled (scl_slope/scl_inter), .nii and .nii.gz, NaN, inf, 4D, truncated,
and one large float32 KiTS23-style volume in a subprocess (the view-of-a-freed-image segfault). Masks: 1-bit, 8-bit,
0/1, 16-bit, 24-bit, RGBA, single colour, JPEG with edge noise; refused: grey band, soft mask, two colours, all
empty, truncated. Images: grey, RGB, RGBA, palette; refused: 16-bit, truncated. docs/reliability.md lists the outcomes.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from nnunet_lite.cli import main

from .convert_fixtures import disk, make_busb, read_png, rgb_image, save, verify_with_nnunet
from .convert_fixtures_3d import make_btcv, make_kits23, save_kits_nifti


@pytest.fixture
def raw_env(tmp_path, monkeypatch):
    paths = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        paths[var] = tmp_path / var
        paths[var].mkdir()
        monkeypatch.setenv(var, str(paths[var]))
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    return paths


def convert(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["convert", *argv, "-np", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(code: int, err: str, needle: str, filename: str, raw: Path) -> None:
    """Exit 1, one error line naming the file and the problem (plus the hint line), nothing left behind."""
    assert code == 1, err
    first = err.splitlines()[0]
    assert first.startswith("error: ") and filename in first and needle in first, err
    assert "Traceback" not in err
    assert list(raw.iterdir()) == [], "output left behind"


# --------------------------------------------------------------------------------------------------------------------
# 3D: CT storage variants (BTCV layout, case img0001 replaced)
# --------------------------------------------------------------------------------------------------------------------


def _hu(shape_xyz: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Integer HU values from air to bone, so that every storage type below can hold them exactly."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 1500, shape_xyz).astype(np.float64)


def _write(path: Path, stored: np.ndarray, affine: np.ndarray, slope: float | None = None, inter: float = 0.0):
    img = nib.Nifti1Image(stored, affine)
    img.set_data_dtype(stored.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))


def _ct_variant(kind: str, hu: np.ndarray) -> tuple[np.ndarray, float | None, float]:
    """(stored array, scl_slope, scl_inter) whose scaled values are ``hu``."""
    if kind == "int16":
        return hu.astype(np.int16), None, 0.0
    if kind == "uint16 + scl_inter -1024":
        return (hu + 1024).astype(np.uint16), 1.0, -1024.0
    if kind == "uint16":  # some exports shift HU by 1024 and say nothing: stored as is
        return (hu + 1024).astype(np.uint16), None, 0.0
    if kind == "int16 + scl_slope 0.5":
        return ((hu + 1024) * 2).astype(np.int16), 0.5, -1024.0
    if kind == "float32":
        return hu.astype(np.float32), None, 0.0
    if kind == "float64":
        return hu.astype(np.float64), None, 0.0
    raise ValueError(kind)


CT_OK = [
    ("int16", ".nii.gz"),
    ("int16", ".nii"),
    ("uint16", ".nii.gz"),
    ("uint16 + scl_inter -1024", ".nii.gz"),
    ("int16 + scl_slope 0.5", ".nii.gz"),
    ("float32", ".nii.gz"),
    ("float32", ".nii"),
    ("float64", ".nii.gz"),
]


@pytest.mark.parametrize(("kind", "ending"), CT_OK, ids=[f"{k} {e}" for k, e in CT_OK])
def test_ct_storage_variants_convert_to_the_same_voxels(kind, ending, tmp_path, raw_env, capsys):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    source = make_btcv(tmp_path / "download", numbers=(1, 2), test_numbers=())
    img_dir = source / "Abdomen" / "RawData" / "Training" / "img"
    original = nib.load(img_dir / "img0001.nii.gz")
    hu = _hu(original.shape)
    (img_dir / "img0001.nii.gz").unlink()
    stored, slope, inter = _ct_variant(kind, hu)
    _write(img_dir / f"img0001{ending}", stored, original.affine, slope, inter)

    code, out, err = convert(["btcv", str(source)], capsys)
    assert code == 0, err
    dataset = raw_env["nnUNet_raw"] / "Dataset520_BTCV"
    verify_with_nnunet(dataset)
    expected = hu + 1024 if kind == "uint16" else hu
    images, _ = SimpleITKIO().read_images([str(dataset / "imagesTr" / "btcv_0001_0000.nii.gz")])
    np.testing.assert_array_equal(images[0], expected.transpose(2, 1, 0).astype(np.float32))  # nnU-Net: (z, y, x)
    assert not [p for p in raw_env["nnUNet_raw"].iterdir() if p.name.startswith(".")]


def _nan(hu: np.ndarray) -> np.ndarray:
    out = hu.astype(np.float32)
    out[1, 2, 3] = np.nan
    return out


def _inf(hu: np.ndarray) -> np.ndarray:
    out = hu.astype(np.float64)
    out[0, 0, 0] = -np.inf
    return out


CT_BAD = {
    "float32 with NaN": (".nii.gz", _nan, "image contains 1 NaN voxel values"),
    "float64 with -inf": (".nii.gz", _inf, "image contains 1 infinite voxel values"),
    "4D with 2 volumes": (".nii.gz", lambda hu: np.stack([hu, hu], -1).astype(np.int16), "found 4 dimensions"),
    "4D with 1 volume": (".nii.gz", lambda hu: hu[..., None].astype(np.int16), "found 4 dimensions"),
    "truncated .nii": (".nii", lambda hu: hu.astype(np.int16), "truncated"),
    "truncated .nii.gz": (".nii.gz", lambda hu: hu.astype(np.int16), "truncated"),
}


@pytest.mark.parametrize("case", list(CT_BAD))
def test_ct_variants_that_nnunet_cannot_use_fail_with_one_line(case, tmp_path, raw_env, capsys):
    ending, make, needle = CT_BAD[case]
    source = make_btcv(tmp_path / "download", numbers=(1, 2), test_numbers=())
    img_dir = source / "Abdomen" / "RawData" / "Training" / "img"
    original = nib.load(img_dir / "img0001.nii.gz")
    (img_dir / "img0001.nii.gz").unlink()
    path = img_dir / f"img0001{ending}"
    _write(path, make(_hu(original.shape)), original.affine)
    if case.startswith("truncated"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = convert(["btcv", str(source)], capsys)
    assert_clean_failure(code, err, needle, path.name, raw_env["nnUNet_raw"])
    assert "->" in err  # the hint: what to do
    if case == "4D with 1 volume":
        assert "drop the trailing axes of length 1" in err


LABEL_OK = {"float32": np.float32, "int16": np.int16, "uint16": np.uint16, "int32": np.int32}


@pytest.mark.parametrize("dtype", list(LABEL_OK))
def test_label_maps_stored_as_other_integer_or_float_types_keep_their_labels(dtype, tmp_path, raw_env, capsys):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    source = make_btcv(tmp_path / "download", numbers=(1,), test_numbers=())
    path = source / "Abdomen" / "RawData" / "Training" / "label" / "label0001.nii.gz"
    original = nib.load(path)
    labels = np.asarray(original.dataobj)
    _write(path, labels.astype(LABEL_OK[dtype]), original.affine)
    code, _, err = convert(["btcv", str(source)], capsys)
    assert code == 0, err
    dataset = raw_env["nnUNet_raw"] / "Dataset520_BTCV"
    verify_with_nnunet(dataset)
    seg, _ = SimpleITKIO().read_seg(str(dataset / "labelsTr" / "btcv_0001.nii.gz"))
    np.testing.assert_array_equal(seg[0], labels.transpose(2, 1, 0))
    assert set(np.unique(seg)) == set(range(14))


def test_float64_btcv_and_float32_kits23_cases_pass_nnunet_verification(tmp_path, raw_env, capsys):
    """The issue's two cases: float64 BTCV-style and float32 KiTS23-style imaging, converted and verified."""
    source = make_btcv(tmp_path / "btcv", numbers=(1, 2), test_numbers=())
    for path in sorted((source / "Abdomen" / "RawData" / "Training" / "img").glob("*.nii.gz")):
        img = nib.load(path)
        _write(path, np.asarray(img.dataobj).astype(np.float64), img.affine)
    assert convert(["btcv", str(source)], capsys)[0] == 0
    verify_with_nnunet(raw_env["nnUNet_raw"] / "Dataset520_BTCV")

    repo = make_kits23(tmp_path / "kits", n=2)
    for path in sorted((repo / "dataset").glob("case_*/imaging.nii.gz")):
        img = nib.load(path)
        save_kits_nifti(np.asarray(img.dataobj).astype(np.float32), path, header=img.header)
    code, out, err = convert(["kits23", str(repo)], capsys)
    assert code == 0, err
    assert "1 channel CT (32-bit float)" in out
    verify_with_nnunet(raw_env["nnUNet_raw"] / "Dataset521_KiTS23")


def test_large_float32_ct_converts_without_crashing(tmp_path):
    """A 38 MB float32 volume: the NaN check once read a NumPy view of an image SimpleITK had already freed, which
    segfaulted (exit -11) once the buffer was big enough to be returned to the system. A subprocess, so that a crash
    fails this test and not the whole run."""
    repo = make_kits23(tmp_path / "kits", n=1)
    case = repo / "dataset" / "case_00000"
    shape = (36, 512, 512)  # (z, y, x) as KiTS23 stores it; above glibc's largest mmap threshold (32 MB)
    label = np.zeros(shape, np.uint8)
    label[10:20, 200:300, 200:300] = 1
    label[12:16, 230:260, 230:260] = 2
    ct = np.full(shape, -1000.0, np.float32)
    ct[label > 0] = 40.0
    save_kits_nifti(label, case / "segmentation.nii.gz", spacing_zyx=(5.0, 0.78, 0.78))
    save_kits_nifti(ct, case / "imaging.nii.gz", spacing_zyx=(5.0, 0.78, 0.78))
    shutil.rmtree(case / "instances")
    raw = tmp_path / "nnUNet_raw"
    proc = subprocess.run(
        [sys.executable, "-m", "nnunet_lite", "convert", "kits23", str(repo), "-np", "1", "-o", str(raw)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    written = nib.load(raw / "Dataset521_KiTS23" / "imagesTr" / "case_00000_0000.nii.gz")
    assert written.get_data_dtype() == np.float32 and written.shape == shape
    assert float(written.get_fdata(dtype=np.float32)[15, 250, 250]) == 40.0


# --------------------------------------------------------------------------------------------------------------------
# 2D: masks and images (Kvasir-SEG layout: JPEG/PNG, masks thresholded at 127; BUS-B: binary masks required)
# --------------------------------------------------------------------------------------------------------------------

H, W = 48, 64
REF = disk(H, W, 24, 32, 12)  # the polyp


def _kvasir(root: Path, masks: dict[str, tuple[np.ndarray, str, dict]], images: dict | None = None) -> Path:
    """Kvasir-SEG/{images,masks}/<id>.<ext>: case "a" gets the given variants, case "b" is ordinary."""
    base = root / "Kvasir-SEG"
    images = images or {}
    for cid in ("a", "b"):
        image, ext, kwargs = images.get(cid, (rgb_image(H, W, 1), ".jpg", {"quality": 95}))
        save(image, base / "images" / f"{cid}{ext}", **kwargs)
        mask, ext, kwargs = masks.get(cid, ((REF * 255).astype(np.uint8), ".png", {}))
        save(mask, base / "masks" / f"{cid}{ext}", **kwargs)
    return root


def _grey(v):
    return (REF * v).astype(np.uint8)


def _rgb(colour):
    out = np.zeros((H, W, 3), np.uint8)
    out[REF] = colour
    return out


def _two_colours(first, second):
    out = _rgb(first)
    out[:, : W // 2][REF[:, : W // 2]] = second
    return out


def _band():
    out = _grey(255)
    out[disk(H, W, 24, 32, 20) & ~REF] = 128  # {0, 128, 255}: a grey ring of 8 px
    return out


def _soft():
    yy, xx = np.mgrid[0:H, 0:W]
    return np.clip(255 - 12 * np.hypot(yy - 24, xx - 32), 0, 255).astype(np.uint8)  # a probability map


def _jpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


MASK_OK = {
    "1-bit PNG": (REF, ".png", {}),
    "8-bit 0/255 PNG": (_grey(255), ".png", {}),
    "8-bit 0/1 PNG": (_grey(1), ".png", {}),
    "16-bit 0/65535 PNG": ((REF * 65535).astype(np.uint16), ".png", {}),
    "24-bit RGB PNG": (np.repeat(_grey(255)[..., None], 3, 2), ".png", {}),
    "RGBA PNG": (np.dstack([np.repeat(_grey(255)[..., None], 3, 2), np.full((H, W), 255, np.uint8)]), ".png", {}),
    "single colour (red) PNG": (_rgb((255, 0, 0)), ".png", {}),
    "JPEG q30 grey (edge noise)": (_grey(255), ".jpg", {"quality": 30}),
    "JPEG q50 RGB (edge noise)": (np.repeat(_grey(255)[..., None], 3, 2), ".jpg", {"quality": 50}),
}


@pytest.mark.parametrize("variant", list(MASK_OK))
def test_mask_variants_convert_to_the_drawn_polyp(variant, tmp_path, raw_env, capsys):
    source = _kvasir(tmp_path / "download", {"a": MASK_OK[variant]})
    if variant.startswith("JPEG"):  # the fixture is only meaningful if JPEG really left grey pixels along the edge
        decoded = np.asarray(Image.open(source / "Kvasir-SEG" / "masks" / "a.jpg").convert("L"))
        assert ((decoded > 63) & (decoded < 192)).sum() > 0
    code, _, err = convert(["kvasir", str(source)], capsys)
    assert code == 0, err
    dataset = raw_env["nnUNet_raw"] / "Dataset504_KvasirSEG"
    verify_with_nnunet(dataset)
    label = read_png(dataset / "labelsTr" / "a.png")
    assert np.count_nonzero(label != REF) <= 4, np.count_nonzero(label != REF)  # JPEG: a few edge pixels at most


MASK_BAD = {
    "grey band {0,128,255}": (_band(), "grey pixels"),
    "soft (probability) mask": (_soft(), "grey pixels"),
    "two colours red + navy": (_two_colours((255, 0, 0), (0, 0, 128)), "2 foreground colours"),
    "two colours red + green": (_two_colours((255, 0, 0), (0, 255, 0)), "2 foreground colours"),
    "two colours JPEG red + green": (_jpeg(_two_colours((255, 0, 0), (0, 255, 0)), 90), "2 foreground colours"),
}


@pytest.mark.parametrize("variant", list(MASK_BAD))
def test_mask_variants_that_would_damage_labels_are_refused(variant, tmp_path, raw_env, capsys):
    mask, needle = MASK_BAD[variant]
    source = _kvasir(tmp_path / "download", {"a": (mask, ".png", {})})
    code, _, err = convert(["kvasir", str(source)], capsys)
    assert_clean_failure(code, err, needle, "a.png", raw_env["nnUNet_raw"])
    if "grey" in needle:  # says how many and what to do
        assert "more than 3 px from a black/white edge" in err and "-> check that this is the dataset's" in err


def test_binary_mask_datasets_refuse_two_colours_of_equal_brightness(tmp_path, raw_env, capsys):
    """BUS-B needs binary masks; red and green have the same channel maximum and were merged without a word."""
    source = make_busb(tmp_path / "download")
    victim = source / "BUS_Dataset_B" / "GT" / "000002.png"
    h, w = read_png(victim).shape
    mask = np.zeros((h, w, 3), np.uint8)
    mask[h // 4 : h // 2, w // 4 : w // 2] = (255, 0, 0)
    mask[h // 2 :, w // 2 :] = (0, 255, 0)
    save(mask, victim)
    code, _, err = convert(["bus-b", str(source)], capsys)
    assert_clean_failure(code, err, "2 foreground colours", victim.name, raw_env["nnUNet_raw"])


def test_all_empty_masks_are_refused(tmp_path, raw_env, capsys):
    empty = (np.zeros((H, W), np.uint8), ".png", {})
    source = _kvasir(tmp_path / "download", {"a": empty, "b": empty})
    code, _, err = convert(["kvasir", str(source)], capsys)
    assert code == 1 and "all 2 masks are empty" in err.splitlines()[0], err
    assert list(raw_env["nnUNet_raw"].iterdir()) == []


def test_a_full_mask_is_warned_about(tmp_path, raw_env, capsys):
    source = _kvasir(tmp_path / "download", {"a": (np.full((H, W), 255, np.uint8), ".png", {})})
    code, out, err = convert(["kvasir", str(source)], capsys)
    assert code == 0, err
    assert "warning: 1 masks are entirely foreground (inverted or blank masks?), e.g. a" in out


@pytest.mark.parametrize("value", ["999", "-1", "0", "256", "x"])
def test_mask_threshold_outside_the_8_bit_range_is_an_argument_error(value, tmp_path, raw_env, capsys):
    source = _kvasir(tmp_path / "download", {})
    with pytest.raises(SystemExit) as exc:
        main(["convert", "kvasir", str(source), "--mask-threshold", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --mask-threshold: expected an integer from 1 to 255" in err and "Traceback" not in err
    assert list(raw_env["nnUNet_raw"].iterdir()) == []


def _palette(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)


IMAGE_OK = {
    "grey PNG": (rgb_image(H, W, 3)[..., 0], lambda a: np.repeat(a[..., None], 3, 2)),
    "RGB PNG": (rgb_image(H, W, 3), lambda a: a),
    "RGBA PNG": (np.dstack([rgb_image(H, W, 3), np.full((H, W), 200, np.uint8)]), lambda a: a[..., :3]),
}


@pytest.mark.parametrize("variant", [*IMAGE_OK, "palette PNG"])
def test_image_variants_are_written_as_3_channel_rgb(variant, tmp_path, raw_env, capsys):
    if variant == "palette PNG":
        pal = _palette(rgb_image(H, W, 3))
        source_pixels, expected = pal, np.asarray(pal.convert("RGB"))
        path = tmp_path / "download" / "Kvasir-SEG" / "images" / "a.png"
        source = _kvasir(tmp_path / "download", {})
        (source / "Kvasir-SEG" / "images" / "a.jpg").unlink()
        source_pixels.save(path)
    else:
        pixels, to_rgb = IMAGE_OK[variant]
        expected = to_rgb(pixels)
        source = _kvasir(tmp_path / "download", {}, {"a": (pixels, ".png", {})})
    code, _, err = convert(["kvasir", str(source)], capsys)
    assert code == 0, err
    dataset = raw_env["nnUNet_raw"] / "Dataset504_KvasirSEG"
    verify_with_nnunet(dataset)
    np.testing.assert_array_equal(read_png(dataset / "imagesTr" / "a_0000.png"), expected)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


IMAGE_BAD = {
    "16-bit PNG image": ("images", ".png", "uint16 pixels; only 8-bit images are supported"),
    "truncated JPEG image": ("images", ".jpg", "cannot read image"),
    "truncated PNG image": ("images", ".png", "cannot read image"),
    "truncated JPEG mask": ("masks", ".jpg", "cannot read image"),
}


@pytest.mark.parametrize("variant", list(IMAGE_BAD))
def test_unusable_images_and_masks_fail_with_one_line(variant, tmp_path, raw_env, capsys):
    folder, ext, needle = IMAGE_BAD[variant]
    if variant.startswith("16-bit"):
        source = _kvasir(
            tmp_path / "download", {}, {"a": ((rgb_image(H, W, 3)[..., 0].astype(np.uint16) * 257), ext, {})}
        )
    elif folder == "images":
        source = _kvasir(tmp_path / "download", {}, {"a": (rgb_image(H, W, 3), ext, {})})
    else:
        source = _kvasir(tmp_path / "download", {"a": (np.repeat(_grey(255)[..., None], 3, 2), ext, {"quality": 90})})
    path = source / "Kvasir-SEG" / folder / f"a{ext}"
    if variant.startswith("truncated"):
        _truncate(path)
    code, _, err = convert(["kvasir", str(source)], capsys)
    assert_clean_failure(code, err, needle, path.name, raw_env["nnUNet_raw"])


def test_uncompressed_nifti_source_is_gzip_compressed_losslessly(tmp_path, raw_env, capsys):
    """.nii sources become .nii.gz whose decompressed bytes equal the source (header and voxels untouched)."""
    source = make_btcv(tmp_path / "download", numbers=(1,), test_numbers=())
    path = source / "Abdomen" / "RawData" / "Training" / "img" / "img0001.nii.gz"
    raw_bytes = gzip.decompress(path.read_bytes())
    path.unlink()
    (path.parent / "img0001.nii").write_bytes(raw_bytes)
    assert convert(["btcv", str(source)], capsys)[0] == 0
    written = raw_env["nnUNet_raw"] / "Dataset520_BTCV" / "imagesTr" / "btcv_0001_0000.nii.gz"
    assert gzip.decompress(written.read_bytes()) == raw_bytes


def test_label_map_with_nan_fails_with_one_line(tmp_path, raw_env, capsys):
    """SimpleITK reads NaN as 0, so the label check must read the stored values."""
    source = make_btcv(tmp_path / "download", numbers=(1, 2), test_numbers=())
    path = source / "Abdomen" / "RawData" / "Training" / "label" / "label0001.nii.gz"
    original = nib.load(path)
    labels = np.asarray(original.dataobj).astype(np.float32)
    labels[0, 0, 0] = np.nan
    _write(path, labels, original.affine)
    code, _, err = convert(["btcv", str(source)], capsys)
    assert_clean_failure(code, err, "label map contains 1 NaN voxel values", path.name, raw_env["nnUNet_raw"])
