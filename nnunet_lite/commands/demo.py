"""``nnunet_lite demo``: train and compare lite networks against nnU-Net's default on a synthetic dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    try:
        run_demo(
            Path(args.work_dir),
            tuple(args.trainers),
            epochs=args.epochs,
            iterations=args.iterations,
            num_train=args.num_train,
            num_test=args.num_test,
            device=args.device,
            overwrite=args.overwrite,
            seed=args.seed,
        )
    except FileExistsError as e:
        print(f"nnunet_lite demo: {e}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..demo import DEFAULT_EPOCHS, DEFAULT_ITERATIONS, DEFAULT_TRAINERS

    parser = subparsers.add_parser(
        "demo",
        help="train lite networks and nnU-Net's default on a synthetic dataset and print a comparison table",
        description="Generates a synthetic 2D lesion dataset in --work-dir (its own nnUNet_raw/preprocessed/results; "
        "your datasets are never touched), plans and preprocesses it with nnU-Net, trains each trainer on fold 0 for "
        "the same short budget, predicts the test images and evaluates them with nnU-Net's evaluator.",
    )
    parser.add_argument("--work-dir", default="nnunet_lite_demo", help="folder for everything the demo writes")
    parser.add_argument("-tr", "--trainers", nargs="+", default=list(DEFAULT_TRAINERS), help="trainers to compare")
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help="epochs per trainer, same budget for all (default %(default)s)",
    )
    parser.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help="training iterations per epoch (default %(default)s)"
    )
    parser.add_argument("--num-train", type=int, default=60, help="synthetic training cases")
    parser.add_argument("--num-test", type=int, default=12, help="synthetic test cases")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if available")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --work-dir")
    parser.set_defaults(func=run)
