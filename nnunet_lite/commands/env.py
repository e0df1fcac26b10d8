"""``nnunet_lite env``: what a shell needs so that nnU-Net's own commands find the nnunet_lite trainers."""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from pathlib import Path

import nnunet_lite

SHIM_FOLDER = Path(nnunet_lite.__file__).resolve().parent / "nnunet_ext"
HOOK_NAME = "nnunet_lite_autoenv.pth"
# One line, executed by site at interpreter start; the try keeps a stale hook silent after an uninstall.
HOOK_LINE = 'import sys; exec("try:\\n import nnunet_lite._autoenv\\nexcept Exception:\\n pass")\n'
NNUNET_PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def export_line() -> str:
    """A bash line that appends the shim folder to nnUNet_extTrainer (keeps other entries)."""
    return f'export nnUNet_extTrainer="${{nnUNet_extTrainer:+$nnUNet_extTrainer{os.pathsep}}}{SHIM_FOLDER}"'


def extension_configured(environ: dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return str(SHIM_FOLDER) in environ.get("nnUNet_extTrainer", "").split(os.pathsep)


def hook_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / HOOK_NAME


def install_hook() -> Path:
    path = hook_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(HOOK_LINE)
    tmp.replace(path)
    return path


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
    state = "yes" if extension_configured() else "no (run the export line above, or: nnunet_lite env --install-hook)"
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
