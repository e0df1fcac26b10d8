"""``nnunet_lite export``: a model trained with nnU-Net's commands -> ONNX + JSON sidecar, verified with onnxruntime."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import export_trained_model
    from ..deploy.onnx_runtime import ExportError

    try:
        export_trained_model(
            args.d,
            args.c,
            args.tr,
            args.f,
            args.output,
            plans=args.p,
            checkpoint_name=args.chk,
            overwrite=args.overwrite,
            tolerance=args.tolerance,
            optimize=not args.no_optimize,
            verify_images=args.verify_images,
            opset=args.opset,
            exporter=args.exporter,
            precision=args.precision,
            max_dice_drop=args.max_dice_drop,
            force=args.force,
            calibration_patches=args.calibration_patches,
            int8_fp32_head=args.int8_fp32_head,
            quantizer=args.quantizer,
        )
    except ExportError as e:
        print(f"nnunet_lite export: error: {e}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..deploy.constants import (
        DEFAULT_CALIBRATION_PATCHES,
        DEFAULT_MAX_DICE_DROP,
        DEFAULT_OPSET,
        DEFAULT_QUANTIZER,
        DEFAULT_TOLERANCE,
        PRECISIONS,
        QUANTIZERS,
    )

    parser = subparsers.add_parser(
        "export",
        help="export a trained nnU-Net model (any trainer) to ONNX with a JSON sidecar, verified with onnxruntime",
        description="Loads fold F of nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG the way nnUNetv2_predict does, "
        "exports the network to OUTPUT/model.onnx (dynamic batch, the plans' patch size), checks onnxruntime "
        "against PyTorch on random and real inputs (fails beyond --tolerance) and writes OUTPUT/model.json (patch "
        "size, spacing, channels and normalisation, labels or regions, mirroring axes, provenance) next to copies "
        "of plans.json and dataset.json. Needs the export extra (onnx, onnxruntime). Predict with: "
        "nnunet_lite predict -i IMAGES -o OUT -m OUTPUT.",
    )
    parser.add_argument("-d", required=True, help="dataset ID or name")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-tr", required=True, help="trainer class name, e.g. nnUNetTrainerAULUNet")
    parser.add_argument("-f", required=True, help="fold (0-4 or all)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument(
        "-chk", default="checkpoint_final.pth", help="checkpoint file name (default checkpoint_final.pth)"
    )
    parser.add_argument("-o", "--output", required=True, help="export folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="largest accepted onnxruntime vs PyTorch logit difference, relative to max(1, max |logit|) "
        f"(default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--no-optimize", action="store_true", help="export the network as is, without the CPU inference rewrites"
    )
    parser.add_argument(
        "--verify-images", default=None, help="raw images for the real-input check (default: the dataset's imagesTr)"
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument(
        "--exporter",
        default="auto",
        choices=("auto", "torchscript", "dynamo"),
        help="torch ONNX exporter (auto: TorchScript-based where available; dynamo needs onnxscript)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default); int8: static quantization calibrated on the fold's training cases (model_int8.onnx, "
        "onnxruntime); bf16: OpenVINO bf16 inference (f32 on CPUs without AVX512_BF16/AMX). int8/bf16 run the "
        "accuracy guard on the fold's validation cases",
    )
    parser.add_argument(
        "--max-dice-drop",
        type=float,
        default=DEFAULT_MAX_DICE_DROP,
        help="accuracy guard: refuse the export when the mean foreground Dice at --precision is more than this "
        f"below fp32's (default {DEFAULT_MAX_DICE_DROP})",
    )
    parser.add_argument("--force", action="store_true", help="write the export even when the accuracy guard fails")
    parser.add_argument(
        "--calibration-patches",
        type=int,
        default=DEFAULT_CALIBRATION_PATCHES,
        help=f"int8: patches sampled by nnU-Net's data loader for calibration (default {DEFAULT_CALIBRATION_PATCHES})",
    )
    parser.add_argument(
        "--int8-fp32-head", action="store_true", help="int8: keep the segmentation head (last convolution) in fp32"
    )
    parser.add_argument(
        "--quantizer",
        default=DEFAULT_QUANTIZER,
        choices=QUANTIZERS,
        help=f"int8: NNCF's quantize (needs the nncf extra) or onnxruntime's quantize_static (default "
        f"{DEFAULT_QUANTIZER}; docs/deployment.md compares them)",
    )
    parser.set_defaults(func=run)
