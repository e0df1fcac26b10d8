"""2D dataset converters: synthetic copies of every distributed layout, the real samples in ../shared/datasets when
present, nnU-Net's own verification on every output, and the bad-input paths (clear error, nothing left behind)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nnunet_lite.cli import main
from nnunet_lite.dataset_conversion import DATASETS, DEFAULT_IDS, dataset_folder, get_converter
from nnunet_lite.dataset_conversion._engine import SPLITS_DIR, ConversionError, Report, load_split_file, validate_splits
from nnunet_lite.dataset_conversion.busi import busi_case_id

from .convert_fixtures import (
    SHARED_DATASETS,
    kvasir_reference_mask,
    make_busb,
    make_busi,
    make_busi_cmunext,
    make_cvc,
    make_isic,
    make_kvasir,
    make_ph2,
    make_tnscui,
    read_png,
    save,
    verify_with_nnunet,
    write_text,
)


@pytest.fixture
def raw_env(tmp_path, monkeypatch):
    paths = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        paths[var] = tmp_path / var
        paths[var].mkdir()
        monkeypatch.setenv(var, str(paths[var]))
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    return paths


def check_dataset(folder: Path, n_train: int, n_test: int = 0) -> dict:
    """nnU-Net's verification plus what it does not check: counts, 3-channel images, labels exactly in {0, 1}."""
    verify_with_nnunet(folder)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == n_train and meta["numTest"] == n_test
    assert meta["file_ending"] == ".png"
    assert meta["channel_names"] == {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}
    assert set(meta["labels"].values()) == {0, 1}
    assert meta["reference"] and meta["licence"] and meta["converted_by"].startswith("nnunet_lite")
    for subset, n in (("Tr", n_train), ("Ts", n_test)):
        images = sorted((folder / f"images{subset}").glob("*_0000.png")) if n else []
        labels = sorted((folder / f"labels{subset}").glob("*.png")) if n else []
        assert len(images) == len(labels) == n
        for image, label in zip(images, labels, strict=True):
            img, lab = read_png(image), read_png(label)
            assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
            assert lab.ndim == 2 and lab.shape == img.shape[:2]
            assert set(np.unique(lab)) <= {0, 1}
            assert " " not in image.name and "(" not in image.name
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    return meta


def converted(name: str, source: Path, **kwargs) -> Path:
    kwargs.setdefault("num_workers", 1)
    return get_converter(name)(source, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# every converter on its synthetic layout
# --------------------------------------------------------------------------------------------------------------------

SYNTHETIC = {
    # name: (maker, imagesTr, imagesTs)
    "isic2018": (lambda root: make_isic(root, 2018), 3, 2),
    "isic2017": (lambda root: make_isic(root, 2017), 3, 2),
    "busi": (make_busi, 5, 0),
    "kvasir": (make_kvasir, 3, 0),
    "ph2": (make_ph2, 3, 0),
    "cvc-clinicdb": (make_cvc, 5, 0),
    "tn-scui": (make_tnscui, 4, 0),
    "bus-b": (make_busb, 3, 0),
}


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_synthetic_layout_converts_and_verifies(name, tmp_path, raw_env, capsys):
    maker, n_train, n_test = SYNTHETIC[name]
    source = maker(tmp_path / "download")
    out = converted(name, source)
    assert out == raw_env["nnUNet_raw"] / dataset_folder(name)
    check_dataset(out, n_train, n_test)
    summary = capsys.readouterr().out
    assert f"wrote {out}" in summary and "labels: background 0" in summary
    assert not (out / "splits_final.json").exists()


def test_isic_sets_official_split_and_ignored_files(tmp_path, raw_env, capsys):
    source = make_isic(tmp_path / "isic17", 2017)
    out = converted("isic2017", source)
    text = capsys.readouterr().out
    assert "ignored: 3 *_superpixels.png files" in text and "ignored: 1 metadata CSV files" in text
    assert "LICENSE" not in text
    assert json.loads((out / "test_sets.json").read_text()) == {
        "test": ["ISIC_0000004"],
        "validation": ["ISIC_0000003"],
    }
    assert (out / "labelsTr" / "ISIC_0000001.png").is_file()  # from ISIC_0000001_Segmentation.png

    source = make_isic(tmp_path / "isic18", 2018, test_gt=False)
    out = converted("isic2018", source, split="official")
    check_dataset(out, 4, 0)
    assert "skipped: test set (1 images): no ground truth" in capsys.readouterr().out
    splits = json.loads((out / "splits_final.json").read_text())
    assert splits == [{"train": ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"], "val": ["ISIC_0000003"]}]

    source = make_isic(tmp_path / "isic18all", 2018)
    out = converted("isic2018", source, split="all", dataset_id=602)
    check_dataset(out, 5, 0)
    assert not (out / "test_sets.json").exists() and not (out / "splits_final.json").exists()


def test_busi_merges_masks_excludes_normal_reports_duplicates(tmp_path, raw_env, capsys):
    source = make_busi(tmp_path / "busi")
    out = converted("busi", source)
    text = capsys.readouterr().out
    assert "skipped: normal class (2 images)" in text
    assert "duplicates: 1 groups of identical images (benign_0002 = malignant_0002)" in text
    folder = source / "Dataset_BUSI_with_GT" / "benign"
    expected = np.zeros_like(read_png(folder / "benign (2)_mask.png"))
    for suffix in ("_mask", "_mask_1", "_mask_2"):
        expected |= read_png(folder / f"benign (2){suffix}.png")
    np.testing.assert_array_equal(read_png(out / "labelsTr" / "benign_0002.png"), expected // 255)
    assert sorted(p.name for p in (out / "imagesTr").iterdir())[:2] == ["benign_0001_0000.png", "benign_0002_0000.png"]
    colour = read_png(out / "imagesTr" / "benign_0003_0000.png")
    assert tuple(colour[3, 3]) == (255, 255, 0)  # colour annotations kept (3 channels, as the papers)

    out = converted("busi", source, include_normal=True, dataset_id=600)
    check_dataset(out, 7)
    assert "normal_0001 " not in capsys.readouterr().out
    assert read_png(out / "labelsTr" / "normal_0001.png").max() == 0


def test_busi_cmunext_split_uses_shipped_lists(tmp_path, raw_env):
    names = [f"benign ({i})" for i in range(1, 438)] + [f"malignant ({i})" for i in range(1, 211)]
    source = make_busi_cmunext(tmp_path / "cmunext", names)
    out = converted("busi", source, split="cmunext", verbose=False)
    splits = json.loads((out / "splits_final.json").read_text())
    assert [(len(f["train"]), len(f["val"])) for f in splits] == [(452, 195)] * 3
    val1 = sorted(
        busi_case_id(line) for line in (SPLITS_DIR / "busi_cmunext" / "busi_val1.txt").read_text().split("\n") if line
    )
    assert splits[0]["val"] == val1
    assert len({cid for f in splits for cid in f["train"] + f["val"]}) == 647


def test_kvasir_thresholds_jpeg_masks_and_reads_split_lists(tmp_path, raw_env):
    source = make_kvasir(tmp_path / "kvasir", n=4)
    images = sorted((source / "Kvasir-SEG" / "images").glob("*.jpg"))
    ids = [p.stem for p in images]
    lists = tmp_path / "kvasir-seg-train-val"
    write_text(lists / "train.txt", "".join(f"images/{i}.jpg masks/{i}.jpg\n" for i in ids[:3]))
    write_text(lists / "val.txt", f"{ids[3]}\n")
    out = converted("kvasir", source, split_file=lists)
    check_dataset(out, 4)
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": sorted(ids[:3]), "val": [ids[3]]}]
    for image in images:
        h, w = Image.open(image).size[::-1]
        np.testing.assert_array_equal(read_png(out / "labelsTr" / f"{image.stem}.png"), kvasir_reference_mask(h, w))


def test_tnscui_reads_lgmsnet_style_lists(tmp_path, raw_env):
    source = make_tnscui(tmp_path / "tnscui")
    lists = tmp_path / "tuscui"
    write_text(lists / "tuscui_train1.txt", "1\r\n17\r\n230\r\n")
    write_text(lists / "tuscui_val1.txt", "9759\r\n")
    write_text(lists / "tuscui_train2.txt", "9759\r\n17\r\n230\r\n")
    write_text(lists / "tuscui_val2.txt", "1\r\n")
    out = converted("tn-scui", source, split_file=lists)  # a folder: one fold per train/val pair
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 2 and splits[0]["val"] == ["tnscui_9759"]
    assert splits[1] == {"train": ["tnscui_0017", "tnscui_0230", "tnscui_9759"], "val": ["tnscui_0001"]}
    out = converted("tn-scui", source, split_file=lists / "tuscui_val2.txt", overwrite=True)  # one file: one fold
    assert json.loads((out / "splits_final.json").read_text()) == splits[1:]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "nodule": 1}
    assert read_png(out / "imagesTr" / "tnscui_0017_0000.png").shape[2] == 3  # grey replicated


def test_cvc_reads_malformed_tiffs_and_writes_sequence_folds(tmp_path, raw_env):
    source = make_cvc(tmp_path / "cvc")
    with pytest.raises(OSError):  # the point of the fixture: Pillow cannot open these
        Image.open(next((source / "CVC-ClinicDB" / "Original").glob("*.tif"))).load()
    out = converted("cvc-clinicdb", source, split="sequence")
    check_dataset(out, 5)
    splits = json.loads((out / "splits_final.json").read_text())
    assert [f["val"] for f in splits] == [["cvc_0001"], ["cvc_0026"], ["cvc_0051"], ["cvc_0068"], ["cvc_0079"]]


def test_source_discovery_nested_folders_and_mirror_copies(tmp_path, raw_env, capsys):
    source = make_isic(tmp_path / "isic", 2018, counts=(2, 0, 0))
    nested = source / "unzipped" / "ISIC2018_Task1-2_Training_Input"
    nested.mkdir(parents=True)
    (source / "ISIC2018_Task1-2_Training_Input").rename(nested / "ISIC2018_Task1-2_Training_Input")
    (source / "__MACOSX" / "ISIC2018_Task1_Training_GroundTruth").mkdir(parents=True)  # zip debris, ignored
    out = converted("isic2018", tmp_path)  # two levels above the folders, one of them nested X/X
    check_dataset(out, 2)

    source = make_cvc(tmp_path / "kaggle" / "TIF", frames=(1, 2))
    png = tmp_path / "kaggle" / "PNG" / "CVC-ClinicDB"
    for sub in ("Original", "Ground Truth"):
        for tif in (source / "CVC-ClinicDB" / sub).glob("*.tif"):
            save(tifffile.imread(tif), png / sub / f"{tif.stem}.png")
    out = converted("cvc-clinicdb", tmp_path / "kaggle")
    check_dataset(out, 2)
    assert "using the TIFF copy" in capsys.readouterr().out


def test_resize_and_ph2_bmp_masks(tmp_path, raw_env):
    source = make_ph2(tmp_path / "ph2")
    out = converted("ph2", source, resize=32)
    check_dataset(out, 3)
    for label in (out / "labelsTr").iterdir():
        lab = read_png(label)
        assert lab.shape == (32, 32) and set(np.unique(lab)) == {0, 1}
    assert json.loads((out / "dataset.json").read_text())["nnunet_lite"]["resize"] == 32


def test_rerun_is_identical_and_workers_do_not_change_output(tmp_path, raw_env):
    source = make_busi(tmp_path / "busi", n_benign=2, n_malignant=1, n_normal=0)
    first = converted("busi", source, output_root=tmp_path / "a", verbose=False)
    second = converted("busi", source, output_root=tmp_path / "b", num_workers=2, verbose=False)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


# --------------------------------------------------------------------------------------------------------------------
# bad input: clear error naming the file, non-zero exit, nothing left behind
# --------------------------------------------------------------------------------------------------------------------


def _missing_mask(root):
    source = make_kvasir(root)
    victim = sorted((source / "Kvasir-SEG" / "masks").glob("*.jpg"))[1]
    victim.unlink()
    return "kvasir", source, f"image(s) without mask, e.g. {victim.name}"


def _extra_mask(root):
    source = make_isic(root, 2018)
    gt = source / "ISIC2018_Task1_Training_GroundTruth"
    save(np.zeros((8, 8), np.uint8), gt / "ISIC_0099999_segmentation.png")
    return "isic2018", source, "ISIC_0099999_segmentation.png: 1 mask(s) without image"


def _size_mismatch(root):
    source = make_busi(root)
    victim = source / "Dataset_BUSI_with_GT" / "malignant" / "malignant (1)_mask.png"
    save(np.zeros((10, 12), np.uint8), victim)
    return "busi", source, f"{victim.name}: mask is 12x10 (WxH) but the image is"


def _unreadable_image(root):
    source = make_ph2(root)
    victim = source / "PH2Dataset" / "PH2 Dataset images" / "IMD004" / "IMD004_Dermoscopic_Image" / "IMD004.bmp"
    victim.write_bytes(victim.read_bytes()[:100])  # the last case: earlier cases were already written
    return "ph2", source, "IMD004.bmp: cannot read image"


def _unreadable_tiff(root):
    source = make_cvc(root)
    victim = source / "CVC-ClinicDB" / "Original" / "79.tif"
    victim.write_bytes(b"II*\x00garbage")
    return "cvc-clinicdb", source, "79.tif: cannot read TIFF"


def _empty_source(root):
    root.mkdir(parents=True)
    return "busi", root, "SOURCE is an empty folder"


def _wrong_source(root):
    return "isic2018", make_kvasir(root), "ISIC2018_Task1-2_Training_Input (missing)"


def _non_binary_mask(root):
    source = make_tnscui(root)
    victim = source / "tnscui2020_train" / "mask" / "230.PNG"
    mask = read_png(victim).copy()
    mask[0, :3] = (1, 2, 3)
    save(mask, victim, format="PNG")
    return "tn-scui", source, "230.PNG: mask is not binary"


def _duplicate_ids(root):
    source = make_busi(root)
    folder = source / "Dataset_BUSI_with_GT"
    shutil.copy(folder / "benign" / "benign (1).png", folder / "malignant" / "benign (1).png")
    return "busi", source, "duplicate case ID benign_0001"


def _duplicate_extension(root):
    source = make_isic(root, 2018)
    folder = source / "ISIC2018_Task1-2_Training_Input"
    shutil.copy(folder / "ISIC_0000001.jpg", folder / "ISIC_0000001.JPG")
    return "isic2018", source, "duplicate case ID ISIC_0000001"


def _bad_split_file(root):
    source = make_busb(root)
    write_text(root / "lists" / "train.txt", "000001\n000002\n")
    write_text(root / "lists" / "val.txt", "000003\n000777\n")
    return (
        "bus-b",
        source,
        "val.txt: 1 of 2 IDs in the val list are not among the 3 cases found in SOURCE, e.g. '000777'",
    )


BAD_INPUTS = {
    "missing mask": _missing_mask,
    "extra mask": _extra_mask,
    "size mismatch": _size_mismatch,
    "unreadable image": _unreadable_image,
    "unreadable tiff": _unreadable_tiff,
    "empty source": _empty_source,
    "wrong source": _wrong_source,
    "non-binary mask": _non_binary_mask,
    "duplicate case ids": _duplicate_ids,
    "duplicate by extension": _duplicate_extension,
    "split file with unknown ids": _bad_split_file,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(case, tmp_path, raw_env, capsys):
    name, source, needle = BAD_INPUTS[case](tmp_path / "download")
    argv = ["convert", name, str(source), "-np", "1"]
    if case == "split file with unknown ids":
        argv += ["--split-file", str(tmp_path / "download" / "lists")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "->" in err, err
    assert list(raw_env["nnUNet_raw"].iterdir()) == [], "partial output left behind"


def test_mask_threshold_option_accepts_soft_masks(tmp_path, raw_env):
    name, source, _ = _non_binary_mask(tmp_path / "download")
    assert main(["convert", name, str(source), "--mask-threshold", "127", "-np", "1"]) == 0
    meta = check_dataset(raw_env["nnUNet_raw"] / dataset_folder(name), 4)
    assert meta["nnunet_lite"]["mask_rule"] == "value > 127"


def test_existing_target_needs_overwrite_and_id_clash(tmp_path, raw_env, capsys):
    source = make_busb(tmp_path / "busb")
    raw = raw_env["nnUNet_raw"]
    assert main(["convert", "bus-b", str(source)]) == 0
    marker = raw / dataset_folder("bus-b") / "marker.txt"
    marker.write_text("keep")
    assert main(["convert", "bus-b", str(source)]) == 1
    assert "already exists" in capsys.readouterr().err and marker.exists()
    assert main(["convert", "bus-b", str(source), "--overwrite"]) == 0
    assert not marker.exists() and (raw / dataset_folder("bus-b") / "dataset.json").exists()
    (raw_env["nnUNet_preprocessed"] / "Dataset777_Other").mkdir()
    assert main(["convert", "bus-b", str(source), "-d", "777"]) == 1
    assert "already used by Dataset777_Other" in capsys.readouterr().err
    assert sorted(p.name for p in raw.iterdir()) == [dataset_folder("bus-b")]


def test_missing_nnunet_raw_is_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    source = make_busb(tmp_path / "busb", n=1)
    assert main(["convert", "bus-b", str(source)]) == 1
    assert "nnUNet_raw is not set" in capsys.readouterr().err
    assert main(["convert", "bus-b", str(source), "-o", str(tmp_path / "out"), "-d", "42"]) == 0
    assert (tmp_path / "out" / "Dataset042_BUSB" / "dataset.json").is_file()


def test_cli_list_and_registry(capsys):
    assert main(["convert", "--list"]) == 0
    text = capsys.readouterr().out
    for name, spec in DATASETS.items():
        assert f"{name} " in text and f"Dataset{spec.default_id:03d}_{spec.folder_name}" in text
    assert len(set(DEFAULT_IDS.values())) == len(DEFAULT_IDS) == len(DATASETS)
    assert main(["convert"]) == 2


def test_split_lists_map_publisher_ids_and_are_validated(tmp_path):
    write_text(tmp_path / "a_train1.txt", "\ufeffbenign (1)\r\n\r\n")
    write_text(tmp_path / "a_val1.txt", "benign (2).png\n")
    folds = load_split_file(tmp_path, busi_case_id, ["benign_0001", "benign_0002"])
    assert folds == [{"train": ["benign_0001"], "val": ["benign_0002"]}]
    with pytest.raises(ConversionError, match="not among the 1 cases found in SOURCE"):
        load_split_file(tmp_path, busi_case_id, ["benign_0001"])
    report = Report()
    with pytest.raises(ConversionError, match="in both train and val"):
        validate_splits([{"train": ["a", "b"], "val": ["b"]}], ["a", "b"], report)
    with pytest.raises(ConversionError, match="has no val cases"):
        validate_splits([{"train": ["a"], "val": []}], ["a"], report)
    validate_splits([{"train": ["a"], "val": ["b"]}], ["a", "b", "c"], report)
    assert "1 training cases are in neither train nor val" in report.warnings[0]


# --------------------------------------------------------------------------------------------------------------------
# nnU-Net plans what we write (the real fingerprint/plan/preprocess, incl. its own spawn-pool verification)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~30 s: three spawn pools (verification, fingerprint, preprocessing) that import torch
def test_nnunet_plans_and_preprocesses_converted_dataset(tmp_path, raw_env):
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    source = make_cvc(tmp_path / "cvc")
    converted("cvc-clinicdb", source, split="sequence", dataset_id=512, verbose=False)
    extract_fingerprint_dataset(512, num_processes=1, check_dataset_integrity=True, verbose=False)
    plans, identifier = plan_experiment_dataset(512)
    assert "2d" in plans["configurations"]
    preprocess_dataset(512, identifier, configurations=("2d",), num_processes=(1,), show_progress_bar=False)
    prep = raw_env["nnUNet_preprocessed"] / "Dataset512_CVCClinicDB"
    assert json.loads((prep / "splits_final.json").read_text())[0]["val"] == ["cvc_0001"]
    assert plans["foreground_intensity_properties_per_channel"]["0"]["max"] <= 255
    assert len(list((prep / "nnUNetPlans_2d").glob("*.b2nd"))) + len(list((prep / "nnUNetPlans_2d").glob("*.npz"))) >= 5


# --------------------------------------------------------------------------------------------------------------------
# real samples (../shared/datasets), skipped when absent
# --------------------------------------------------------------------------------------------------------------------


def shared(sub: str) -> Path:
    path = SHARED_DATASETS / sub
    if not path.is_dir():
        pytest.skip(f"real samples not available ({path})")
    return path


def test_real_kvasir_sample(tmp_path, raw_env):
    sample = shared("kvasir-seg/Kvasir-SEG")
    source = tmp_path / "Kvasir-SEG"
    ids = sorted(p.stem for p in (sample / "images").glob("*.jpg"))[:4]
    for sub in ("images", "masks"):
        (source / sub).mkdir(parents=True)
        for cid in ids:
            shutil.copy(sample / sub / f"{cid}.jpg", source / sub / f"{cid}.jpg")
    shutil.copy(sample / "kavsir_bboxes.json", source)
    out = converted("kvasir", tmp_path)
    check_dataset(out, 4)
    for cid in ids:
        mask = np.asarray(Image.open(sample / "masks" / f"{cid}.jpg").convert("L")) > 127
        np.testing.assert_array_equal(read_png(out / "labelsTr" / f"{cid}.png"), mask)
        np.testing.assert_array_equal(
            read_png(out / "imagesTr" / f"{cid}_0000.png"), np.asarray(Image.open(sample / "images" / f"{cid}.jpg"))
        )


def test_real_cvc_sample(tmp_path, raw_env):
    out = converted("cvc-clinicdb", shared("cvc-clinicdb"), split="sequence")
    check_dataset(out, 29)
    splits = json.loads((out / "splits_final.json").read_text())
    assert sorted(len(f["val"]) for f in splits) == [5, 6, 6, 6, 6]


def test_real_ph2_sample(raw_env):
    out = converted("ph2", shared("ph2"))
    check_dataset(out, 8)
    lesion = Image.open(SHARED_DATASETS / "ph2/PH2Dataset/PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp")
    assert lesion.mode == "RGB"  # the 24-bit one
    np.testing.assert_array_equal(read_png(out / "labelsTr" / "IMD002.png"), np.asarray(lesion.convert("L")) > 0)


def test_real_busi_sample_in_original_layout(tmp_path, raw_env):
    """Rebuild the distributed layout from the CMUNeXt-layout sample; split multi-lesion masks into components."""
    from scipy.ndimage import label as connected_components

    sample = shared("busi-cmunext-layout/data/busi")
    names = ["benign (195)", "benign (4)", "benign (6)", "malignant (53)", "malignant (196)"]
    base = tmp_path / "Dataset_BUSI_with_GT"
    for name in names:
        cls = name.split()[0]
        (base / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(sample / "images" / f"{name}.png", base / cls / f"{name}.png")
        merged = read_png(sample / "masks" / "0" / f"{name}.png")
        components, n = connected_components(merged > 0)
        for k in range(1, n + 1):
            suffix = "_mask" if k == 1 else f"_mask_{k - 1}"
            save(((components == k) * 255).astype(np.uint8), base / cls / f"{name}{suffix}.png")
    assert len(list(base.glob("*/*_mask_1.png"))) >= 2  # multi-lesion cases, as in the original
    out = converted("busi", tmp_path)
    check_dataset(out, 5)
    for name in names:
        cid = busi_case_id(name)
        np.testing.assert_array_equal(
            read_png(out / "labelsTr" / f"{cid}.png"), read_png(sample / "masks" / "0" / f"{name}.png") // 255
        )
    # and the CMUNeXt layout itself, as shipped in the sample
    out = converted("busi", shared("busi-cmunext-layout"), dataset_id=603, verbose=False)
    check_dataset(out, 30)


def test_real_isic_masks(tmp_path, raw_env):
    """Official ISIC masks (up to 6642x4420) with synthetic JPEG images of the same size."""
    masks = sorted(shared("isic-gt-masks/tests/data/segmentation/groundtruth").glob("*.png"))
    chosen = [m for m in masks if m.name.startswith(("ISIC_0000193", "ISIC_0000494", "ISIC_0014746"))]
    source = tmp_path / "isic"
    gt = source / "ISIC2018_Task1_Training_GroundTruth"
    gt.mkdir(parents=True)
    for mask in chosen:
        w, h = Image.open(mask).size
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
        save(img, source / "ISIC2018_Task1-2_Training_Input" / mask.name.replace("_segmentation.png", ".jpg"))
        shutil.copy(mask, gt / mask.name)
    out = converted("isic2018", source, resize=256)
    check_dataset(out, 3)
    big = read_png(out / "labelsTr" / "ISIC_0014746.png")
    ref = np.asarray(Image.open(chosen[-1]).resize((256, 256), Image.Resampling.NEAREST)) // 255
    np.testing.assert_array_equal(big, ref)


def test_a_new_2d_dataset_is_one_short_module(tmp_path, raw_env, capsys):
    """README's "Adding a dataset": a spec plus a function that finds the cases; the engine does the rest."""
    from .convert_example_module import SPEC

    assert len((Path(__file__).parent / "convert_example_module.py").read_text().splitlines()) < 80
    source = make_kvasir(tmp_path / "download")  # Kvasir-SEG/{images,masks}/<id>.jpg, JPEG masks
    write_text(source / "Kvasir-SEG" / "images" / "notes.txt", "not a case\n")
    out = SPEC(source, num_workers=1)
    assert out == raw_env["nnUNet_raw"] / "Dataset530_MyData"
    meta = check_dataset(out, 3)
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["nnunet_lite"]["mask_rule"] == "value > 127" and meta["nnunet_lite"]["converter"] == "mydata"
    assert "ignored: 1 files that are not PNG or JPEG (e.g. notes.txt)" in capsys.readouterr().out
    with pytest.raises(TypeError, match="include_normal"):
        SPEC(source, include_normal=True)
