"""Synthetic copies of the distributed layouts of the 2D datasets (tiny images), and helpers for the converter tests.

Each ``make_<name>(root)`` writes the dataset the way its authors distribute it (folder and file names, formats and
quirks: names with spaces, multi-masks, noisy JPEG masks, 1-bit and 24-bit BMP masks, TIFFs Pillow cannot open,
LICENSE files next to the images) and returns the folder a user would pass as SOURCE.
"""

from __future__ import annotations

import json
import multiprocessing.dummy
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
from PIL import Image

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def rgb_image(h: int, w: int, seed: int, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * 255 // max(h - 1, 1)), (xx * 255 // max(w - 1, 1)), ((yy + xx) * 3) % 256], axis=-1)
    img = (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
    if grey:
        img[..., 1] = img[..., 0]
        img[..., 2] = img[..., 0]
    return img


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def save(arr: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kwargs)
    return path


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# --------------------------------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------------------------------

ISIC_FOLDERS = {
    2018: (
        ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
        ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
        ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
    ),
    2017: (
        ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
        ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
        ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
    ),
}


def make_isic(root: Path, year: int = 2018, counts: tuple[int, int, int] = (3, 1, 1), test_gt: bool = True) -> Path:
    """ISIC 201x: JPEG inputs, 0/255 PNG masks, LICENSE/ATTRIBUTION in every folder; 2017 adds superpixels + CSV."""
    case = 0
    for k, ((image_dir, gt_dir), n) in enumerate(zip(ISIC_FOLDERS[year], counts, strict=True)):
        if n == 0:  # that zip was not downloaded
            continue
        for folder in (image_dir, gt_dir):
            if folder == gt_dir and k == 2 and not test_gt:
                continue
            write_text(root / folder / "LICENSE.txt", "CC-0\n")
            write_text(root / folder / "ATTRIBUTION.txt", "ISIC archive\n")
        for _ in range(n):
            cid = f"ISIC_{case:07d}"
            h, w = 40 + 4 * (case % 3), 48 + 2 * case
            save(rgb_image(h, w, case), root / image_dir / f"{cid}.jpg", quality=90)
            if year == 2017 and k == 0:
                save(rgb_image(h, w, 99), root / image_dir / f"{cid}_superpixels.png")
            if not (k == 2 and not test_gt):
                mask = (disk(h, w, h / 2, w / 2, 10 + case % 4) * 255).astype(np.uint8)
                # the 2016/2017 pages spell it _Segmentation.png: match case-insensitively
                suffix = "_Segmentation.png" if (year == 2017 and case == 1) else "_segmentation.png"
                save(mask, root / gt_dir / f"{cid}{suffix}")
            case += 1
        if year == 2017 and k == 0:
            write_text(root / image_dir / "ISIC-2017_Training_Data_metadata.csv", "image_id,age_approximate,sex\n")
    return root


def make_busi(root: Path, n_benign: int = 3, n_malignant: int = 2, n_normal: int = 2) -> Path:
    """Dataset_BUSI_with_GT/<class>/'<class> (N).png' (+ _mask, _mask_1, _mask_2); grey stored as RGB, one colour."""
    base = root / "Dataset_BUSI_with_GT"
    seed = 0
    for cls, n in (("benign", n_benign), ("malignant", n_malignant), ("normal", n_normal)):
        for i in range(1, n + 1):
            h, w = 44 + 2 * i, 50 + 3 * i
            img = rgb_image(h, w, seed, grey=True)
            if cls == "benign" and i == 3:
                img[2:6, 2:12] = (255, 255, 0)  # yellow caliper marks, as in benign (6)
            if cls == "malignant" and i == 2:
                img = np.asarray(Image.open(base / "benign" / "benign (2).png"))  # a duplicated image
                h, w = img.shape[:2]
            save(img, base / cls / f"{cls} ({i}).png")
            if cls == "normal":
                save(np.zeros((h, w), np.uint8), base / cls / f"{cls} ({i})_mask.png")
            else:
                masks = [disk(h, w, h / 3, w / 3, 6)]
                if cls == "benign" and i == 1:
                    masks.append(disk(h, w, 2 * h / 3, 2 * w / 3, 5))
                if cls == "benign" and i == 2:
                    masks += [disk(h, w, 2 * h / 3, 2 * w / 3, 5), disk(h, w, h / 4, 3 * w / 4, 4)]
                for k, m in enumerate(masks):
                    suffix = "_mask" if k == 0 else f"_mask_{k}"
                    save((m * 255).astype(np.uint8), base / cls / f"{cls} ({i}){suffix}.png")
            seed += 1
    return root


def make_busi_cmunext(root: Path, names: list[str], size: int = 8) -> Path:
    """The CMUNeXt/LGMSNet layout data/busi/{images,masks/0}/'<class> (N).png' (masks merged) for the given names."""
    base = root / "data" / "busi"
    for i, name in enumerate(names):
        save(rgb_image(size, size, i, grey=True), base / "images" / f"{name}.png")
        save(
            (disk(size, size, size / 2, size / 2, size / 4) * 255).astype(np.uint8),
            base / "masks" / "0" / f"{name}.png",
        )
    return root


def make_kvasir(root: Path, n: int = 3) -> Path:
    """Kvasir-SEG/{images,masks}/<id>.jpg (3-channel JPEG masks with noise) + kavsir_bboxes.json."""
    base = root / "Kvasir-SEG"
    bboxes = {}
    for i in range(n):
        cid = f"cju{i}qkwl35piu0993l0dewei{i}"
        h, w = 40 + 2 * i, 56 - 2 * i
        save(rgb_image(h, w, i), base / "images" / f"{cid}.jpg", quality=85)
        mask = np.repeat((disk(h, w, h / 2, w / 2, 9)[..., None] * 255).astype(np.uint8), 3, axis=2)
        save(mask, base / "masks" / f"{cid}.jpg", quality=75)
        bboxes[cid] = {
            "height": h,
            "width": w,
            "bbox": [{"label": "polyp", "xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}],
        }
    write_text(base / "kavsir_bboxes.json", json.dumps(bboxes))
    return root


def kvasir_reference_mask(h: int, w: int) -> np.ndarray:
    return disk(h, w, h / 2, w / 2, 9).astype(np.uint8)


def make_ph2(root: Path, n: int = 3) -> Path:
    """PH2Dataset/'PH2 Dataset images'/IMDxxx/... with BMPs; IMD002's lesion mask is 24-bit RGB, the others 1-bit."""
    base = root / "PH2Dataset"
    images = base / "PH2 Dataset images"
    for i in range(n):
        cid = f"IMD{2 + i:03d}"
        h, w = 42 + i, 50 + i
        save(rgb_image(h, w, i), images / cid / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp")
        lesion = disk(h, w, h / 2, w / 2, 12)
        if i == 0:
            save(
                np.repeat((lesion[..., None] * 255).astype(np.uint8), 3, axis=2),
                images / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp",
            )
        else:
            save((lesion * 255).astype(np.uint8), images / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp")
            Image.open(images / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp").convert("1").save(
                images / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp"
            )
        save((disk(h, w, h / 2, w / 2, 5) * 255).astype(np.uint8), images / cid / f"{cid}_roi" / f"{cid}_R1_Label4.bmp")
    write_text(base / "Readme.txt", "PH\xb2 Dataset contents\n", encoding="latin-1")
    write_text(
        base / "PH2_dataset.txt", "Name\tClinical Diagnosis\n" + "".join(f"IMD{2 + i:03d}\t0\n" for i in range(n))
    )
    return root


def make_cvc(root: Path, frames: tuple[int, ...] = (1, 26, 51, 68, 79)) -> Path:
    """CVC-ClinicDB/Original/<n>.tif (RGB with the header Pillow rejects) + 'Ground Truth'/<n>.tif (soft edges)."""
    import tifffile
    from scipy.ndimage import gaussian_filter

    base = root / "CVC-ClinicDB"
    for i, frame in enumerate(frames):
        h, w = 36, 48
        (base / "Original").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(
            base / "Original" / f"{frame}.tif", rgb_image(h, w, i), photometric="minisblack", planarconfig="contig"
        )
        soft = gaussian_filter(disk(h, w, h / 2, w / 2, 8).astype(float) * 255, 1.0).round().astype(np.uint8)
        (base / "Ground Truth").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(base / "Ground Truth" / f"{frame}.tif", soft)
    write_text(base / "README.txt", "CVC-ClinicDB\n 1 to 25 | 1\n")
    return root


def make_tnscui(root: Path, ids: tuple[int, ...] = (1, 17, 230, 9759)) -> Path:
    """image/<ID>.PNG + mask/<ID>.PNG (upper-case extension, grey) + train.csv."""
    base = root / "tnscui2020_train"
    for i, cid in enumerate(ids):
        h, w = 40 + i, 44
        save(rgb_image(h, w, i)[..., 0], base / "image" / f"{cid}.PNG", format="PNG")
        save((disk(h, w, h / 2, w / 2, 7) * 255).astype(np.uint8), base / "mask" / f"{cid}.PNG", format="PNG")
    write_text(base / "train.csv", "ID,CATE\n" + "".join(f"{cid}.PNG,{cid % 2}\n" for cid in ids))
    return root


def make_busb(root: Path, n: int = 3) -> Path:
    """BUS_Dataset_B/original/<000001>.png + GT/<000001>.png + DatasetB.xlsx."""
    base = root / "BUS_Dataset_B"
    for i in range(1, n + 1):
        h, w = 38 + i, 46
        save(rgb_image(h, w, i)[..., 0], base / "original" / f"{i:06d}.png")
        save((disk(h, w, h / 2, w / 2, 6) * 255).astype(np.uint8), base / "GT" / f"{i:06d}.png")
    (base / "DatasetB.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    return root


# --------------------------------------------------------------------------------------------------------------------
# nnU-Net's verification, in-process
# --------------------------------------------------------------------------------------------------------------------


def verify_with_nnunet(folder: Path) -> None:
    """nnU-Net's own verify_dataset_integrity, unchanged except that its worker pool runs in threads.

    Its spawn pool costs several seconds of interpreter start-up per call on a busy 2-core machine; the checks it runs
    are the same. The planning test runs the real thing once.
    """
    from nnunetv2.experiment_planning import verify_dataset_integrity as vdi

    threads = SimpleNamespace(get_context=lambda method: multiprocessing.dummy)
    with mock.patch.object(vdi, "multiprocessing", threads):
        vdi.verify_dataset_integrity(str(folder), num_processes=1)
