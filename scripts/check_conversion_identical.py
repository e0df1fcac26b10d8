"""Convert every dataset sample with ``nnunet_lite convert`` and record or compare the output byte for byte.

Sources: the synthetic layouts of tests/convert_fixtures*.py for every registered converter (each split choice) and the
real samples in ../shared/datasets when present (Kvasir-SEG, CVC-ClinicDB, the BUSI CMUNeXt layout, PH2, KiTS23
labels with synthetic imaging, the TotalSegmentator example CT as BTCV). Used to check that a refactoring of the
conversion code leaves every converted dataset identical::

    python scripts/check_conversion_identical.py --save /tmp/conv-baseline      # before
    python scripts/check_conversion_identical.py --compare /tmp/conv-baseline   # after: exit 1 on any difference
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nnunet_lite.cli import main  # noqa: E402
from tests.convert_fixtures import (  # noqa: E402
    SHARED_DATASETS,
    make_busb,
    make_busi,
    make_cvc,
    make_isic,
    make_kvasir,
    make_ph2,
    make_tnscui,
)
from tests.convert_fixtures_3d import make_btcv, make_kits23, save_kits_nifti  # noqa: E402


def _kits_real(root: Path) -> Path | None:
    sample = SHARED_DATASETS / "kits23" / "dataset"
    if not sample.is_dir():
        return None
    dataset = root / "kits23" / "dataset"
    for case in ("case_00021", "case_00061"):
        (dataset / case).mkdir(parents=True)
        shutil.copy(sample / case / "segmentation.nii.gz", dataset / case / "segmentation.nii.gz")
        seg = nib.load(sample / case / "segmentation.nii.gz")
        labels = np.asarray(seg.dataobj)
        ct = (np.array([-60, 150, 250, 10], np.int16)[labels] + (np.arange(labels.shape[2]) % 7)).astype(np.int16)
        save_kits_nifti(ct, dataset / case / "imaging.nii.gz", header=seg.header)
    return root


def _totalseg_as_btcv(root: Path) -> Path | None:
    sample = SHARED_DATASETS / "totalsegmentator-example-ct" / "tests" / "reference_files"
    if not sample.is_dir():
        return None
    to_btcv = {1: 1, 2: 2, 3: 3, 4: 4, 15: 5, 5: 6, 6: 7, 52: 8, 63: 9, 64: 10, 7: 11, 8: 12, 9: 13}
    lut = np.zeros(256, np.uint8)
    for src, dst in to_btcv.items():
        lut[src] = dst
    seg = nib.load(sample / "example_seg.nii.gz")
    raw = root / "RawData" / "Training"
    (raw / "img").mkdir(parents=True)
    shutil.copy(sample / "example_ct_sm.nii.gz", raw / "img" / "img0001.nii.gz")
    save_kits_nifti(lut[np.asarray(seg.dataobj)], raw / "label" / "label0001.nii.gz", header=seg.header)
    return root


def _shared(sub: str):
    def make(_root: Path) -> Path | None:
        path = SHARED_DATASETS / sub
        return path if path.is_dir() else None

    return make


# job name: (dataset, source maker, extra CLI arguments)
JOBS = {
    "isic2017": ("isic2017", lambda r: make_isic(r, 2017), []),
    "isic2017-official": ("isic2017", lambda r: make_isic(r, 2017), ["--split", "official"]),
    "isic2018": ("isic2018", lambda r: make_isic(r, 2018), []),
    "isic2018-trainval-resize": ("isic2018", lambda r: make_isic(r, 2018), ["--split", "trainval", "--resize", "32"]),
    "isic2018-all": ("isic2018", lambda r: make_isic(r, 2018), ["--split", "all"]),
    "busi": ("busi", make_busi, []),
    "busi-with-normal": ("busi", make_busi, ["--include-normal"]),
    "kvasir": ("kvasir", make_kvasir, []),
    "ph2": ("ph2", make_ph2, []),
    "cvc-clinicdb": ("cvc-clinicdb", make_cvc, []),
    "tn-scui": ("tn-scui", make_tnscui, []),
    "bus-b": ("bus-b", make_busb, []),
    "btcv": ("btcv", make_btcv, []),
    "btcv-transunet": ("btcv", lambda r: make_btcv(r, numbers=(1, 2, 3, 4, 5, 21, 22)), ["--split", "transunet"]),
    "kits23": ("kits23", make_kits23, []),
    "real-kvasir": ("kvasir", _shared("kvasir-seg"), []),
    "real-cvc-sequence": ("cvc-clinicdb", _shared("cvc-clinicdb"), ["--split", "sequence"]),
    "real-ph2": ("ph2", _shared("ph2"), []),
    "real-busi-cmunext": ("busi", _shared("busi-cmunext-layout"), []),
    "real-busi-cmunext-resize": ("busi", _shared("busi-cmunext-layout"), ["--resize", "64"]),
    "real-kits23": ("kits23", _kits_real, []),
    "real-totalseg-as-btcv": ("btcv", _totalseg_as_btcv, []),
}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def convert_all(work: Path) -> dict[str, dict]:
    """Runs every job under ``work`` (fixed paths, so that nothing depends on a random folder name)."""
    results = {}
    for job, (dataset, maker, extra) in JOBS.items():
        source = maker(work / "sources" / job)
        if source is None:
            print(f"{job}: sample not available, skipped")
            continue
        out_root = work / "out" / job
        argv = ["convert", dataset, str(source), "-np", "1", "-o", str(out_root), *extra]
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            rc = main(argv)
        folders = sorted(out_root.iterdir()) if out_root.is_dir() else []
        results[job] = {
            "rc": rc,
            "folders": [f.name for f in folders],
            "files": {f.name: _digest(f) for f in folders},
            "log": log.getvalue().replace(str(work), "<WORK>"),
        }
        print(f"{job}: rc {rc}, {sum(len(v) for v in results[job]['files'].values())} files")
    return results


def compare(old: dict, new: dict) -> list[str]:
    problems = []
    for job in sorted(set(old) | set(new)):
        if job not in old or job not in new:
            problems.append(f"{job}: only in {'baseline' if job in old else 'new run'}")
            continue
        a, b = old[job], new[job]
        if a["rc"] != b["rc"] or a["folders"] != b["folders"]:
            problems.append(f"{job}: rc/folders {a['rc']} {a['folders']} != {b['rc']} {b['folders']}")
        for folder in sorted(set(a["files"]) & set(b["files"])):
            fa, fb = a["files"][folder], b["files"][folder]
            for name in sorted(set(fa) | set(fb)):
                if fa.get(name) != fb.get(name):
                    problems.append(f"{job}: {folder}/{name} differs ({'missing' if name not in fb else 'content'})")
        if a["log"] != b["log"]:
            problems.append(f"{job}: console output differs")
    return problems


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, metavar="DIR", help="write DIR/digests.json (the baseline)")
    group.add_argument("--compare", type=Path, metavar="DIR", help="compare with DIR/digests.json")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nnunet_lite_convcheck")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    results = convert_all(args.work)
    shutil.rmtree(args.work, ignore_errors=True)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "digests.json").write_text(json.dumps(results, indent=1))
        print(f"baseline: {len(results)} conversions -> {args.save / 'digests.json'}")
        return 0
    problems = compare(json.loads((args.compare / "digests.json").read_text()), results)
    for line in problems:
        print(line)
    n_files = sum(len(f) for r in results.values() for f in r["files"].values())
    verdict = "identical" if not problems else f"{len(problems)} differ"
    print(f"{len(results)} conversions, {n_files} files: {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(run())
