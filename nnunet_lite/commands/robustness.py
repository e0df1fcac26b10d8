"""``nnunet_lite robustness make | run | report``: Dice under photometric acquisition artefacts."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _make(args: argparse.Namespace) -> int:
    from ..robustness.make import make_corrupted_sets

    folder = make_corrupted_sets(
        args.d,
        args.suite,
        severities=args.severities,
        seed=args.seed,
        from_fold=args.from_fold,
        corruptions=args.corruptions,
        overwrite=args.overwrite,
    )
    print(f"wrote {folder} (manifest.json lists the cases, parameters and seconds per set)")
    skipped = json.loads((folder / "manifest.json").read_text()).get("skipped_corruptions", {})
    for name, why in skipped.items():
        print(f"left out {name}: {why if why.startswith('the images') else f'the images are not 8-bit and {why}'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..robustness.run import run_robustness

    rows = run_robustness(
        args.d,
        args.c,
        args.tr,
        folds=args.f,
        plans_name=args.p,
        set_name=args.set,
        device=args.device,
        use_mirroring=not args.disable_tta,
        checkpoint=args.chk,
    )
    predicted = [r for r in rows if r["status"] == "predicted"]
    for r in rows:
        print(
            f"{r['trainer']} fold {r['fold']} {r['set']}: Dice {r['foreground_mean_dice']:.4f} "
            f"({r['num_cases']} cases, {r['seconds_predict']:.1f} s"
            + (")" if r["status"] == "predicted" else ", done before)")
        )
    print(f"predicted {len(predicted)} sets, {len(rows) - len(predicted)} were done before")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..atomic import atomic_folder
    from ..comparison.nnunet_io import dataset_name
    from ..robustness.report import build_report, markdown, write_report

    report = build_report(
        args.d,
        args.c,
        args.tr,
        folds=args.f,
        plans_name=args.p,
        set_name=args.set,
        baseline=args.baseline,
        n_resamples=args.bootstrap,
        seed=args.seed,
    )
    output = Path(args.output_folder or f"robustness_{dataset_name(args.d)}_{args.c}_{report.set_name}")
    parts = ["nnunet_lite", "robustness", "report", "-d", args.d, "-c", args.c, "-tr", *args.tr, "-f", *args.f]
    parts += (["-p", args.p] if args.p != "nnUNetPlans" else []) + (["--set", args.set] if args.set else [])
    parts += ["--baseline", args.baseline] if args.baseline else []
    command = " ".join(shlex.quote(str(a)) for a in parts)
    with atomic_folder(output, overwrite=args.overwrite) as tmp:
        write_report(report, tmp, command)
    print(markdown(report))
    extra = ", robustness_artefacts.csv" if len(report.artefacts) else ""
    print(
        f"wrote {output}/robustness.md, robustness.csv, robustness_per_set.csv, robustness_per_case.csv{extra}, "
        "robustness.png"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from ..comparison.nnunet_io import ComparisonError

    try:
        return args.action(args)
    except (ComparisonError, FileExistsError) as e:
        print(f"nnunet_lite robustness {args.robustness_command}: {e}", file=sys.stderr)
        return 1


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", required=True, help="dataset ID or name")
    parser.add_argument("-c", default="2d", help="configuration (default 2d)")
    parser.add_argument("-tr", nargs="+", required=True, help="trainers (the first is the baseline of the report)")
    parser.add_argument("-f", nargs="+", default=["0"], help="folds, each evaluated separately (default 0)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--set", default=None, help="corrupted set (default: the dataset's only one)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..robustness.corruptions import SEVERITIES, SUITES

    parser = subparsers.add_parser(
        "robustness",
        help="Dice under photometric corruptions (blur, noise, JPEG, exposure, ...) and dermoscopy artefacts",
        description="make: write corrupted copies of the test images once (nnU-Net naming, under "
        "nnUNet_raw/<dataset>/robustness/<set>); run: predict and evaluate them with nnU-Net for each trainer "
        "(results under each model folder, resumable); report: clean vs corrupted Dice, relative drop, mCE, worst "
        "corruption, paired statistics, a Dice-vs-severity plot and, for the drawn dermoscopy artefacts (hair, ruler, "
        "ink_marker), the artefact false-positive rate.",
    )
    actions = parser.add_subparsers(dest="robustness_command", metavar="ACTION", required=True)

    make = actions.add_parser("make", help="write the corrupted copies of the test (or fold-validation) images")
    make.add_argument("-d", required=True, help="dataset ID or name")
    make.add_argument("--suite", required=True, choices=sorted(SUITES), help="corruption suite (per modality)")
    make.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES), help="subset of 1-5")
    make.add_argument("--corruptions", nargs="+", default=None, help="only these corruptions of the suite")
    make.add_argument("--seed", type=int, default=0, help="random seed (same seed, same pixels)")
    make.add_argument("--from-fold", type=int, default=None, help="use this fold's validation cases, not imagesTs")
    make.add_argument("--overwrite", action="store_true", help="replace an existing set")
    make.set_defaults(func=run, action=_make)

    predict = actions.add_parser("run", help="predict and evaluate every corrupted set with each trainer")
    _model_arguments(predict)
    predict.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint (default checkpoint_final.pth)")
    predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if available")
    predict.add_argument("--disable-tta", action="store_true", help="no test-time mirroring")
    predict.set_defaults(func=run, action=_run)

    report = actions.add_parser("report", help="tables and Dice-vs-severity plot of the run's results")
    _model_arguments(report)
    report.add_argument("--baseline", default=None, help="baseline trainer (default: the first of -tr)")
    report.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    report.add_argument("-o", "--output-folder", default=None, help="default ./robustness_<dataset>_<config>_<set>")
    report.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    report.set_defaults(func=run, action=_report)
