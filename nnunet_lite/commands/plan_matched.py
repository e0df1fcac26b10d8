"""``nnunet_lite plan-matched``: a plans file whose nnU-Net U-Net has the parameter count of another network."""

from __future__ import annotations

import argparse
import json
import sys


def run(args: argparse.Namespace) -> int:
    from ..comparison.matched_plans import describe, plan_matched
    from ..comparison.nnunet_io import ComparisonError

    try:
        info = plan_matched(
            args.d,
            args.c,
            match=args.match,
            features=args.features,
            source_plans=args.p,
            plans_name=args.plans_name,
            multiple=args.round_to,
            minimum=args.min_features,
            overwrite=args.overwrite,
        )
    except ComparisonError as e:
        print(f"nnunet_lite plan-matched: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2) if args.json else describe(info))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan-matched",
        help="write nnU-Net plans whose U-Net is width-reduced to another network's parameter count",
        description="Copies a configuration of the dataset's plans with all U-Net widths (features_per_stage) scaled "
        "by one factor, searched so that the network has the parameter count closest to --match's network (or with "
        "first width --features). Topology, patch and batch size and the preprocessed data stay the same: train it "
        "with the stock nnUNetv2_train DATASET CONFIG FOLD -p NEW_PLANS.",
    )
    parser.add_argument("-d", required=True, help="dataset ID or name")
    parser.add_argument("-c", default="2d", help="configuration (default 2d)")
    parser.add_argument("-p", default="nnUNetPlans", help="source plans (default nnUNetPlans)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--match", default=None, help="trainer whose network's parameter count to match")
    group.add_argument("--features", type=int, default=None, help="first-stage width (all widths scale with it)")
    parser.add_argument("--plans-name", default=None, help="default <plans>_matched_<arch> or <plans>_features<N>")
    parser.add_argument("--round-to", type=int, default=4, help="widths are multiples of this (default 4)")
    parser.add_argument("--min-features", type=int, default=4, help="smallest width (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing plans file of that name")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)
