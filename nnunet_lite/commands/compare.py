"""``nnunet_lite compare``: per-case statistics, pooled metrics and cost of nnU-Net models, as md/csv/png."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it (recorded in comparison.md)."""
    parts = ["nnunet_lite", "compare", "-d", str(args.d), "-c", args.c]
    for flag, value in (("-tr", args.trainers), ("-p", args.p), ("-f", args.f), ("--test-folder", args.test_folder)):
        if value:
            parts += [flag, *value]
    if args.baseline:
        parts += ["--baseline", args.baseline]
    if args.stats_on != "cv":
        parts += ["--stats-on", args.stats_on]
    return " ".join(shlex.quote(str(p)) for p in parts)


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_folder
    from ..comparison.compare import run_compare
    from ..comparison.nnunet_io import ComparisonError, dataset_name
    from ..comparison.report import markdown, write_report
    from ..robustness.report import compare_columns  # results of `nnunet_lite robustness run`, when present

    try:
        name = dataset_name(args.d)
        output = Path(args.output_folder or f"comparison_{name}_{args.c}")
        if output.exists() and not args.overwrite:
            raise ComparisonError(f"{output} exists; pass --overwrite to replace it")
        with atomic_folder(output, overwrite=args.overwrite) as tmp:
            comparison = run_compare(
                name,
                args.c,
                trainers=args.trainers,
                plans=args.p,
                folds=args.f,
                baseline=args.baseline,
                test_folders=args.test_folder,
                stats_on=args.stats_on,
                n_resamples=args.bootstrap,
                seed=args.seed,
                evaluation_folder=tmp / "test_evaluations",
                extra_columns=compare_columns,
            )
            write_report(comparison, tmp, command_line(args))
    except ComparisonError as e:
        print(f"nnunet_lite compare: {e}", file=sys.stderr)
        return 1
    print(markdown(comparison))
    print(f"wrote {output}/comparison.md, comparison.csv, per_label.csv, per_case.csv and comparison.png")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare trained models per case (Dice/IoU, pooled metrics, Wilcoxon + Holm, bootstrap CI, cost)",
        description="Reads nnU-Net's results tree (fold_N/validation/summary.json of each TRAINER__PLANS__CONFIG "
        "folder), optional test-set predictions and zero-shot evaluations, and writes comparison.md, comparison.csv, "
        "per_label.csv, per_case.csv and comparison.png (Dice vs parameters) into --output-folder.",
    )
    parser.add_argument("-d", required=True, help="dataset ID or name")
    parser.add_argument("-c", default="2d", help="configuration (default 2d)")
    parser.add_argument("-tr", dest="trainers", nargs="+", default=None, help="trainers (default: all found)")
    parser.add_argument("-p", nargs="+", default=None, help="plans identifiers (default: all found)")
    parser.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds every model should have")
    parser.add_argument(
        "--baseline",
        default=None,
        help="model for paired tests; must have results (default: nnUNetTrainer if present, else the first model; "
        "the table says which)",
    )
    parser.add_argument(
        "--test-folder",
        nargs="+",
        default=[],
        metavar="PRED=LABELS",
        help="test-set predictions and reference labels; the prediction folder's name selects the model "
        "(trainer, TRAINER__PLANS or the model folder name)",
    )
    parser.add_argument("--stats-on", default="cv", help="cases of the paired tests: cv (default), test, 'zero-shot X'")
    parser.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("-o", "--output-folder", default=None, help="default: ./comparison_<dataset>_<config>")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(func=run)
