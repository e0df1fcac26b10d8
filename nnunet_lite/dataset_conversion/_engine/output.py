"""Where a dataset is written: output root, ID and target checks, the atomic dataset folder, stale temporary folders."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...atomic import move_into_place
from .errors import ConversionError, sigterm_raises

if TYPE_CHECKING:
    from .report import Report
    from .spec import ConvertOptions, DatasetSpec


def resolve_output_root(output_root: str | os.PathLike | None = None) -> Path:
    """The folder datasets are written to: ``output_root`` if given, else ``$nnUNet_raw``."""
    if output_root is None:
        from nnunetv2.paths import nnUNet_raw  # lazy _EnvPath in nnunetv2 2.8

        if not nnUNet_raw.is_set():
            raise ConversionError(
                "nnUNet_raw is not set, so there is nowhere to write the dataset",
                hint="export nnUNet_raw=/path/to/nnUNet_raw (see nnU-Net's documentation/setting_up_paths.md), "
                "or pass --output-root/-o",
            )
        output_root = os.fspath(nnUNet_raw)
    root = Path(output_root).expanduser()
    if root.exists() and not root.is_dir():
        raise ConversionError("output root is not a folder", root)
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def check_num_workers(num_workers: int | None) -> None:
    """None (the default) or a positive integer."""
    if num_workers is None:
        return
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConversionError(
            f"--num-workers must be a positive integer, got {num_workers!r}", hint="use 1 to convert in one process"
        )


def check_dataset_id(dataset_id: int) -> int:
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ConversionError(f"dataset ID must be an integer from 1 to 999, got {dataset_id!r}")
    return dataset_id


def _nnunet_folders(output_root: Path) -> list[Path]:
    """The output root plus nnU-Net's other data folders, where an ID clash would also break nnU-Net."""
    folders = [output_root]
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(var)
        if value and Path(value).is_dir() and Path(value).resolve() not in folders:
            folders.append(Path(value).resolve())
    return folders


def prepare_target(output_root: Path, folder_name: str, dataset_id: int, overwrite: bool, report: Report) -> None:
    """Before a conversion: clean up after killed runs, check the target (:func:`check_target`), and warn when
    ``overwrite`` replaces a dataset that nnU-Net has already planned and preprocessed."""
    remove_stale_partials(output_root, folder_name)
    target = check_target(output_root, folder_name, dataset_id, overwrite)
    from nnunetv2.paths import nnUNet_preprocessed

    if not target.exists() or not nnUNet_preprocessed.is_set():
        return
    preprocessed = Path(os.fspath(nnUNet_preprocessed)) / folder_name
    if preprocessed.is_dir():
        report.warnings.append(
            f"{preprocessed} holds plans, splits_final.json and preprocessed data made from the dataset this run "
            f"replaced; they are stale now: run nnUNetv2_plan_and_preprocess -d {dataset_id} "
            "--verify_dataset_integrity again (delete splits_final.json there first if the cases changed), and "
            "retrain models trained on the old data"
        )


def check_target(output_root: Path, folder_name: str, dataset_id: int, overwrite: bool) -> Path:
    """Raise if ``folder_name`` exists (and not ``overwrite``) or if another dataset already uses ``dataset_id``."""
    target = output_root / folder_name
    prefix = f"Dataset{dataset_id:03d}_"
    for folder in _nnunet_folders(output_root):
        for other in sorted(folder.glob(prefix + "*")):
            if other.name != folder_name and other.is_dir():
                raise ConversionError(
                    f"dataset ID {dataset_id} is already used by {other.name}; nnU-Net cannot tell two datasets "
                    "with one ID apart",
                    other,
                    hint=f"choose another ID with -d, or remove {other}",
                )
    if target.exists() and not overwrite:
        raise ConversionError(
            "the target dataset already exists", target, hint="pass --overwrite (overwrite=True) to replace it"
        )
    return target


@contextlib.contextmanager
def atomic_dataset_folder(output_root: Path, folder_name: str, dataset_id: int, overwrite: bool) -> Iterator[Path]:
    """Yield an empty hidden folder inside ``output_root``; on success it becomes ``output_root/folder_name``.

    On any exception (KeyboardInterrupt and SIGTERM included, see :func:`sigterm_raises`) the temporary folder is
    removed and nothing is left behind; what a killed run (``kill -9``) left is removed by the next run
    (:func:`remove_stale_partials`). An existing target is replaced only if ``overwrite``; it is moved aside first and
    deleted after the new folder is in place, so a failure never destroys it.
    """
    remove_stale_partials(output_root, folder_name)
    check_target(output_root, folder_name, dataset_id, overwrite)
    with sigterm_raises():
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.{_owner()}.", suffix=".partial", dir=output_root))
        try:
            yield tmp
            target = check_target(output_root, folder_name, dataset_id, overwrite)
            # the previous dataset waits in .<folder>.<owner>.*.old/dataset, where remove_stale_partials looks for it
            move_into_place(tmp, target, aside_prefix=f".{folder_name}.{_owner()}.", aside_name="dataset")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _owner() -> str:
    """``host-pid`` of this process, put into temporary folder names so that a later run can tell whether the
    process that made one still runs."""
    host = re.sub(r"[^A-Za-z0-9\-]+", "-", socket.gethostname().split(".")[0]) or "host"
    return f"{host}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


_REPORTED: set[Path] = set()  # foreign temporary folders already reported in this process


def remove_stale_partials(output_root: Path, folder_name: str) -> list[Path]:
    """Clean up the temporary folders of ``folder_name`` that a killed conversion left (``kill -9``, a crash).

    A folder is stale if a process of this host made it and no longer runs: a ``.partial`` folder is removed; an
    ``.old`` folder (the previous dataset, moved aside while the new one was renamed into place) is moved back if the
    dataset folder is missing, removed otherwise. Folders of a running process are kept; folders from another host
    or without an owner in the name (older versions) are reported on stderr.

    Returns:
        the folders removed or restored.
    """
    name = re.escape(folder_name)
    pattern = re.compile(rf"^\.{name}\.(?:(?P<host>[A-Za-z0-9\-]+)-(?P<pid>\d+)\.)?[^.]+\.(?P<kind>partial|old)$")
    here = _owner().rsplit("-", 1)[0]
    handled = []
    for path in sorted(output_root.glob(f".{folder_name}.*")):
        m = pattern.match(path.name)
        if m is None or not path.is_dir():
            continue
        if m["pid"] is None or m["host"] != here:
            if path in _REPORTED:
                continue
            _REPORTED.add(path)
            who = f"host {m['host']}" if m["host"] else "an earlier, interrupted run"
            print(
                f"note: {path} is a temporary folder from {who}; remove it if no conversion of {folder_name} is "
                "running there",
                file=sys.stderr,
            )
            continue
        if _process_alive(int(m["pid"])):
            continue  # another conversion of this dataset is running now
        target = output_root / folder_name
        if m["kind"] == "old" and (path / "dataset").is_dir() and not target.exists():
            os.replace(path / "dataset", target)
            action = f"restored {target} from"
        else:
            action = "removed"
        shutil.rmtree(path, ignore_errors=True)
        handled.append(path)
        print(f"note: {action} {path}, left by a killed conversion (process {m['pid']})", file=sys.stderr)
    return handled


def start_dataset(
    spec: DatasetSpec, options: ConvertOptions, cases: Sequence[Any], report: Report, pairs: str
) -> tuple[Path, str, list]:
    """The checks before anything is written: dataset ID, workers, output root and target, some training case.

    Returns:
        the output root, the dataset folder name and the training cases.
    """
    check_dataset_id(options.dataset_id)
    check_num_workers(options.num_workers)
    root = resolve_output_root(options.output_root)
    dataset_name = spec.folder(options.dataset_id)
    prepare_target(root, dataset_name, options.dataset_id, options.overwrite, report)
    training = [c for c in cases if c.subset == "Tr"]
    if not training:
        raise ConversionError("no training cases found", hint="check SOURCE: " + "; ".join(report.skipped or [pairs]))
    return root, dataset_name, training
