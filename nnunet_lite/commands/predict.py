"""``nnunet_lite predict``: segment a folder with an exported model in onnxruntime, through nnU-Net's pipeline."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from ..deploy.onnx_runtime import ExportError
    from ..deploy.predict import predict_folder
    from ..deploy.sidecar import SidecarError

    try:
        files = predict_folder(
            args.model,
            args.input,
            args.output,
            use_mirroring=not args.disable_tta,
            tile_step_size=args.step_size,
            threads=args.threads,
            save_probabilities=args.save_probabilities,
            overwrite=not args.continue_prediction,
            num_processes_preprocessing=args.preprocess_workers,
            num_processes_export=args.export_workers,
        )
    except (ExportError, SidecarError, FileNotFoundError) as e:
        print(f"nnunet_lite predict: error: {e}", file=sys.stderr)
        return 1
    print(f"nnunet_lite predict: {len(files)} segmentations in {args.output}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment a folder of images with an exported model (onnxruntime on the CPU, nnU-Net's pipeline)",
        description="Runs nnU-Net's inference (preprocessing, sliding window with Gaussian weighting, test-time "
        "mirroring, resampling back, export in the dataset's file format) with the network executed by onnxruntime "
        "from an export folder (nnunet_lite export). Needs only that folder: no checkpoint, trainer or nnU-Net "
        "environment variables. Results match nnUNetv2_predict with the same model and settings.",
    )
    parser.add_argument("-i", "--input", required=True, help="folder of images named CASE_0000.ext (nnU-Net naming)")
    parser.add_argument("-o", "--output", required=True, help="output folder for the segmentations")
    parser.add_argument("-m", "--model", required=True, help="export folder written by nnunet_lite export")
    parser.add_argument(
        "--disable-tta",
        action="store_true",
        help="no test-time mirroring (faster; like nnUNetv2_predict --disable_tta)",
    )
    parser.add_argument("--step-size", type=float, default=0.5, help="sliding-window step, fraction of the patch")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    parser.add_argument("--save-probabilities", action="store_true", help="also write .npz probabilities")
    parser.add_argument("--continue-prediction", action="store_true", help="skip cases whose output exists")
    parser.add_argument(
        "--preprocess-workers",
        type=int,
        default=1,
        help="background preprocessing processes (0 with --export-workers 0: all in this process, no start-up cost)",
    )
    parser.add_argument("--export-workers", type=int, default=1, help="background resampling/export processes")
    parser.set_defaults(func=run)
