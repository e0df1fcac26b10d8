"""``nnunet_lite study``: init / run / status / report of a comparison study (datasets x trainers x folds)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


class _StudyParser(argparse.ArgumentParser):
    """Takes the value of ``--snakemake-args`` as is, even when it starts with ``-`` (``--snakemake-args
    "--slurm-no-account"``): argparse would read a lone ``--option`` as an option of ours and fail."""

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 (argparse's signature)
        args = list(sys.argv[1:] if args is None else args)
        for i, arg in enumerate(args[:-1]):
            if arg == "--":
                break
            if arg == "--snakemake-args":
                args[i : i + 2] = [f"--snakemake-args={args[i + 1]}"]
                break
        return super().parse_known_args(args, namespace)


def _count(minimum: int, hint: str):  # noqa: ANN202
    """argparse type: an integer >= minimum, with a one-line message saying what to give."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r} ({hint})")
        return value

    return parse


def _snakemake_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:  # "No closing quotation", "No escaped character"
        from ..study.model import StudyError

        raise StudyError(
            f"--snakemake-args {text!r}: {e} (shell quoting, as on a command line); quote the whole value once, "
            'e.g. --snakemake-args "--retries 2"'
        ) from e


def _fail(error: Exception) -> int:
    print(f"nnunet_lite study: {error}" if "\n" not in str(error) else str(error), file=sys.stderr)
    return 1


def _load(path: str):
    if sys.version_info < (3, 11):
        raise RuntimeError("nnunet_lite study needs Python >= 3.11 (tomllib, Snakemake 9)")
    from ..study.study import Study

    return Study.load(Path(path))


def _write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)


def run_init(args: argparse.Namespace) -> int:
    from importlib.resources import files

    target = Path(args.study)
    if args.data_root is not None and not args.protocol:
        return _fail(ValueError("--data-root fills the sources of --protocol NAME; give --protocol too"))
    if args.protocol and args.example:
        return _fail(ValueError("give --example or --protocol NAME, not both"))
    if args.data_root is not None and not args.data_root.is_dir():
        return _fail(
            NotADirectoryError(f"--data-root {args.data_root}: no such folder; give the folder holding the downloads")
        )
    if args.protocol:
        from ..study.protocols import render

        written = render(args.protocol, target, args.data_root)
        targets = [(written.main, written.main_text), (written.ablations, written.ablations_text)]
    else:
        name = "example.toml" if args.example else "template.toml"
        targets = [(target, files("nnunet_lite.study").joinpath(name).read_text())]
    for path, _ in targets:
        if path.exists() and not args.overwrite:
            return _fail(FileExistsError(f"{path} exists; pass --overwrite to replace it"))
    for path, text in targets:
        _write(path, text)
    if args.protocol:
        print(
            f"wrote {written.main} (datasets, zero-shot pairs, main comparison) and {written.ablations} "
            f"(ablations; a study applies every trainer to every dataset, so they are their own study)"
        )
        if args.data_root is None:
            print("the source lines say which download goes where (or run again with --data-root DIR)")
        print(f"then: nnunet_lite study run {written.main} --dry-run (and the same for {written.ablations})")
        return 0
    what = "example study (synthetic data, minutes on a CPU)" if args.example else "study template"
    print(f"wrote {target}: {what}; edit it, then: nnunet_lite study run {target}")
    return 0


def run_run(args: argparse.Namespace) -> int:
    from ..study.model import StudyError
    from ..study.runner import RunOptions, run_study

    try:
        study = _load(args.study)
        if args.executor == "local" and (args.slurm_partition or args.slurm_account):
            raise StudyError("--slurm-partition and --slurm-account need --executor slurm")
        gpus = args.gpus
        if gpus is None:
            gpus = 0 if args.executor == "slurm" else _local_gpus()
        options = RunOptions(
            cores=args.cores,
            gpus=gpus,
            dry_run=args.dry_run,
            executor=args.executor,
            slurm_partition=args.slurm_partition,
            slurm_account=args.slurm_account,
            jobs=args.jobs,
            keep_going=args.keep_going,
            extra=_snakemake_args(args.snakemake_args),
        )
        return run_study(study, options)
    except (StudyError, RuntimeError) as e:
        return _fail(e)


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def run_status(args: argparse.Namespace) -> int:
    from ..study.model import StudyError
    from ..study.status import format_status, study_status

    try:
        rows = study_status(_load(args.study))
    except (StudyError, RuntimeError) as e:
        return _fail(e)
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..study.model import StudyError
    from ..study.report import write_study_report

    try:
        path = write_study_report(_load(args.study), n_resamples=args.bootstrap)
    except (StudyError, RuntimeError) as e:
        return _fail(e)
    print(path.read_text())
    print(f"wrote {path} (per-dataset tables, CSVs and plots in {path.parent})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..study.protocols import PROTOCOLS  # names only (no torch)

    parser = subparsers.add_parser(
        "study",
        help="run a whole comparison study (datasets x trainers x folds) locally or on SLURM, via Snakemake",
        description="One study file describes datasets, configurations, trainers, plans, folds, zero-shot pairs and "
        "per-step resources; `run` executes nnU-Net's own commands as a Snakemake workflow (resumable), `status` "
        "shows every training, `report` writes the study's comparison report.",
    )
    sub = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True, parser_class=_StudyParser)

    p = sub.add_parser("init", help="write a commented study file")
    p.add_argument("study", nargs="?", default="study.toml", help="file to write (default study.toml)")
    p.add_argument("--example", action="store_true", help="a small study on synthetic data that runs on a CPU")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=None,
        help="a paper's experiments under nnU-Net's protocol: FILE (datasets, zero-shot pairs, main comparison) and "
        "FILE_ablations.toml next to it (the paper's ablation trainers)",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --protocol: the folder holding the unpacked official downloads (ISIC2018/, Dataset_BUSI_with_GT/, "
        "...); default: placeholders saying what to put where",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=run_init)

    p = sub.add_parser("run", help="run (or continue) the study's workflow")
    p.add_argument("study", help="the study file (TOML)")
    p.add_argument(
        "--cores",
        type=_count(1, "CPU cores; leave it out to use all"),
        default=None,
        help="local CPU cores Snakemake may use (default: all)",
    )
    p.add_argument(
        "--gpus",
        type=_count(0, "0 runs on the CPU"),
        default=None,
        help="local GPUs, one training each (default: all visible)",
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="show the jobs that would run, run nothing")
    p.add_argument("--executor", choices=("local", "slurm"), default="local", help="where jobs run (default local)")
    p.add_argument("--slurm-partition", default=None, help="default partition of every job (study file overrides)")
    p.add_argument("--slurm-account", default=None, help="SLURM account of every job")
    p.add_argument(
        "--jobs", type=_count(1, "SLURM jobs queued at once"), default=100, help="SLURM: jobs queued at once"
    )
    p.add_argument("--keep-going", action="store_true", help="continue independent jobs after a failure")
    p.add_argument(
        "--snakemake-args",
        default="",
        metavar="ARGS",
        help="more Snakemake options, one string (e.g. --snakemake-args '--retries 2' or --snakemake-args "
        "--slurm-no-account)",
    )
    p.set_defaults(func=run_run)

    p = sub.add_parser("status", help="done / running / failed / interrupted / missing, per training")
    p.add_argument("study", help="the study file (TOML)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_status)

    p = sub.add_parser("report", help="write <work_dir>/report/study_report.md from the results so far")
    p.add_argument("study", help="the study file (TOML)")
    p.add_argument(
        "--bootstrap",
        type=_count(100, "the study file's report.bootstrap minimum; e.g. 10000"),
        default=None,
        help="bootstrap resamples (default: the study file's)",
    )
    p.set_defaults(func=run_report)
