"""3D dataset converters (BTCV, KiTS23): synthetic copies of the distributed layouts, the real samples in
../shared/datasets when present, nnU-Net's own verification on every output, the bad-input paths (clear error,
nothing left behind), and one real plan + short training run on a converted KiTS23-style dataset with regions."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_lite.cli import main
from nnunet_lite.dataset_conversion import DATASETS, DEFAULT_IDS, dataset_folder, get_converter
from nnunet_lite.dataset_conversion._engine import (
    ConversionError,
    Geometry,
    check_nifti_complete,
    geometry_mismatch,
    id_ranges,
    orientation_code,
    read_nifti_header,
)
from nnunet_lite.dataset_conversion.btcv import LABELLED_CASES, SYNAPSE_8_ORGANS, btcv_case_id
from nnunet_lite.dataset_conversion.kits23 import NNUNET_KITS23_SETUP, kits23_case_id

from .conftest import run_cli
from .convert_fixtures import SHARED_DATASETS, verify_with_nnunet
from .convert_fixtures_3d import (
    FLIPPED_RAS,
    ct_from_label,
    gunzip_to_nii,
    make_btcv,
    make_kits23,
    organ_label,
    save_kits_nifti,
    truncate_gzip,
    write_sitk,
)

KITS_REGIONS = {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}


@pytest.fixture
def raw_env(tmp_path, monkeypatch):
    paths = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        paths[var] = tmp_path / var
        paths[var].mkdir()
        monkeypatch.setenv(var, str(paths[var]))
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    return paths


def converted(name: str, source: Path, **kwargs) -> Path:
    kwargs.setdefault("num_workers", 1)
    return get_converter(name)(source, **kwargs)


def check_dataset(folder: Path, n_train: int, n_test: int = 0) -> dict:
    """nnU-Net's verification plus: counts, CT channel, .nii.gz everywhere, no temporary folder left."""
    verify_with_nnunet(folder)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == n_train and meta["numTest"] == n_test
    assert meta["file_ending"] == ".nii.gz" and meta["channel_names"] == {"0": "CT"}
    assert meta["reference"] and meta["licence"] and meta["converted_by"].startswith("nnunet_lite")
    images = sorted((folder / "imagesTr").iterdir())
    labels = sorted((folder / "labelsTr").iterdir())
    assert len(images) == len(labels) == n_train
    assert all(p.name.endswith("_0000.nii.gz") for p in images) and all(p.name.endswith(".nii.gz") for p in labels)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    return meta


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


# --------------------------------------------------------------------------------------------------------------------
# BTCV
# --------------------------------------------------------------------------------------------------------------------


def test_btcv_converts_losslessly_and_verifies(tmp_path, raw_env, capsys):
    source = make_btcv(tmp_path / "download")
    (source / "Abdomen" / "RawData" / "Training" / "img" / "notes.txt").write_text("x")
    out = converted("btcv", source)
    assert out == raw_env["nnUNet_raw"] / "Dataset520_BTCV"
    meta = check_dataset(out, 5, 2)
    assert (
        meta["labels"]["background"] == 0 and meta["labels"]["left adrenal gland"] == 13 and len(meta["labels"]) == 14
    )
    assert "overwrite_image_reader_writer" not in meta and "regions_class_order" not in meta
    assert meta["nnunet_lite"]["synapse_8_organs"] == SYNAPSE_8_ORGANS
    raw = source / "Abdomen" / "RawData"
    for n in (1, 2, 3, 21, 22):  # byte copies: headers (oblique and flipped directions, origin, spacing) unchanged
        assert same_bytes(
            out / "imagesTr" / f"btcv_{n:04d}_0000.nii.gz", raw / "Training" / "img" / f"img{n:04d}.nii.gz"
        )
        assert same_bytes(
            out / "labelsTr" / f"btcv_{n:04d}.nii.gz", raw / "Training" / "label" / f"label{n:04d}.nii.gz"
        )
    oblique = sitk.ReadImage(str(out / "imagesTr" / "btcv_0002_0000.nii.gz"))
    assert abs(oblique.GetDirection()[1]) > 0.2 and oblique.GetSpacing() == pytest.approx((0.78, 0.78, 2.5))
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["btcv_0061_0000.nii.gz", "btcv_0062_0000.nii.gz"]
    assert not (out / "labelsTs").exists() and not (out / "splits_final.json").exists()
    assert json.loads((out / "test_sets.json").read_text()) == {"challenge_test": ["btcv_0061", "btcv_0062"]}
    text = capsys.readouterr().out
    assert "imagesTr/labelsTr: 5 cases" in text and "imagesTs (no labels): 2 cases (challenge test 2)" in text
    assert "ignored: 1 files in img/ not named imgNNNN.nii.gz" in text and "12 copied unchanged" in text
    assert "spacing (mm, as stored) 0.78 x 0.78 x 2.5" in text


def test_btcv_transunet_and_monai_splits(tmp_path, raw_env, capsys):
    numbers = [int(c[-4:]) for c in LABELLED_CASES]
    source = make_btcv(tmp_path / "download", numbers=numbers, test_numbers=(61,), shape_zyx=(3, 8, 8))
    out = converted("btcv", source, split="transunet")
    check_dataset(out, 18, 12)
    test_ids = sorted(btcv_case_id(c) for c in "0001 0002 0003 0004 0008 0022 0025 0029 0032 0035 0036 0038".split())
    assert sorted(p.name[:9] for p in (out / "labelsTs").iterdir()) == test_ids
    assert (
        sorted(p.name[:9] for p in (out / "imagesTs").iterdir()) == test_ids
    )  # imagesTs = exactly what labelsTs scores
    assert [p.name for p in (out / "imagesTs_challenge").iterdir()] == ["btcv_0061_0000.nii.gz"]
    assert json.loads((out / "test_sets.json").read_text()) == {
        "challenge_test": ["btcv_0061"],
        "transunet_test": test_ids,
    }
    assert "nnUNetv2_evaluate_simple labelsTs PRED -l 8 4 3 2 6 11 1 7" in capsys.readouterr().out

    out = converted("btcv", source, split="monai", dataset_id=620)
    check_dataset(out, 30, 1)
    (fold,) = json.loads((out / "splits_final.json").read_text())
    assert len(fold["train"]) == 24 and fold["val"] == [f"btcv_{n:04d}" for n in range(35, 41)]

    # MONAI's own dataset_0.json as --split-file gives the same fold
    datalist = {
        "training": [{"image": f"imagesTr/img{c[-4:]}.nii.gz", "label": "x"} for c in fold["train"]],
        "validation": [{"image": f"imagesTr/img{c[-4:]}.nii.gz", "label": "x"} for c in fold["val"]],
    }
    (tmp_path / "dataset_0.json").write_text(json.dumps(datalist))
    out = converted("btcv", source, split_file=tmp_path / "dataset_0.json", dataset_id=621, verbose=False)
    assert json.loads((out / "splits_final.json").read_text()) == [fold]


def test_btcv_uncompressed_input_is_gzipped_losslessly_and_reruns_identically(tmp_path, raw_env):
    source = make_btcv(tmp_path / "download", numbers=(1, 2), test_numbers=())
    nii = gunzip_to_nii(source / "Abdomen" / "RawData" / "Training" / "img" / "img0001.nii.gz")
    first = converted("btcv", source, output_root=tmp_path / "a", verbose=False)
    second = converted("btcv", source, output_root=tmp_path / "b", verbose=False)
    written = first / "imagesTr" / "btcv_0001_0000.nii.gz"
    assert gzip.decompress(written.read_bytes()) == nii.read_bytes()
    for rel in ("imagesTr/btcv_0001_0000.nii.gz", "labelsTr/btcv_0002.nii.gz", "dataset.json"):
        assert same_bytes(first / rel, second / rel), rel
    assert json.loads((first / "dataset.json").read_text())["numTest"] == 0


# --------------------------------------------------------------------------------------------------------------------
# KiTS23
# --------------------------------------------------------------------------------------------------------------------


def test_kits23_setup_is_nnunets_own(tmp_path, monkeypatch):
    """The constant equals the dataset.json that nnU-Net's own KiTS23 converter writes (run here on zero cases)."""
    from nnunetv2.dataset_conversion import Dataset220_KiTS2023 as upstream

    (tmp_path / "kits").mkdir()
    monkeypatch.setattr(upstream, "nnUNet_raw", str(tmp_path / "raw"))
    upstream.convert_kits2023(str(tmp_path / "kits"), 999)
    written = json.loads((tmp_path / "raw" / "Dataset999_KiTS2023" / "dataset.json").read_text())
    setup = NNUNET_KITS23_SETUP
    assert (
        written["labels"]
        == KITS_REGIONS
        == {k: list(v) if isinstance(v, tuple) else v for k, v in setup["labels"].items()}
    )
    assert written["regions_class_order"] == list(setup["regions_class_order"])
    assert written["overwrite_image_reader_writer"] == setup["reader"]
    assert written["channel_names"] == setup["channel_names"] and written["file_ending"] == setup["file_ending"]


def test_kits23_converts_with_regions_and_reorienting_reader(tmp_path, raw_env, capsys):
    repo = make_kits23(tmp_path / "download", n=3)
    out = converted("kits23", tmp_path / "download")  # a folder above the repository
    meta = check_dataset(out, 3)
    assert meta["labels"] == KITS_REGIONS and meta["regions_class_order"] == [1, 3, 2]
    assert meta["overwrite_image_reader_writer"] == "NibabelIOWithReorient"
    for k in range(3):
        case = repo / "dataset" / f"case_{k:05d}"
        assert same_bytes(out / "imagesTr" / f"case_{k:05d}_0000.nii.gz", case / "imaging.nii.gz")
        assert same_bytes(out / "labelsTr" / f"case_{k:05d}.nii.gz", case / "segmentation.nii.gz")
    text = capsys.readouterr().out
    assert "region-based training: kidney (1, 2, 3), masses (2, 3), tumor 2; regions_class_order (1, 3, 2)" in text
    assert "kidney 3, tumor 3, cyst 1" in text and "orientation IPL 3" in text
    assert "instances/ folders (3 cases) not used" in text and "kits23.json (clinical metadata) not used" in text

    # what nnU-Net trains on: the (z, y, x)-stored I-P-L volume reoriented to RAS, spacing (z, y, x) = (5, .78, .78)
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient

    seg, props = NibabelIOWithReorient().read_seg(str(out / "labelsTr" / "case_00001.nii.gz"))
    stored = np.asarray(nib.load(out / "labelsTr" / "case_00001.nii.gz").dataobj)
    assert seg.shape == (1, 6, 16, 16) and props["spacing"] == pytest.approx([5.0, 0.78, 0.78])
    assert np.array_equal(seg[0], stored[::-1, ::-1, ::-1])  # I-P-L stored -> (S, A, R) axes: every axis flipped


def test_kits23_missing_imaging_is_listed_and_skippable(tmp_path, raw_env, capsys):
    repo = make_kits23(tmp_path / "download", n=6, missing_imaging=(1, 2, 3, 5))
    assert main(["convert", "kits23", str(repo), "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert "4 of 6 cases have no imaging.nii.gz: case_00001-00003, case_00005" in err
    assert "kits23_download_data" in err and "--skip-missing-imaging" in err
    assert list(raw_env["nnUNet_raw"].iterdir()) == []

    assert main(["convert", "kits23", str(repo), "-np", "1", "--skip-missing-imaging"]) == 0
    out = raw_env["nnUNet_raw"] / dataset_folder("kits23")
    meta = check_dataset(out, 2)
    assert meta["nnunet_lite"]["skipped_missing_imaging"] == ["case_00001", "case_00002", "case_00003", "case_00005"]
    text = capsys.readouterr().out
    assert "skipped: 4 cases without imaging.nii.gz (--skip-missing-imaging): case_00001-00003, case_00005" in text


# --------------------------------------------------------------------------------------------------------------------
# bad input: clear error naming the file, non-zero exit, nothing left behind
# --------------------------------------------------------------------------------------------------------------------


def _btcv_paths(root):
    source = make_btcv(root, numbers=(1, 2, 3), test_numbers=())
    raw = source / "Abdomen" / "RawData" / "Training"
    return source, raw / "img", raw / "label"


def _relabel(path: Path, fn) -> None:
    img = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(fn(sitk.GetArrayFromImage(img)))
    new.CopyInformation(img)
    sitk.WriteImage(new, str(path))


def _label_size(root):
    source, _, labels = _btcv_paths(root)
    write_sitk(organ_label((6, 16, 15), 1), labels / "label0001.nii.gz")
    return "btcv", source, "label0001.nii.gz: label map does not match its image: size 15x16x6 but the image is 16x16x6"


def _label_spacing(root):
    source, _, labels = _btcv_paths(root)
    write_sitk(organ_label((6, 16, 16), 1), labels / "label0001.nii.gz", spacing_xyz=(0.78, 0.78, 5.0))
    return "btcv", source, "label0001.nii.gz: label map does not match its image: spacing (0.78, 0.78, 5) mm"


def _label_direction(root):
    source, _, labels = _btcv_paths(root)
    write_sitk(organ_label((7, 16, 16), 1), labels / "label0002.nii.gz", direction=np.eye(3).ravel())
    return "btcv", source, "label0002.nii.gz: label map does not match its image: direction"


def _label_origin(root):
    source, _, labels = _btcv_paths(root)
    write_sitk(organ_label((6, 16, 16), 1), labels / "label0001.nii.gz", origin=(-120.0, 95.5, -307.75))
    return "btcv", source, "origin (-120, 95.5, -307.75) mm but the image has (-120, 95.5, -310.25) mm"


def _label_out_of_range(root):
    source, _, labels = _btcv_paths(root)
    _relabel(labels / "label0003.nii.gz", lambda a: np.where(a == 13, 14, a).astype(np.uint8))
    return "btcv", source, "label0003.nii.gz: label values outside 0..13: 14"


def _label_not_integer(root):
    source, _, labels = _btcv_paths(root)
    _relabel(labels / "label0001.nii.gz", lambda a: a.astype(np.float32) * 0.5)
    return "btcv", source, "label0001.nii.gz: label map has non-integer values"


def _image_without_label(root):
    source, _, labels = _btcv_paths(root)
    (labels / "label0002.nii.gz").unlink()
    return "btcv", source, "img0002.nii.gz: 1 image(s) without label map"


def _label_without_image(root):
    source, images, _ = _btcv_paths(root)
    (images / "img0003.nii.gz").unlink()
    return "btcv", source, "label0003.nii.gz: 1 label map(s) without image"


def _truncated_image(root):
    source, images, _ = _btcv_paths(root)
    truncate_gzip(images / "img0003.nii.gz")
    return "btcv", source, "img0003.nii.gz: truncated or corrupt gzip stream"


def _image_4d(root):
    source, images, labels = _btcv_paths(root)
    arr = ct_from_label(organ_label((6, 16, 16), 1), 1)
    nib.save(nib.Nifti1Image(np.stack([arr.T, arr.T], axis=-1), np.eye(4)), images / "img0001.nii.gz")
    return "btcv", source, "img0001.nii.gz: expected a 3D volume, found 4 dimensions (16, 16, 6, 2)"


def _transunet_incomplete(root):
    source, _, _ = _btcv_paths(root)
    return "btcv", source, "--split transunet needs all 30 labelled BTCV cases; 27 missing from SOURCE: btcv_0004-0010"


def _kits_value_4(root):
    repo = make_kits23(root, n=2)
    seg = repo / "dataset" / "case_00001" / "segmentation.nii.gz"
    img = nib.load(seg)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 4
    save_kits_nifti(data, seg, header=img.header)
    return "kits23", repo, "case_00001/segmentation.nii.gz: label values outside 0..3: 4 (1 voxels)"


def _kits_no_segmentation(root):
    repo = make_kits23(root, n=2)
    (repo / "dataset" / "case_00001" / "segmentation.nii.gz").unlink()
    return "kits23", repo, "case_00001: case folder without segmentation.nii.gz (imaging only)"


def _kits_wrong_source(root):
    source, _, _ = _btcv_paths(root)
    return "kits23", source, "no KiTS23 dataset folder found"


def _btcv_wrong_source(root):
    return "btcv", make_kits23(root, n=1), "no BTCV training folder found"


BAD_INPUTS = {
    "label size": _label_size,
    "label spacing": _label_spacing,
    "label direction": _label_direction,
    "label origin": _label_origin,
    "label value out of range": _label_out_of_range,
    "non-integer label": _label_not_integer,
    "image without label": _image_without_label,
    "label without image": _label_without_image,
    "truncated image": _truncated_image,
    "4D image": _image_4d,
    "transunet split incomplete": _transunet_incomplete,
    "kits label value 4": _kits_value_4,
    "kits case without segmentation": _kits_no_segmentation,
    "kits wrong source": _kits_wrong_source,
    "btcv wrong source": _btcv_wrong_source,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(case, tmp_path, raw_env, capsys):
    name, source, needle = BAD_INPUTS[case](tmp_path / "download")
    argv = ["convert", name, str(source), "-np", "1"]
    if case == "transunet split incomplete":
        argv += ["--split", "transunet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "->" in err, err
    assert list(raw_env["nnUNet_raw"].iterdir()) == [], "partial output left behind"


def test_kits_without_any_imaging_fails_even_when_skipping(tmp_path, raw_env):
    repo = make_kits23(tmp_path / "download", n=2, missing_imaging=(0, 1))
    with pytest.raises(ConversionError, match="none of the 2 cases has imaging.nii.gz"):
        converted("kits23", repo, skip_missing_imaging=True)


def test_existing_target_overwrite_split_options_and_cli(tmp_path, raw_env, capsys):
    source = make_btcv(tmp_path / "download", numbers=(1,), test_numbers=())
    assert main(["convert", "btcv", str(source), "-np", "1"]) == 0
    assert main(["convert", "btcv", str(source), "-np", "1"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", "btcv", str(source), "-np", "1", "--overwrite"]) == 0
    assert main(["convert", "btcv", str(source), "--split", "monai", "--split-file", str(tmp_path)]) == 1
    assert "exclude each other" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # 2D-only options are not offered for 3D datasets
        main(["convert", "btcv", str(source), "--resize", "256"])
    assert main(["convert", "--list"]) == 0
    text = capsys.readouterr().out
    assert "Dataset520_BTCV" in text and "Dataset521_KiTS23" in text and "transunet, monai" in text
    assert DEFAULT_IDS["btcv"] == 520 and DEFAULT_IDS["kits23"] == 521
    assert all(520 <= DATASETS[n].default_id <= 529 for n in ("btcv", "kits23"))


def test_helpers():
    assert [btcv_case_id(t) for t in ("img0001.nii.gz", "case0022", "imagesTr/label0035.nii.gz", "7")] == [
        "btcv_0001",
        "btcv_0022",
        "btcv_0035",
        "btcv_0007",
    ]
    assert [kits23_case_id(t) for t in ("case_00021", "00021", "case_00021_0000.nii.gz", "x")] == [
        "case_00021",
        "case_00021",
        "case_00021",
        None,
    ]
    assert id_ranges(["c_0003", "c_0001", "c_0002", "c_0009"]) == "c_0001-0003, c_0009"
    assert orientation_code(FLIPPED_RAS) == "RAS" and orientation_code(np.eye(3).ravel()) == "LPS"
    assert orientation_code((0, 0, 1, 0, 1, 0, -1, 0, 0)) == "IPL"  # KiTS23 as SimpleITK reports it
    g = Geometry((4, 4, 2), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), 1, "x")
    assert geometry_mismatch(g, g) is None
    tiny = Geometry((4, 4, 2), (1.0, 1.0, 3.0), (0.0, 0.0, 5e-4), tuple(np.eye(3).ravel() + 5e-5), 1, "x")
    assert geometry_mismatch(g, tiny) is None  # header round-off
    swapped = Geometry((2, 4, 4), g.spacing, g.origin, g.direction, 1, "x")
    assert "another order" in geometry_mismatch(g, swapped)


def test_truncated_files_are_detected(tmp_path):
    label = organ_label((6, 16, 16), 1)
    gz = write_sitk(label, tmp_path / "a.nii.gz")
    check_nifti_complete(gz)
    header = read_nifti_header(gz)
    assert header.shape == (16, 16, 6) and header.bitpix == 8 and header.expected_bytes == 352 + 16 * 16 * 6
    plain = write_sitk(label, tmp_path / "b.nii")
    check_nifti_complete(plain)
    plain.write_bytes(plain.read_bytes()[:-10])
    with pytest.raises(ConversionError, match="truncated"):
        check_nifti_complete(plain)
    (tmp_path / "c.nii.gz").write_bytes(b"not a volume at all")
    with pytest.raises(ConversionError, match="not a single-file NIfTI"):
        read_nifti_header(tmp_path / "c.nii.gz")


# --------------------------------------------------------------------------------------------------------------------
# real samples (../shared/datasets), skipped when absent
# --------------------------------------------------------------------------------------------------------------------


def shared(sub: str) -> Path:
    path = SHARED_DATASETS / sub
    if not path.is_dir():
        pytest.skip(f"real samples not available ({path})")
    return path


def test_real_kits23_labels_with_synthetic_imaging(tmp_path, raw_env, capsys):
    """The official segmentations (I-P-L, (z, y, x) arrays, a cyst in case_00021), each paired with synthetic imaging
    written with its own header; case_00000 (611 slices) is left without imaging, as after an interrupted download."""
    sample = shared("kits23/dataset")
    dataset = tmp_path / "kits23" / "dataset"
    for case in ("case_00000", "case_00021", "case_00061"):
        (dataset / case).mkdir(parents=True)
        shutil.copy(sample / case / "segmentation.nii.gz", dataset / case / "segmentation.nii.gz")
        if case != "case_00000":
            seg = nib.load(sample / case / "segmentation.nii.gz")
            labels = np.asarray(seg.dataobj)
            ct = (np.array([-60, 150, 250, 10], np.int16)[labels] + (np.arange(labels.shape[2]) % 7)).astype(np.int16)
            save_kits_nifti(ct, dataset / case / "imaging.nii.gz", header=seg.header)
    with pytest.raises(ConversionError, match="1 of 3 cases have no imaging.nii.gz: case_00000"):
        converted("kits23", tmp_path)
    out = converted("kits23", tmp_path, skip_missing_imaging=True)
    meta = check_dataset(out, 2)
    assert meta["labels"] == KITS_REGIONS
    for case in ("case_00021", "case_00061"):
        assert same_bytes(out / "labelsTr" / f"{case}.nii.gz", sample / case / "segmentation.nii.gz")
    text = capsys.readouterr().out
    assert "kidney 2, tumor 2, cyst 1" in text and "orientation IPL 2" in text
    assert "spacing (mm, as stored) 5 x 0.822-0.977 x 0.822-0.977" in text


def test_real_totalsegmentator_ct_as_btcv(tmp_path, raw_env, capsys):
    """A real CT (122x101x30, 3 mm, RAS) with its organ map remapped to BTCV's 13 labels (mapping in SOURCE.txt)."""
    sample = shared("totalsegmentator-example-ct/tests/reference_files")
    to_btcv = {1: 1, 2: 2, 3: 3, 4: 4, 15: 5, 5: 6, 6: 7, 52: 8, 63: 9, 64: 10, 7: 11, 8: 12, 9: 13}
    lut = np.zeros(256, np.uint8)
    for src, dst in to_btcv.items():
        lut[src] = dst
    seg = nib.load(sample / "example_seg.nii.gz")
    raw = tmp_path / "RawData" / "Training"
    (raw / "img").mkdir(parents=True)
    shutil.copy(sample / "example_ct_sm.nii.gz", raw / "img" / "img0001.nii.gz")
    btcv_label = lut[np.asarray(seg.dataobj)]
    save_kits_nifti(btcv_label, raw / "label" / "label0001.nii.gz", header=seg.header)
    out = converted("btcv", tmp_path)
    check_dataset(out, 1)
    assert "warning: no labelled case contains esophagus" in capsys.readouterr().out
    assert same_bytes(out / "imagesTr" / "btcv_0001_0000.nii.gz", sample / "example_ct_sm.nii.gz")
    written = np.asarray(nib.load(out / "labelsTr" / "btcv_0001.nii.gz").dataobj)
    assert set(np.unique(written)) == set(range(14)) - {5}  # the crop has no esophagus
    assert np.array_equal(written, btcv_label)

    # the TotalSegmentator map itself (ids up to 117) is refused, naming the values
    shutil.copy(sample / "example_seg.nii.gz", raw / "label" / "label0001.nii.gz")
    with pytest.raises(ConversionError, match=r"label values outside 0\.\.13: (\d+, ){7}\d+, \.\.\."):
        converted("btcv", tmp_path, overwrite=True)


# --------------------------------------------------------------------------------------------------------------------
# nnU-Net plans and trains what we write: 3d_fullres, regions (sigmoid heads), an nnunet_lite trainer
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # real nnUNetv2_plan_and_preprocess + nnUNetv2_train (2 epochs x 4 iterations) on CPU
def test_plan_and_train_converted_kits23_regions(nnunet_env, tmp_path):
    repo = make_kits23(
        tmp_path / "download", n=6, shape_zyx=(8, 16, 16), spacing_zyx=(4.0, 1.0, 1.0), missing_imaging=(5,)
    )
    run_cli("nnunet_lite", "convert", "kits23", str(repo), "-d", "931", "--skip-missing-imaging", "-np", "1")
    run_cli(
        "nnUNetv2_plan_and_preprocess",
        *("-d", "931", "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"),
    )
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / "Dataset931_KiTS23"
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    assert json.loads((preprocessed / "dataset.json").read_text())["labels"] == KITS_REGIONS

    trainer = "nnUNetTrainerLGMSNet_test3d"
    run_cli("nnUNetv2_train", "931", "3d_fullres", "0", "-tr", trainer, "-device", "cpu")
    fold = Path(os.environ["nnUNet_results"]) / "Dataset931_KiTS23" / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["network_weights"]["seg_layers.weight"].shape[0] == 3  # kidney, masses, tumor: sigmoid heads
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert {m["prediction_file"].rsplit("/", 1)[-1] for m in summary["metric_per_case"]} <= {
        f"case_{k:05d}.nii.gz" for k in range(5)
    }
    assert set(summary["mean"]) == {"(1, 2, 3)", "(2, 3)", "2"}  # evaluated per region
    # predictions are written back in the stored KiTS orientation (the reader reorients on the way out too)
    prediction = next((fold / "validation").glob("case_*.nii.gz"))
    reference = nib.load(Path(os.environ["nnUNet_raw"]) / "Dataset931_KiTS23" / "labelsTr" / prediction.name)
    written = nib.load(prediction)
    assert written.shape == reference.shape and np.allclose(written.affine, reference.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3}
