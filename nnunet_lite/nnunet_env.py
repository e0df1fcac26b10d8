"""nnU-Net's environment as nnunet_lite needs it: the trainer shim folder, the path variables and the export line.

The bottom floor of the package (standard library only): the startup hook imports it at every interpreter start.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

# The ONLY folder nnUNet_extTrainer points at (see nnunet_ext/nnunet_lite_trainers.py for why not trainers/).
SHIM_FOLDER = Path(__file__).resolve().parent / "nnunet_ext"
EXT_TRAINER_VAR = "nnUNet_extTrainer"
NNUNET_PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def export_line() -> str:
    """A bash line that appends the shim folder to nnUNet_extTrainer (keeps other entries)."""
    return f'export {EXT_TRAINER_VAR}="${{{EXT_TRAINER_VAR}:+${EXT_TRAINER_VAR}{os.pathsep}}}{SHIM_FOLDER}"'


def trainers_discoverable(environ: MutableMapping[str, str] | None = None) -> bool:
    """True if nnU-Net's trainer lookup sees the nnunet_lite trainers with this environment."""
    environ = os.environ if environ is None else environ
    return str(SHIM_FOLDER) in environ.get(EXT_TRAINER_VAR, "").split(os.pathsep)


def make_trainers_discoverable(environ: MutableMapping[str, str] | None = None) -> None:
    """Appends the shim folder to nnUNet_extTrainer (this process only); idempotent, keeps the user's entries."""
    environ = os.environ if environ is None else environ
    if not trainers_discoverable(environ):
        current = environ.get(EXT_TRAINER_VAR, "")
        environ[EXT_TRAINER_VAR] = os.pathsep.join(p for p in (current, str(SHIM_FOLDER)) if p)
