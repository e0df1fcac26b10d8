"""``nnunet_lite convert NAME SOURCE``: a dataset as its authors distribute it -> an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from nnunet_lite.dataset_conversion import DATASETS, ConvertOptions, DatasetSpec


def format_list() -> str:
    """The text of ``nnunet_lite convert --list``."""
    lines = [
        "Datasets (nnunet_lite convert NAME SOURCE [-d ID]); SOURCE is the unpacked download or a folder above it:",
        "",
    ]
    for name, spec in DATASETS.items():
        lines.append(f"{name:<13} -> {spec.folder()}  (default ID {spec.default_id}; {spec.role})")
        lines.append(f"    {spec.title}")
        for key, text in (
            ("layout", spec.layout),
            ("--split", ", ".join(spec.splits) + " (first is the default)"),
            ("source", spec.source),
            ("licence", spec.license),
        ):
            wrapped = textwrap.wrap(text, width=110, initial_indent=f"    {key + ':':<9}", subsequent_indent=" " * 13)
            lines.extend(wrapped)
        lines.append("")
    lines.append(
        "2D datasets: images as 3-channel PNG (grey sources replicated) with channel names rgb_to_0_1, labels "
        "background 0 / foreground 1."
    )
    lines.append(
        "3D datasets (btcv, kits23): NIfTI volumes copied unchanged (never resampled), channel CT; KiTS23 with "
        "nnU-Net's region-based labels."
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list or not getattr(args, "dataset", None):
        print(format_list())
        return 0 if args.list else 2
    from nnunet_lite.dataset_conversion._engine import ConversionError, Terminated

    spec = DATASETS[args.dataset]
    try:
        spec.run(args.source, options_from_args(spec, args))
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 1
    except Terminated:  # SIGTERM: exit status 128 + 15, as if the signal had killed us
        print("terminated (SIGTERM); nothing was written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


def options_from_args(spec: DatasetSpec, args: argparse.Namespace) -> ConvertOptions:
    """The :class:`ConvertOptions` of a parsed ``nnunet_lite convert NAME ...`` command line."""
    only_2d = {"resize": args.resize, "mask_threshold": args.mask_threshold} if spec.dimension == 2 else {}
    return spec.options(
        args.dataset_id,
        split=args.split,
        split_file=args.split_file,
        overwrite=args.overwrite,
        num_workers=args.num_workers,
        output_root=args.output_root,
        **only_2d,
        **{name: getattr(args, name) for name in spec.extra_options},
    )


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (-np 0 and -np -4 are errors, not one worker)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value} (use 1 for no worker processes)")
    return value


def _mask_threshold(text: str) -> int:
    """argparse type: an 8-bit threshold 1..255 (999 would give empty masks, -1 full ones)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 255, got {text!r}") from None
    if not 0 < value <= 255:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to 255 (8-bit mask values > T are foreground), got {value}"
        )
    return value


def _add_common(parser: argparse.ArgumentParser, spec: DatasetSpec) -> None:
    splits = spec.splits
    parser.add_argument(
        "source",
        metavar="SOURCE",
        type=Path,
        help="the unpacked official download (or a folder that contains it)",
    )
    parser.add_argument(
        "-d",
        "--dataset-id",
        dest="dataset_id",
        type=int,
        default=spec.default_id,
        metavar="ID",
        help=f"nnU-Net dataset ID (default {spec.default_id}: {spec.folder()})",
    )
    if spec.dimension == 2:  # 3D volumes are copied unchanged
        parser.add_argument(
            "--resize",
            type=int,
            metavar="N",
            help="resize to NxN as the papers do (images bilinear, masks nearest); default: native resolution",
        )
    parser.add_argument(
        "--split",
        choices=list(splits),
        default=next(iter(splits)),
        help="; ".join(f"{k}: {v}" for k, v in splits.items()),
    )
    parser.add_argument(
        "--split-file",
        dest="split_file",
        type=Path,
        metavar="PATH",
        help="published split lists: a folder of <x>train<k>.txt + <x>val<k>.txt (or train.txt + val.txt), one of "
        "those files, or an nnU-Net splits_final.json; written as splits_final.json",
    )
    if spec.dimension == 2:
        parser.add_argument(
            "--mask-threshold",
            dest="mask_threshold",
            type=_mask_threshold,
            metavar="T",
            default=spec.mask_threshold,
            help="treat mask values > T as foreground instead of requiring binary masks "
            "(default: 127 for kvasir and cvc-clinicdb, binary masks required otherwise)",
        )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument(
        "--num-workers",
        "-np",
        dest="num_workers",
        type=_positive_int,
        metavar="N",
        help="worker processes (default: $nnUNet_def_n_proc, else min(8, CPUs))",
    )
    parser.add_argument(
        "-o",
        "--output-root",
        dest="output_root",
        type=Path,
        metavar="DIR",
        help="write the dataset folder here instead of $nnUNet_raw",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a dataset as distributed (ISIC, BUSI, Kvasir-SEG, PH2, CVC-ClinicDB, BUS-B, TN-SCUI, BTCV, "
        "KiTS23) to nnU-Net",
        description="Converts a dataset as its authors distribute it into $nnUNet_raw/DatasetXXX_Name, ready for "
        "nnUNetv2_plan_and_preprocess --verify_dataset_integrity. The folder is built in a temporary folder and "
        "renamed at the end: on any error nothing is left behind. See --list for the datasets.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--list", action="store_true", help="show the datasets, their expected layout and default IDs")
    datasets = parser.add_subparsers(dest="dataset", metavar="NAME")
    for name, spec in DATASETS.items():
        sub = datasets.add_parser(
            name,
            help=f"{spec.title} (default ID {spec.default_id})",
            description="\n".join(
                textwrap.fill(text, width=100, subsequent_indent="  ")
                for text in (
                    f"{spec.title}.",
                    "",
                    f"Expected layout: {spec.layout}",
                    f"Source: {spec.source}",
                    f"Licence: {spec.license}",
                )
            ),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(sub, spec)
        if spec.add_arguments is not None:  # options beyond the common ones (e.g. busi --include-normal)
            spec.add_arguments(sub)
        sub.set_defaults(func=run, list=False)
    parser.set_defaults(func=run)
