"""Dermoscopy artefacts (hair, ruler, ink_marker) and the artefact false-positive rate; fast, no training.

The artefacts are drawn objects: more of them at higher severity (a superset of the pixels), the same pixels for the
same seed, labels never touched, and a recorded mask per case. The false-positive rate is checked on hand-built
arrays and results trees whose counts are known.
"""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnunet_lite.cli import main
from nnunet_lite.robustness.corruptions import SUITES, case_rng, get_suite
from nnunet_lite.synthetic import _lesion_case

from .conftest import SHARED_DATASETS

ARTEFACTS = ("hair", "ruler", "ink_marker")
PH2_IMAGE = SHARED_DATASETS / "ph2" / "PH2Dataset" / "PH2 Dataset images" / "IMD016" / "IMD016_Dermoscopic_Image"


def cli(*args) -> int:
    return main([str(a) for a in args])


def images() -> list[np.ndarray]:
    """Synthetic lesions at several sizes (square and not) and, when the shared sample is there, a real PH2 image."""
    out = [_lesion_case(np.random.default_rng(seed), size)[0] for seed, size in ((1, 64), (2, 160), (3, 300))]
    out.append(np.concatenate([out[1], out[1][:, :80]], axis=1))  # 160 x 240
    if (PH2_IMAGE / "IMD016.bmp").is_file():
        out.append(np.asarray(Image.open(PH2_IMAGE / "IMD016.bmp").convert("RGB")))
    return out


def to_8bit(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255).astype(np.uint8)


@pytest.mark.parametrize("name", ARTEFACTS)
def test_changed_pixels_grow_strictly_with_severity_and_masks_nest(name):
    (corruption,) = get_suite("dermoscopy", [name])
    for image in images():
        x = image / 255.0
        shares, masks = [], []
        for severity in range(1, 6):
            out, mask = corruption.apply_with_mask(x, severity, case_rng(0, name, "case"))
            changed = np.any(to_8bit(out) != image, axis=-1)  # what make writes: 8-bit pixels
            shares.append(changed.mean())
            masks.append(mask)
            assert mask.shape == image.shape[:2] and mask.dtype == bool
            assert changed[mask].mean() > 0.95  # the recorded mask is where the image changed
            np.testing.assert_array_equal(out, corruption.apply(x, severity, case_rng(0, name, "case")))
        assert shares[0] > 0 and all(np.diff(shares) > 0), (image.shape, shares)
        for low, high in zip(masks, masks[1:], strict=False):  # a higher severity adds to the same artefact
            assert not (low & ~high).any() and high.sum() > low.sum()
        # greyscale images get the artefact's luminance, at the same pixels
        grey, grey_mask = corruption.apply_with_mask(x[..., 0], 5, case_rng(0, name, "case"))
        assert grey.shape == x.shape[:2]
        np.testing.assert_array_equal(grey_mask, masks[-1])


def test_artefacts_are_in_the_dermoscopy_suite_only_for_8bit_images():
    names = [c.name for c in SUITES["dermoscopy"]]
    assert names[-3:] == list(ARTEFACTS)
    for corruption in SUITES["dermoscopy"][-3:]:
        assert corruption.is_artefact and len(corruption.parameters) == 5
        assert corruption.float_function() is None and "RGB (8-bit) dermoscopy" in corruption.float_refusal()
        assert "Winkler" in corruption.source or "DullRazor" in corruption.source
    with pytest.raises(ValueError, match="not an artefact"):
        SUITES["dermoscopy"][0].apply_with_mask(np.zeros((8, 8, 3)), 1, case_rng(0, "x", "y"))


# -------------------------------------------------------------------------------------------- robustness make
@pytest.fixture
def lesions(nnunet_env) -> Path:
    from nnunet_lite.synthetic import make_lesion_dataset_2d

    raw = Path(os.environ["nnUNet_raw"])
    folder = next(raw.glob("Dataset953_*"), None)
    return folder or make_lesion_dataset_2d(raw, 953, num_train=2, num_test=3, size=64, seed=4)


def test_make_writes_artefacts_and_masks_deterministically_labels_untouched(lesions, capsys):
    args = ["robustness", "make", "-d", 953, "--suite", "dermoscopy", "--corruptions", *ARTEFACTS, "--seed", 3]
    assert cli(*args, "--overwrite") == 0
    folder = lesions / "robustness" / "dermoscopy"
    manifest = json.loads((folder / "manifest.json").read_text())
    sets = [f"{a}_s{s}" for a in ARTEFACTS for s in range(1, 6)]
    assert manifest["sets"] == ["clean", *sets]
    assert manifest["artefact_masks"] == {s: f"{s}/artefactsTs" for s in sets}
    for case in manifest["cases"]:
        label = (lesions / "labelsTs" / f"{case}.png").read_bytes()
        assert (folder / "labelsTs" / f"{case}.png").read_bytes() == label
        clean = np.asarray(Image.open(lesions / "imagesTs" / f"{case}_0000.png"))
        for artefact in ARTEFACTS:
            shares = []
            for s in range(1, 6):
                image = np.asarray(Image.open(folder / f"{artefact}_s{s}" / "imagesTs" / f"{case}_0000.png"))
                mask = np.asarray(Image.open(folder / f"{artefact}_s{s}" / "artefactsTs" / f"{case}.png"))
                assert mask.shape == clean.shape[:2] and set(np.unique(mask)) <= {0, 255} and mask.any()
                shares.append(np.any(image != clean, axis=-1).mean())
            assert all(np.diff(shares) > 0), (case, artefact, shares)
    # same seed: the same bytes (images and masks) and a new manifest id; another seed: other pixels
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.png")}
    assert cli(*args, "--overwrite") == 0
    assert before == {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.png")}
    assert json.loads((folder / "manifest.json").read_text())["id"] != manifest["id"]
    assert cli(*args[:-1], 4, "--overwrite") == 0
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.png")}
    assert (
        after[Path("hair_s3/imagesTs") / f"{manifest['cases'][0]}_0000.png"]
        != before[Path("hair_s3/imagesTs") / f"{manifest['cases'][0]}_0000.png"]
    )


def test_artefacts_refused_on_ct_volumes_in_one_line(nnunet_env, capsys):
    from .test_robustness_volumes import synthetic_ct, write_volume

    raw = Path(os.environ["nnUNet_raw"]) / "Dataset954_ArtefactCT"
    for sub in ("imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    ct = synthetic_ct((3, 48, 48))
    write_volume(ct, raw / "imagesTs" / "ct_0000.nii.gz")
    write_volume((ct > 0).astype(np.uint8), raw / "labelsTs" / "ct.nii.gz")
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "body": 1}, "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps({**dataset_json, "numTraining": 0}))
    assert cli("robustness", "make", "-d", 954, "--suite", "dermoscopy", "--corruptions", "hair", "gaussian_noise") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--corruptions hair" in err and "RGB (8-bit) dermoscopy" in err
    assert not (raw / "robustness").exists()
    # the whole suite: the artefacts (and JPEG) are left out with a note, the rest is written
    assert cli("robustness", "make", "-d", 954, "--suite", "dermoscopy", "--severities", 1) == 0
    out = capsys.readouterr().out
    assert "left out hair: the images are not 8-bit and hair, rulers and ink" in out
    manifest = json.loads((raw / "robustness" / "dermoscopy" / "manifest.json").read_text())
    assert {"hair", "ruler", "ink_marker", "jpeg_compression"} == set(manifest["skipped_corruptions"])
    assert manifest["artefact_masks"] == {}


# ----------------------------------------------------------------------------------- artefact false-positive rate
DATASET, BASE, LITE = "Dataset955_ArtefactFP", "nnUNetTrainer", "LiteTrainer"


def png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def grid(*cells: tuple[int, slice]) -> np.ndarray:
    """A 10 x 10 boolean array, True on the given (row, columns) cells."""
    out = np.zeros((10, 10), bool)
    for row, columns in cells:
        out[row, columns] = True
    return out


LESION = np.zeros((10, 10), bool)
LESION[:5] = True  # rows 0-4: 50 lesion pixels
MASKS = {  # artefact per set and case; c1's lies inside the lesion only, so c1 does not count
    "hair_s1": {
        "c0": grid((7, slice(None)), (2, slice(0, 5))),  # 10 pixels outside the lesion, 5 inside
        "c1": grid((1, slice(None))),
        "c2": grid((8, slice(0, 5))),  # 5 outside
    },
    "ruler_s1": {"c0": grid((9, slice(None))), "c1": grid(), "c2": grid()},
}
# predictions as lesion besides the lesion itself: per (fold, set, case)
EXTRA = {
    ("0", "clean", "c0"): grid((7, slice(9, 10))),  # 1 of c0's 10 hair pixels on the clean image
    ("1", "clean", "c0"): grid((7, slice(9, 10))),
    ("0", "hair_s1", "c0"): grid((7, slice(0, 3))),  # 3 of 10: 0.3
    ("1", "hair_s1", "c0"): grid((7, slice(0, 5))),  # 5 of 10: 0.5
    ("0", "hair_s1", "c2"): grid((8, slice(0, 5))),  # 5 of 5
    ("1", "hair_s1", "c2"): grid((8, slice(0, 3))),  # 3 of 5
}


def artefact_tree(tmp_path: Path, monkeypatch) -> dict:
    """A hand-built corrupted set with artefact masks and the results of two trainers on folds 0 and 1."""
    from tests.test_paired_cases import model_folder, write_summary

    raw, results = tmp_path / "raw", tmp_path / "results"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_results", str(results))
    set_dir = raw / DATASET / "robustness" / "dermoscopy"
    sets, cases = ["clean", *MASKS], ["c0", "c1", "c2"]
    manifest = {
        "id": "m1",
        "set": "dermoscopy",
        "suite": "dermoscopy",
        "seed": 0,
        "severities": [1],
        "source": "imagesTs",
        "file_ending": ".png",
        "cases": cases,
        "corruptions": [{"name": "hair"}, {"name": "ruler"}],
        "sets": sets,
        "artefact_masks": {s: f"{s}/artefactsTs" for s in MASKS},
    }
    set_dir.mkdir(parents=True)
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    for case in cases:
        png(LESION, set_dir / "labelsTs" / f"{case}.png")
        for sub, masks in MASKS.items():
            png(masks[case] * 255, set_dir / sub / "artefactsTs" / f"{case}.png")
    for trainer in (BASE, LITE):
        folder = model_folder(results, trainer, DATASET)
        for fold in ("0", "1"):
            for sub in sets:
                out = folder / "robustness" / "dermoscopy" / f"fold_{fold}" / sub
                write_summary(out / "summary.json", {c: 0.8 for c in cases})
                info = {"manifest": "m1", "seconds_predict": 1.0, "foreground_mean_dice": 0.8}
                (out / "robustness.json").write_text(json.dumps(info))
                for case in cases:
                    extra = EXTRA.get((fold, sub, case), grid()) if trainer == LITE else grid()
                    png(LESION | extra, out / f"{case}.png")
            write_summary(folder / f"fold_{fold}" / "validation" / "summary.json", {f"v{fold}": 0.7, f"w{fold}": 0.8})
    return manifest


def test_artefact_fp_rate_on_a_hand_made_case(tmp_path, monkeypatch):
    from nnunet_lite.robustness.make import load_manifest
    from nnunet_lite.robustness.report import artefact_fp_rows, artefact_summary

    artefact_tree(tmp_path, monkeypatch)
    manifest = load_manifest(DATASET, "dermoscopy")
    model = tmp_path / "results" / DATASET / f"{LITE}__nnUNetPlans__2d"
    rows = pd.DataFrame(artefact_fp_rows(model, manifest, ["0"], LITE)).set_index(["corruption", "case"])
    # fold 0, c0: 10 hair pixels outside the lesion, 3 predicted as lesion -> 0.3; the clean image: 1 of 10
    assert rows.loc[("hair", "c0"), "artefact_pixels"] == 10
    assert rows.loc[("hair", "c0"), "fp_rate"] == pytest.approx(0.3)
    assert rows.loc[("hair", "c0"), "fp_rate_clean"] == pytest.approx(0.1)
    assert rows.loc[("hair", "c2"), "fp_rate"] == pytest.approx(1.0)
    assert ("hair", "c1") not in rows.index  # its artefact lies inside the lesion only
    # two folds: each case averaged over the folds first, then the mean over cases (n = cases, not fold-cases)
    per_set, per_model = artefact_summary(pd.DataFrame(artefact_fp_rows(model, manifest, ["0", "1"], LITE)))
    hair = per_set.set_index("corruption").loc["hair"]
    assert hair["artefact_fp_rate"] == pytest.approx(((0.3 + 0.5) / 2 + (1.0 + 0.6) / 2) / 2)  # 0.6
    assert hair["artefact_fp_rate_clean"] == pytest.approx((0.1 + 0.0) / 2)
    assert hair["n_cases"] == 2 and per_set.set_index("corruption").loc["ruler", "n_cases"] == 1
    assert per_model.iloc[0]["artefact_fp_rate"] == pytest.approx((0.6 + 0.0) / 2)
    assert per_model.iloc[0]["artefact_fp_n_cases"] == 2


def test_robustness_report_and_compare_columns_show_the_artefact_fp_rate(tmp_path, monkeypatch, capsys):
    from nnunet_lite.robustness.report import compare_columns

    artefact_tree(tmp_path, monkeypatch)
    out = tmp_path / "report"
    args = ["robustness", "report", "-d", DATASET, "-tr", BASE, LITE, "-f", 0, 1, "-o", out, "--bootstrap", 200]
    assert cli(*args) == 0
    table = pd.read_csv(out / "robustness.csv").set_index("model")
    assert table.loc[LITE, "artefact_fp_rate"] == pytest.approx(0.3)
    assert table.loc[LITE, "artefact_fp_rate_clean"] == pytest.approx(0.025)
    assert table.loc[BASE, "artefact_fp_rate"] == 0 and table.loc[LITE, "artefact_fp_n_cases"] == 2
    per_set = pd.read_csv(out / "robustness_artefacts.csv").set_index(["model", "corruption"])
    assert per_set.loc[(LITE, "hair"), "artefact_fp_rate"] == pytest.approx(0.6)
    assert per_set.loc[(LITE, "ruler"), "n_cases"] == 1
    text = (out / "robustness.md").read_text()
    assert "## Artefact false-positive rate" in text and "0.050 → 0.600 (n=2)" in text
    assert "0.025 → 0.300 (n=2)" in capsys.readouterr().out  # the main table's column

    models = [
        SimpleNamespace(label=t, path=tmp_path / "results" / DATASET / f"{t}__nnUNetPlans__2d") for t in (BASE, LITE)
    ]
    columns = compare_columns(models, ["0", "1"])
    assert columns[LITE]["robustness dermoscopy: artefact FP rate"] == pytest.approx(0.3)
    assert columns[LITE]["robustness dermoscopy: artefact FP rate (clean)"] == pytest.approx(0.025)
    assert columns[LITE]["robustness dermoscopy: artefact FP n"] == 2
    assert columns[BASE]["robustness dermoscopy: artefact FP rate"] == 0
    # fold 0 only: c0 0.3 and c2 1.0 for hair, c0 0.0 for ruler
    only0 = compare_columns(models, ["0"])[LITE]["robustness dermoscopy: artefact FP rate"]
    assert only0 == pytest.approx(((0.3 + 1.0) / 2 + 0.0) / 2)

    # nnunet_lite compare: the columns in comparison.csv and the rates in the robustness cell of comparison.md
    import nnunet_lite.comparison.compare as compare_module
    from tests.test_paired_cases import no_costs

    monkeypatch.setattr(compare_module, "model_costs", no_costs)  # no checkpoints or plans in a hand-built tree
    cmp_out = tmp_path / "cmp"
    assert cli("compare", "-d", DATASET, "-f", 0, 1, "--baseline", BASE, "-o", cmp_out, "--bootstrap", 200) == 0
    cmp = pd.read_csv(cmp_out / "comparison.csv").set_index("model")
    assert cmp.loc[LITE, "robustness dermoscopy: artefact FP rate"] == pytest.approx(0.3)
    assert cmp.loc[LITE, "robustness dermoscopy: artefact FP rate (clean)"] == pytest.approx(0.025)
    assert "artefact FP 0.025 → 0.300" in (cmp_out / "comparison.md").read_text()


def test_example_figure_script(tmp_path, capsys):
    from nnunet_lite.robustness.artefact_figure import main as figure_main

    image = tmp_path / "lesion.png"
    Image.fromarray(_lesion_case(np.random.default_rng(7), 200)[0]).save(image)
    assert figure_main([str(image), str(tmp_path / "fig.png"), "--width", "160"]) == 0
    shares = [float(v) for v in capsys.readouterr().out.split("[")[1].rstrip("]\n").split()]
    assert len(shares) == 9 and all(shares[i] < shares[i + 1] < shares[i + 2] for i in (0, 3, 6))
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    docs_figure = Path(__file__).resolve().parents[1] / "docs" / "robustness_artefacts.png"  # generated from PH2
    assert 20_000 < docs_figure.stat().st_size < 400_000
    assert figure_main([str(tmp_path / "missing.bmp"), str(tmp_path / "x.png")]) == 1
    assert "missing.bmp not found" in capsys.readouterr().err
