"""``nnunet_lite predict``: segment a folder fast: nnU-Net's inference in one pipelined, batched process.

Engines: an ``nnunet_lite export`` folder (onnxruntime) or any trained nnU-Net model (PyTorch, no export needed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _model_folder(args: argparse.Namespace) -> Path:
    from ..deploy.export import resolve_model_folder

    if args.model:
        return Path(args.model)
    return resolve_model_folder(args.d, args.c, args.tr, args.p)


def load_engine(args: argparse.Namespace):
    """The :class:`~nnunet_lite.deploy.engines.Engine` the arguments name."""
    from ..deploy.engines import PredictError, TorchEngine, load_export_engine

    folder = _model_folder(args)
    if not folder.is_dir():
        raise PredictError(f"model folder {folder} does not exist (an nnunet_lite export or nnUNet_results folder)")
    is_export = (folder / "model.json").is_file()
    if not is_export and not (folder / "plans.json").is_file():
        raise PredictError(
            f"{folder} is not an nnunet_lite export folder (no model.json) nor an nnU-Net results folder (no "
            f"plans.json): pass an nnunet_lite export folder or nnUNet_results/DATASET/TRAINER__PLANS__CONF"
        )
    engine = args.engine if args.engine != "auto" else ("onnx" if is_export else "torch")
    if engine in ("onnx", "openvino"):
        if not is_export:
            raise PredictError(f"{folder} is not an export folder (no model.json): run nnunet_lite export first")
        if args.precision == "fp16" or args.compile:
            raise PredictError(
                "--precision fp16 and --compile apply to --engine torch (an export runs the precision it records: "
                "fp32, int8 or bf16)"
            )
        # auto: the export's recorded precision (and its engine: OpenVINO for bf16 and int8) unless --engine names one
        return load_export_engine(
            folder,
            engine=args.engine,
            precision=args.precision,
            threads=args.threads,
            device=args.device,
        )
    if is_export:
        raise PredictError(f"{folder} is an export folder: --engine torch needs the nnUNet_results model folder")
    folds = args.f
    if folds is None:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        folds = nnUNetPredictor.auto_detect_available_folds(str(folder), args.chk)
        if not folds:
            raise PredictError(f"no fold_X/{args.chk} in {folder}: train with nnUNetv2_train or pass -chk")
    return TorchEngine.load(
        folder,
        folds,
        args.chk,
        device=args.device,
        threads=args.threads,
        precision=args.precision,
        compile=args.compile,
        optimize=not args.no_optimize,
    )


def run(args: argparse.Namespace) -> int:
    if args.device == "cpu" and "torch" not in sys.modules:
        # read when torch loads OpenMP: idle threads that spin made a shared 2-core machine 5-20x slower
        # (docs/deployment.md); the user's own setting wins
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..deploy.engines import PredictError
    from ..deploy.fast_predict import predict_folder_fast
    from ..deploy.onnx_runtime import ExportError
    from ..deploy.sidecar import SidecarError

    if bool(args.model) == bool(args.d):
        print("nnunet_lite predict: error: give either -m MODEL_FOLDER or -d DATASET -tr TRAINER", file=sys.stderr)
        return 2
    try:
        workers = (args.preprocess_workers, args.export_workers)
        if args.nnunet_pipeline or workers != (None, None):  # nnUNetPredictor + onnxruntime: the reference path
            if not args.model:
                flag = "--nnunet-pipeline" if args.nnunet_pipeline else "--preprocess-workers/--export-workers"
                raise PredictError(
                    f"{flag} runs an nnunet_lite export folder: pass it with -m EXPORT_FOLDER (-d {args.d} names an "
                    f"nnUNet_results model, which the default fast path runs: drop {flag})"
                )
            from ..deploy.predict import predict_folder

            files = predict_folder(
                args.model,
                args.input,
                args.output,
                use_mirroring=not args.disable_tta,
                tile_step_size=args.step_size,
                threads=args.threads,
                save_probabilities=args.save_probabilities,
                overwrite=not args.continue_prediction,
                num_processes_preprocessing=1 if args.preprocess_workers is None else args.preprocess_workers,
                num_processes_export=1 if args.export_workers is None else args.export_workers,
            )
            print(f"nnunet_lite predict: {len(files)} segmentations in {args.output}")
            return 0
        engine = load_engine(args)
        info = engine.info
        if info.get("precision"):
            print(f"nnunet_lite predict: engine {info['engine']}, precision {info['precision']} ({engine.description})")
        if info.get("note"):
            print(f"nnunet_lite predict: {info['note']}")
        if args.max_batch is not None:
            if args.max_batch < 1:
                raise PredictError(f"--max-batch must be at least 1, got {args.max_batch}")
            engine.max_batch = args.max_batch
        report = predict_folder_fast(
            engine,
            args.input,
            args.output,
            use_mirroring=not args.disable_tta,
            tile_step_size=args.step_size,
            save_probabilities=args.save_probabilities,
            continue_prediction=args.continue_prediction,
            overwrite=args.overwrite,
            reader_threads=args.reader_threads,
            images_per_batch=args.batch_images,
            progress=not args.disable_progress_bar,
        )
    except (PredictError, ExportError, SidecarError, FileNotFoundError) as e:
        print(f"nnunet_lite predict: error: {e}", file=sys.stderr)
        return 1
    _record_engine(engine, report, args.output)
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in report.stage_seconds.items())
    skipped = f", {len(report.skipped)} existing skipped" if report.skipped else ""
    print(
        f"nnunet_lite predict: {len(report.written)} segmentations in {args.output}{skipped}; {report.engine}; "
        f"{report.seconds:.2f} s, {report.images_per_second:.1f} images/s (stage time, overlapping: {stages})"
    )
    return 0


PREDICTION_INFO_FILE = "prediction_engine.json"


def _record_engine(engine, report, output: str) -> None:
    """Saves which engine and precision made the predictions next to them."""
    import json

    record = {
        "engine": engine.info.get("engine", "pytorch" if engine.description.startswith("PyTorch") else None),
        "precision": engine.info.get("precision"),
        "description": report.engine,
        "note": engine.info.get("note"),
        "compiled_precision": engine.info.get("compiled_precision"),
        "images": len(report.written),
        "seconds": report.seconds,
    }
    Path(output, PREDICTION_INFO_FILE).write_text(json.dumps(record, indent=2) + "\n")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment a folder fast (nnU-Net's inference in one pipelined, batched process; ONNX or PyTorch)",
        description="Segments a folder of images like nnUNetv2_predict (nnU-Net's preprocessing, sliding window with "
        "Gaussian weighting and fp16 accumulation, test-time mirroring, resampling back, export in the dataset's "
        "format) in one process: reading/preprocessing and writing run in threads beside the network, windows, "
        "mirrored copies and equal-size images go through the network in batches. The model is an nnunet_lite "
        "export folder (onnxruntime) or any trained nnU-Net model (PyTorch: -m RESULTS_FOLDER or -d/-c/-tr, no "
        "export needed). See docs/deployment.md.",
    )
    parser.add_argument("-i", "--input", required=True, help="folder of images named CASE_0000.ext (nnU-Net naming)")
    parser.add_argument("-o", "--output", required=True, help="output folder for the segmentations")
    parser.add_argument("-m", "--model", default=None, help="export folder, or an nnUNet_results model folder")
    parser.add_argument("-d", default=None, help="dataset ID or name (instead of -m: model from nnUNet_results)")
    parser.add_argument("-c", default="2d", help="configuration with -d (default 2d)")
    parser.add_argument("-tr", default="nnUNetTrainer", help="trainer with -d (default nnUNetTrainer)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier with -d (default nnUNetPlans)")
    parser.add_argument("-f", nargs="+", default=None, help="folds (PyTorch engine; default: all present, as nnU-Net)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (PyTorch engine)")
    parser.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "onnx", "openvino", "torch"),
        help="auto: torch for a results folder; for an export folder onnx (fp32) or OpenVINO (bf16, and int8 where "
        "OpenVINO is installed); openvino: an export folder on OpenVINO",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu (default) or cuda")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="export folder: auto runs the precision the export records (fp32, int8 or bf16); fp32 runs an int8/bf16 "
        "export's fp32 model. PyTorch engine on CUDA: autocast dtype (auto: fp16 as nnUNetv2_predict; CPU fp32)",
    )
    parser.add_argument("--compile", action="store_true", help="PyTorch engine: torch.compile the network")
    parser.add_argument("--no-optimize", action="store_true", help="PyTorch engine on CPU: no inference rewrites")
    parser.add_argument(
        "--disable-tta", action="store_true", help="no test-time mirroring (faster; like nnUNetv2_predict)"
    )
    parser.add_argument("--step-size", type=float, default=0.5, help="sliding-window step, fraction of the patch")
    parser.add_argument("--threads", type=int, default=None, help="network threads (default: physical cores)")
    parser.add_argument("--batch-images", type=int, default=8, help="equal-size images per network batch (8)")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="windows (incl. mirrored copies) per network call (default: 1 on CPU, where batches were measured "
        "slower; on CUDA as many as fit 2^22 input elements)",
    )
    parser.add_argument("--reader-threads", type=int, default=1, help="threads reading/preprocessing ahead (1)")
    parser.add_argument("--save-probabilities", action="store_true", help="also write .npz probabilities")
    parser.add_argument("--continue-prediction", action="store_true", help="skip cases whose output exists")
    parser.add_argument("--overwrite", action="store_true", help="replace existing segmentations")
    parser.add_argument("--disable-progress-bar", action="store_true", help="no progress bar")
    parser.add_argument(
        "--nnunet-pipeline",
        action="store_true",
        help="ONNX export through nnUNetPredictor's own multiprocess pipeline instead (reference; slower)",
    )
    parser.add_argument(
        "--preprocess-workers",
        type=int,
        default=None,
        help="implies --nnunet-pipeline: its preprocessing processes (default 1; 0 with --export-workers 0: all in "
        "one process, like nnUNetv2_predict -npp 0 -nps 0)",
    )
    parser.add_argument(
        "--export-workers", type=int, default=None, help="implies --nnunet-pipeline: its export processes (default 1)"
    )
    parser.set_defaults(func=run)
