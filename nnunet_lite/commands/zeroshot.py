"""``nnunet_lite zeroshot``: evaluate a model trained on one dataset on another (e.g. ISIC2018 -> PH2)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..comparison.nnunet_io import ComparisonError
    from ..comparison.zeroshot import run_zeroshot

    try:
        results = run_zeroshot(
            args.source_dataset,
            args.target_dataset,
            args.tr,
            args.c,
            folds=args.f,
            plans_name=args.p,
            images=Path(args.images) if args.images else None,
            labels=Path(args.labels) if args.labels else None,
            device=args.device,
            use_mirroring=not args.disable_tta,
            checkpoint=args.chk,
            num_processes=args.num_processes,
            overwrite=args.overwrite,
            ensemble=args.ensemble,
        )
    except ComparisonError as e:
        print(f"nnunet_lite zeroshot: {e}", file=sys.stderr)
        return 1
    for r in results:
        mean = r["foreground_mean"]
        which = f"fold {r['fold']}" if r["fold"] != "ensemble" else f"ensemble of folds {' '.join(r['folds'])}"
        print(
            f"{r['source_dataset']} -> {r['target_dataset']}, {which}: Dice {mean['Dice']:.4f}, "
            f"IoU {mean['IoU']:.4f} over {r['num_cases']} cases ({r['images']}); wrote {r['output']}"
        )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "zeroshot",
        help="predict and evaluate another dataset with a trained model (cross-dataset generalisation)",
        description="Checks that the target dataset has the same channels (names select nnU-Net's normalisation), "
        "file ending and labels as the model's training dataset, predicts the target's images with nnUNetPredictor "
        "(each fold separately, or with --ensemble all folds together; final checkpoint), evaluates them with "
        "nnU-Net's metrics and stores everything under nnUNet_results/<SOURCE>/<TRAINER>__<PLANS>__<CONFIG>/zeroshot/"
        "<TARGET>/fold_N (or .../ensemble), where nnunet_lite compare shows it as a zero-shot column. Documented "
        "pairs: ISIC2018 -> PH2, Kvasir-SEG -> CVC-ClinicDB, BUSI -> BUS-B.",
    )
    parser.add_argument("--source-dataset", required=True, help="dataset the model was trained on (ID or name)")
    parser.add_argument("--target-dataset", required=True, help="dataset to evaluate on (ID or name, raw folder)")
    parser.add_argument("-tr", default="nnUNetTrainer", help="trainer (default nnUNetTrainer)")
    parser.add_argument("-c", default="2d", help="configuration (default 2d)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-f", nargs="+", default=["0"], help="folds, each evaluated separately (default 0)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    parser.add_argument("--images", default=None, help="images to predict (default: target imagesTs, else imagesTr)")
    parser.add_argument("--labels", default=None, help="reference labels for --images")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if available")
    parser.add_argument("--disable-tta", action="store_true", help="no test-time mirroring")
    parser.add_argument("--num-processes", type=int, default=1, help="nnU-Net pre/post-processing workers")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="predict with all -f folds at once (nnU-Net's fold ensemble) into zeroshot/<TARGET>/ensemble: one "
        "prediction per case instead of one per fold",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace earlier zero-shot results")
    parser.set_defaults(func=run)
