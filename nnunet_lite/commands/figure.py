"""``nnunet_lite figure``: qualitative comparison figure (cases x trainers, contours and per-case Dice)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from ..comparison.nnunet_io import ComparisonError
    from ..figure import make_figure

    output = Path(args.o)
    existing = [str(p) for p in (output.with_suffix(".png"), output.with_suffix(".pdf")) if p.exists()]
    try:
        if existing and not args.overwrite:
            raise ComparisonError(f"{existing} exist; pass --overwrite to replace them")
        fig, panels, files = make_figure(
            args.d,
            args.c,
            args.tr,
            output,
            fold=args.f,
            plans_name=args.p,
            cases=args.cases,
            ids=args.ids,
            baseline=args.baseline,
            set_name=args.set,
            corruption=args.corruption,
            severity=args.severity,
        )
    except ComparisonError as e:
        print(f"nnunet_lite figure: {e}", file=sys.stderr)
        return 1
    plt.close(fig)
    for p in panels:
        if p.trainer:
            print(f"{p.case}: {p.trainer} Dice {p.dice:.4f}")
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    # no import of ..figure here: it loads torch, which every nnunet_lite command would then pay for at start-up
    parser = subparsers.add_parser(
        "figure",
        help="qualitative figure: cases x (image + ground truth, each trainer's prediction with its Dice)",
        description="Reads nnU-Net's validation predictions of a fold (default) or a robustness set's predictions "
        "(--set, --corruption/--severity) and draws rows = cases, columns = image with ground truth, then each "
        "trainer's prediction contour with nnU-Net's per-case Dice. Writes PNG and vector PDF.",
    )
    parser.add_argument("-d", required=True, help="dataset ID or name")
    parser.add_argument("-c", default="2d", help="configuration (default 2d)")
    parser.add_argument("-tr", nargs="+", required=True, help="trainers, one column each")
    parser.add_argument("-f", default="0", help="fold (default 0)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["best", "median", "worst"],
        metavar="{best,median,worst,diff}",
        help="rows by the baseline's Dice (best, median, worst), or diff: largest difference baseline vs second "
        "trainer; checked against the figure module's selections",
    )
    parser.add_argument("--ids", nargs="+", default=None, help="explicit case IDs instead of --cases")
    parser.add_argument("--baseline", default=None, help="trainer that selects the cases (default: first of -tr)")
    parser.add_argument("--set", default=None, help="robustness set (its clean copy unless --corruption)")
    parser.add_argument("--corruption", default=None, help="corruption of the robustness set")
    parser.add_argument("--severity", type=int, default=None, help="severity 1-5 of --corruption")
    parser.add_argument("-o", required=True, help="output file (.png or .pdf; both are written)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)
