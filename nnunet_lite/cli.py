"""The ``nnunet_lite`` command: one entry point, one subcommand per module in ``nnunet_lite.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

# Each module defines add_parser(subparsers); the parser it adds sets ``func(args) -> int``.
SUBCOMMAND_MODULES = (
    "nnunet_lite.commands.env",
    "nnunet_lite.commands.demo",
    "nnunet_lite.commands.convert",
    "nnunet_lite.commands.profile",
    "nnunet_lite.commands.compare",
    "nnunet_lite.commands.plan_matched",
    "nnunet_lite.commands.zeroshot",
    "nnunet_lite.commands.export",
    "nnunet_lite.commands.predict",
    "nnunet_lite.commands.study",
    "nnunet_lite.commands.robustness",
    "nnunet_lite.commands.figure",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet_lite",
        description="Lightweight segmentation networks as nnU-Net v2 trainers, with tools for fair comparison.",
    )
    parser.add_argument("--version", action="version", version=f"nnunet_lite {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nnunet_lite convert --list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
