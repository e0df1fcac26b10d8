"""``nnunet_lite profile``: parameters, FLOPs, latency, memory and predictor time of any trainer's network."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run_training(args: argparse.Namespace) -> int:
    """``profile --training``: nnU-Net's training iteration of each trainer, timed phase by phase."""
    import os

    if args.num_workers is not None:
        os.environ["nnUNet_n_proc_DA"] = str(args.num_workers)  # nnU-Net's own knob for augmentation workers
    from ..comparison.nnunet_io import ComparisonError
    from ..comparison.profile import environment
    from ..comparison.training_profile import format_training_profiles, profile_training

    if args.d is None:
        print("nnunet_lite profile --training: needs -d DATASET (a preprocessed dataset to train on)", file=sys.stderr)
        return 1
    device = "cuda" if args.device == "auto" and _cuda() else "cpu" if args.device == "auto" else args.device
    profiles = []
    try:
        for trainer in args.trainers:
            print(f"profiling the training of {trainer} ...", file=sys.stderr, flush=True)
            profiles.append(
                profile_training(
                    trainer,
                    args.d,
                    configuration=args.c or "2d",
                    plans_name=args.p,
                    fold=0 if args.f == "all" else int(args.f),
                    device=device,
                    iterations=args.iterations,
                    warmup=args.warmup,
                    top=args.top,
                    threads=args.threads,
                )
            )
    except ComparisonError as e:
        print(f"nnunet_lite profile: {e}", file=sys.stderr)
        return 1
    report = {"environment": environment(), "training_profiles": profiles}
    if _write_json(report, args.json):
        return 0
    env = report["environment"]
    print(f"nnunetv2 {env['nnunetv2']}, torch {env['torch']}, {env.get('gpu', env['cpu'])}")
    print(format_training_profiles(profiles))
    return 0


def run_precisions(args: argparse.Namespace) -> int:
    """``profile --precisions``: forward latency of trained models at fp32/bf16/int8 next to nnU-Net's default."""
    import os

    # idle OpenMP threads that spin make eager PyTorch many times slower on a busy machine (scripts/benchmark_latency.py
    # does the same); read when torch loads OpenMP, and the CLI has not imported torch yet
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from ..comparison.nnunet_io import ComparisonError
    from ..comparison.profile import environment, format_precision_profile, profile_precisions

    if args.d is None:
        print("nnunet_lite profile --precisions: needs -d DATASET (the trained model's dataset)", file=sys.stderr)
        return 1
    if args.rounds < 1:
        print(f"nnunet_lite profile: --rounds must be at least 1, got {args.rounds}", file=sys.stderr)
        return 1
    try:
        report = profile_precisions(
            args.trainers,
            args.d,
            configuration=args.c or "2d",
            plans_name=args.p,
            fold=args.f,
            checkpoint_name=args.chk,
            precisions=args.precisions,
            shape=args.shape,
            threads=args.threads or torch.get_num_threads(),
            rounds=args.rounds,
            block_seconds=args.min_run_time / args.rounds,
            log=lambda m: print(f"[profile] {m}", file=sys.stderr, flush=True),
        )
    except ComparisonError as e:
        print(f"nnunet_lite profile: {e}", file=sys.stderr)
        return 1
    except ImportError as e:  # onnxruntime for fp32/int8
        print(f"nnunet_lite profile: {e}; install the export extra: pip install 'nnunet-lite[export]'", file=sys.stderr)
        return 1
    report = {"environment": environment(), "precision_profile": report}
    if _write_json(report, args.json):
        return 0
    print(format_precision_profile(report["precision_profile"]))
    return 0


def _write_json(report: dict, target: str | None) -> bool:
    """Writes ``report`` to ``target`` (a file, or ``-`` for stdout); True when it went to stdout (nothing else is
    printed then)."""
    if target == "-":
        print(json.dumps(report, indent=2))
        return True
    if target:
        Path(target).write_text(json.dumps(report, indent=2) + "\n")
    return False


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    if args.training:
        return run_training(args)
    if args.precisions:
        return run_precisions(args)
    from ..comparison.nnunet_io import ComparisonError
    from ..comparison.profile import environment, format_profiles, profile_trainer

    profiles = []
    try:
        for trainer in args.trainers:
            profiles.append(
                profile_trainer(
                    trainer,
                    dataset=args.d,
                    configuration=args.c,
                    plans_name=args.p,
                    shape=args.shape,
                    num_classes=args.num_classes,
                    device=args.device,
                    threads=args.threads,
                    min_run_time=args.min_run_time,
                    latency=not args.skip_latency,
                    memory=not args.skip_memory,
                    input_folder=Path(args.input_folder) if args.input_folder else None,
                    fold=int(args.f) if args.f != "all" else "all",
                    num_cases=args.num_cases,
                    cpu_paths=args.cpu_paths,
                )
            )
    except ComparisonError as e:
        print(f"nnunet_lite profile: {e}", file=sys.stderr)
        return 1
    except ImportError as e:  # the onnxruntime path without the optional extra
        print(f"nnunet_lite profile: {e}; install the export extra: pip install 'nnunet-lite[export]'", file=sys.stderr)
        return 1
    report = {"environment": environment(), "profiles": profiles}
    if _write_json(report, args.json):
        return 0
    env = report["environment"]
    print(f"nnunetv2 {env['nnunetv2']}, torch {env['torch']}, {env.get('gpu', env['cpu'])}; {env['flop_counter']}")
    print(f"networks built from: {', '.join(sorted({p['plans'] for p in profiles}))}")
    print(format_profiles(profiles))
    for p in profiles:
        if "predictor" in p:
            pred = p["predictor"]
            where = f"{pred['cases']} cases of {pred['input_folder']}"
            print(f"{p['trainer']}: predictor on {where}, weights {pred['weights']}")
    return 0


def _fold(text: str) -> str:
    """argparse type: a fold number or ``all``, as nnUNetv2_train's FOLD."""
    if text != "all" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"a fold is a number (0-4 for nnU-Net's 5 folds) or 'all', got {text!r}")
    return text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="parameters, FLOPs/MACs, forward latency, peak memory and predictor time of trainers' networks",
        description="Builds each trainer's network exactly as nnU-Net does for a dataset's plans (-d/-c/-p; any "
        "trainer, nnU-Net's own included) or for an explicit input shape (--shape, nnU-Net's default topology), then "
        "counts parameters and FLOPs (torch FlopCounterMode, MACs = FLOPs / 2, attention included), times the "
        "forward pass with torch.utils.benchmark (median and IQR; CUDA: fp32 and autocast) and measures peak forward "
        "memory. With --input-folder it also times nnUNetPredictor end to end per case, without and with mirroring.",
    )
    parser.add_argument("-tr", dest="trainers", nargs="+", default=["nnUNetTrainer"], help="trainer class names")
    parser.add_argument("-d", default=None, help="dataset ID or name (its preprocessed plans define the network)")
    parser.add_argument("-c", default=None, help="configuration (default 2d with -d)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument(
        "-f", default="0", type=_fold, help="fold whose trained weights --input-folder uses if present (0-4 or all)"
    )
    parser.add_argument(
        "--shape", type=int, nargs="+", default=None, help="input shape B C H W [D]; overrides the patch size"
    )
    parser.add_argument("--num-classes", type=int, default=None, help="classes incl. background (--shape without -d)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if available")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for latency (default: torch's)")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timed runs per latency figure")
    parser.add_argument(
        "--cpu-paths",
        nargs="+",
        default=[],
        choices=("optimized", "compiled", "onnxruntime"),
        help="also time these CPU deployment paths (fp32): optimized = inference rewrites + channels-last, compiled = "
        "that + torch.compile, onnxruntime = the exported graph (needs the export extra); see docs/deployment.md",
    )
    parser.add_argument("--skip-latency", action="store_true", help="do not time the forward pass")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak forward memory")
    parser.add_argument("--input-folder", default=None, help="raw images (CASE_0000.png ...) for the predictor timing")
    parser.add_argument("--num-cases", type=int, default=None, help="time at most this many cases of --input-folder")
    training = parser.add_argument_group(
        "training (--training)",
        "time nnU-Net's training iteration instead of the forward pass: data wait, forward, backward, optimizer, "
        "train_step, samples/s, achieved GMAC/s and the top operators (torch.profiler), at the plans' batch and patch",
    )
    training.add_argument("--training", action="store_true", help="profile training iterations (needs -d)")
    training.add_argument("--iterations", type=int, default=5, help="timed iterations (default 5; medians)")
    training.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    training.add_argument("--top", type=int, default=10, help="operators listed per trainer (default 10; 0: none)")
    training.add_argument(
        "--num-workers", type=int, default=None, help="augmentation workers (nnUNet_n_proc_DA; default: nnU-Net's)"
    )
    precision = parser.add_argument_group(
        "precisions (--precisions)",
        "forward latency of the trained models (-d/-c/-tr/-f, weights of fold F when trained) and of nnU-Net's "
        "default network for the same plans at the precisions of nnunet_lite export (fp32 and int8 in onnxruntime, "
        "bf16 in OpenVINO where the CPU has AVX512_BF16/AMX, else the one-line reason), with the ratio to nnU-Net's "
        "default in eager fp32 and at the same precision, and the CPU's int8/bf16 instruction sets",
    )
    precision.add_argument(
        "--precisions", nargs="+", default=None, choices=("fp32", "bf16", "int8"), help="e.g. fp32 bf16 int8"
    )
    precision.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    precision.add_argument(
        "-chk", default="checkpoint_final.pth", help="checkpoint file name (default checkpoint_final.pth)"
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="also write JSON to FILE ('-': JSON to stdout)")
    parser.set_defaults(func=run)
