"""Read an nnU-Net checkpoint (``checkpoint_final.pth``) without letting it run code.

nnU-Net loads its checkpoints with ``torch.load(..., weights_only=False)``: a crafted file can execute anything when
unpickled. Where nnunet_lite reads a checkpoint itself (metadata for ``compare`` and ``export``, and before handing
one to nnU-Net's own loader), it uses ``weights_only=True`` with an allow-list of the few non-tensor types nnU-Net
stores: ``torch.device`` (in ``init_args``, allowed by torch already) and numpy scalars and dtypes (the logging lists
and ``_best_ema`` hold ``np.float64`` values in some nnU-Net versions). Anything else is refused with one line.

Two kinds of failure, because the study runner treats them differently: :class:`DamagedCheckpointError` (the bytes are
broken: truncated by a kill during ``torch.save``, corrupt, or not a PyTorch file at all), which may be set aside and
recomputed, and a plain :class:`CheckpointError` (missing, refused by the allow-list, or readable but not an nnU-Net
checkpoint), which must never be renamed or overwritten because the file itself may be valuable.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any


class CheckpointError(Exception):
    """A checkpoint that cannot be read safely: missing, truncated, not a checkpoint, or holding foreign objects."""

    damaged = False  # True only for DamagedCheckpointError: the file's bytes are broken


class DamagedCheckpointError(CheckpointError):
    """The file's bytes are broken (truncated, corrupt, not a PyTorch file): safe to set aside and recompute."""

    damaged = True


def _archive_intact(path: Path) -> bool:
    """Whether the file is a complete zip archive (torch.save's format) whose members all pass their CRC check.

    A load that fails on an intact archive is a refusal of its content (an unknown type, a newer format), not damage.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):
        return False


def _safe_globals() -> list:
    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return [scalar, np.dtype, *dtypes]


def _last_words(e: BaseException) -> str:
    """The informative part of torch's multi-line messages: the first sentence of the most specific line."""
    boilerplate = ("Weights only", "Check the", "Please file")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith(boilerplate)]
    text = lines[-1] if lines else type(e).__name__
    return f"{type(e).__name__}: {text.split('. ')[0].rstrip('.')}"


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint's dictionary, unpickled with ``weights_only=True`` and nnU-Net's allow-list.

    Raises:
        DamagedCheckpointError: truncated, corrupt or not a PyTorch file (one line naming the file and what to do).
        CheckpointError: missing, refused by the allow-list, or not an nnU-Net checkpoint (one line).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"{path}: refusing to unpickle {found.group(1)}, which nnU-Net checkpoints do not hold and which could "
                "run code; use checkpoints written by nnUNetv2_train"
            ) from None
        raise _unreadable(path, e) from None
    except Exception as e:  # damaged bytes surface as any of RuntimeError, EOFError, IndexError, KeyError, ...
        raise _unreadable(path, e) from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise CheckpointError(f"{path}: not an nnU-Net checkpoint (no network_weights); pass checkpoint_final.pth")
    return checkpoint


def _unreadable(path: Path, e: BaseException) -> CheckpointError:
    if _archive_intact(path):
        return CheckpointError(
            f"{path}: cannot load checkpoint although the file is intact ({_last_words(e)}); it may come from another "
            "PyTorch or nnU-Net version: load it with the versions that wrote it"
        )
    return DamagedCheckpointError(
        f"{path}: cannot read checkpoint: truncated, damaged or not a PyTorch file ({_last_words(e)}); copy it "
        "again or retrain this fold"
    )
