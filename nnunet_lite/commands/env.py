"""``nnunet_lite env``: what a shell needs so that nnU-Net's own commands find the nnunet_lite trainers."""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from pathlib import Path

from ..atomic import atomic_write_text
from ..nnunet_env import NNUNET_PATH_VARS, export_line, trainers_discoverable

HOOK_NAME = "nnunet_lite_autoenv.pth"
# One line, executed by site at interpreter start; the try keeps a stale hook silent after an uninstall.
HOOK_LINE = 'import sys; exec("try:\\n import nnunet_lite._autoenv\\nexcept Exception:\\n pass")\n'


def hook_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / HOOK_NAME


def install_hook() -> Path:
    return atomic_write_text(hook_path(), HOOK_LINE)


def run(args: argparse.Namespace) -> int:
    if args.install_hook:
        path = install_hook()
        print(
            f"wrote {path}: every Python of {sys.prefix} now finds the nnunet_lite trainers "
            f"(remove with: nnunet_lite env --uninstall-hook)"
        )
        return 0
    if args.uninstall_hook:
        path = hook_path()
        if path.exists():
            path.unlink()
            print(f"removed {path}")
        else:
            print(f"no hook at {path}")
        return 0
    print(export_line())
    if args.quiet:
        return 0
    print()
    state = "yes" if trainers_discoverable() else "no (run the export line above, or: nnunet_lite env --install-hook)"
    print(f"# trainers visible to nnU-Net in this shell: {state}")
    print(f"# startup hook installed: {'yes' if hook_path().exists() else 'no'} ({hook_path()})")
    for var in NNUNET_PATH_VARS:
        value = os.environ.get(var)
        print(f"# {var}={value}" if value else f"# {var} is not set (see nnU-Net's setting_up_paths.md)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env",
        help="print the export line that lets nnU-Net's commands find the nnunet_lite trainers",
        description="Prints the bash line that appends nnunet_lite's trainer shim folder to nnUNet_extTrainer. "
        'Use it as: eval "$(nnunet_lite env --quiet)", or put it in your ~/.bashrc.',
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="print only the export line")
    group.add_argument(
        "--install-hook",
        action="store_true",
        help="zero configuration: install a startup hook into this environment's site-packages",
    )
    group.add_argument("--uninstall-hook", action="store_true", help="remove the startup hook")
    parser.set_defaults(func=run)
