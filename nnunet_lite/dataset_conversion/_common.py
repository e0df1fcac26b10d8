"""Helpers shared by all dataset converters.

Dimension-agnostic parts (usable by 3D converters too):

- :class:`ConversionError`: the one exception type; names the offending file and says what to do.
- output handling: :func:`resolve_output_root`, :func:`atomic_dataset_folder` (build in a hidden temporary folder inside
  the output root, rename at the end, remove on any error; ``overwrite`` handling; dataset ID clashes).
- source discovery: :func:`require_source`, :func:`find_folders`, :func:`find_dirs`, :func:`list_files`.
- :func:`parallel_map` (spawn-safe process pool with a progress bar), :class:`Report` (skipped and ignored files,
  notes, warnings), :func:`write_dataset_json`, split files (:func:`load_split_file`, :func:`validate_splits`,
  :func:`write_splits`).

2D parts: :class:`Case2D`, :func:`load_image_array`, :func:`binarize_mask`, :func:`convert_case_2d` and the driver
:func:`convert_2d_dataset` that all 2D converters end with.

3D parts (NIfTI): :class:`Case3D`, :func:`read_nifti_header`, :func:`check_nifti_complete`, :func:`copy_nifti`
(lossless), :func:`read_geometry` and :func:`geometry_mismatch` (SimpleITK), :func:`convert_case_3d` and the driver
:func:`convert_3d_dataset` that the 3D converters end with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import nnunet_lite

T = TypeVar("T")
R = TypeVar("R")

CONVERTED_BY = f"nnunet_lite {nnunet_lite.__version__}"
# One channel convention for every 2D dataset, RGB or not (grey images are replicated to 3 channels): nnU-Net divides
# by 255 (RGBTo01Normalization) instead of z-scoring each image, so models apply across datasets (zero-shot).
CHANNELS_RGB: dict[str, str] = {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}
FILE_ENDING_2D = ".png"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LARGE_IMAGE_SIDE = 2048
# Files that come with the official downloads and are never cases; they are skipped without comment.
_QUIET_IGNORED = re.compile(r"^(license|attribution|readme)(\.txt|\.md)?$|^thumbs\.db$|^desktop\.ini$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------------


class ConversionError(Exception):
    """A problem with the input (or the output folder) that the user can fix.

    Args:
        message: what is wrong.
        path: the offending file or folder, if there is one.
        hint: what to do about it.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, hint: str | None = None) -> None:
        self.message = message
        self.path = None if path is None else Path(path)
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path is not None else self.message
        return f"{text}\n  -> {self.hint}" if self.hint else text

    def __reduce__(self):  # keep path and hint when the error crosses a process boundary
        return (type(self), (self.message, self.path, self.hint))


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, SLURM, container stop) turned into an exception, so that cleanup runs as for Ctrl-C."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` in the main thread (a second one is ignored during the
    cleanup). A handler someone else installed is left alone; outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------------------------------------------------
# output folder
# --------------------------------------------------------------------------------------------------------------------


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
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700 folders
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{folder_name}.{_owner()}.", suffix=".old", dir=output_root))
                os.replace(target, old / "dataset")
                try:
                    os.replace(tmp, target)
                except BaseException:
                    os.replace(old / "dataset", target)  # put the previous dataset back
                    raise
                finally:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
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


# --------------------------------------------------------------------------------------------------------------------
# source discovery
# --------------------------------------------------------------------------------------------------------------------


def require_source(source: str | os.PathLike) -> Path:
    """``source`` as an absolute Path; raise if it is missing, a file, or empty."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ConversionError("SOURCE does not exist", path, hint="pass the folder you unpacked the download into")
    if path.is_file():
        archive = path.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".rar", ".7z")
        hint = "unpack the archive first, then pass the folder" if archive else "pass a folder"
        raise ConversionError("SOURCE is a file, not a folder", path, hint=hint)
    if not any(_visible(p) for p in path.iterdir()):
        raise ConversionError("SOURCE is an empty folder", path, hint="pass the folder you unpacked the download into")
    return path.resolve()


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def norm_name(name: str) -> str:
    """Folder-name key that ignores case, spaces, hyphens and underscores (``Ground Truth`` == ``ground_truth``)."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


def iter_dirs(root: Path, max_depth: int = 3) -> Iterator[Path]:
    """``root`` and its sub-folders down to ``max_depth``, breadth first, sorted; no hidden or __MACOSX folders."""
    level = [root]
    for depth in range(max_depth + 1):
        nxt = []
        for d in level:
            yield d
            if depth < max_depth:
                try:
                    nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and _visible(p)))
                except OSError:
                    continue
        level = nxt


def child_dir(parent: Path, *names: str) -> Path | None:
    """The sub-folder of ``parent`` whose name matches one of ``names`` (see :func:`norm_name`), if any."""
    wanted = [norm_name(n) for n in names]
    try:
        children = sorted(p for p in parent.iterdir() if p.is_dir() and _visible(p))
    except OSError:
        return None
    for key in wanted:
        for child in children:
            if norm_name(child.name) == key:
                return child
    return None


def find_dirs(source: Path, predicate: Callable[[Path], bool], max_depth: int = 3) -> list[Path]:
    """Folders at or below ``source`` for which ``predicate`` holds, outermost matches only."""
    found: list[Path] = []
    for d in iter_dirs(source, max_depth):
        if any(d.is_relative_to(f) for f in found):
            continue
        if predicate(d):
            found.append(d)
    return found


def find_one_dir(source: Path, predicate: Callable[[Path], bool], what: str, expected: str, max_depth: int = 3) -> Path:
    """The single folder at or below ``source`` that satisfies ``predicate``; clear errors for none or several."""
    found = find_dirs(source, predicate, max_depth)
    if not found:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in source.iterdir() if _visible(p))
        shown = ", ".join(top[:12]) + (f", ... ({len(top)} entries)" if len(top) > 12 else "")
        raise ConversionError(
            f"no {what} found here or up to {max_depth} levels down; expected {expected}. Found: {shown or 'nothing'}",
            source,
            hint="pass the folder you unpacked the official download into (or the folder that contains it)",
        )
    if len(found) > 1:
        raise ConversionError(
            f"found {len(found)} {what}s: " + ", ".join(str(f) for f in found[:5]),
            source,
            hint="pass the one you want to convert as SOURCE",
        )
    return found[0]


def find_folders(source: Path, names: dict[str, Sequence[str]], max_depth: int = 3) -> dict[str, Path | None]:
    """Locate folders by name (case-insensitive, see :func:`norm_name`) at or below ``source``.

    Args:
        source: where to look.
        names: key -> accepted folder names.
        max_depth: how deep to look.

    Returns:
        key -> the folder, or None if not found. A folder nested in one of the same name (``X/X/`` as some unzip tools
        produce) resolves to the inner one.

    Raises:
        ConversionError: if one name matches several unrelated folders.
    """
    all_dirs = list(iter_dirs(source, max_depth))
    result: dict[str, Path | None] = {}
    for key, accepted in names.items():
        wanted = {norm_name(n) for n in accepted}
        matches = [d for d in all_dirs if norm_name(d.name) in wanted]
        # X/X: keep the innermost
        matches = [m for m in matches if not any(o != m and o.is_relative_to(m) for o in matches)]
        if len(matches) > 1:
            raise ConversionError(
                f"found several folders named {accepted[0]}: " + ", ".join(str(m) for m in matches[:5]),
                source,
                hint="pass the folder that contains only the copy you want to convert as SOURCE",
            )
        found = matches[0] if matches else None
        while found is not None and (inner := child_dir(found, found.name)) is not None:  # X/X/ beyond max_depth
            found = inner
        result[key] = found
    return result


def describe_found(found: dict[str, Path | None], labels: dict[str, str]) -> str:
    """``"A (found: /x/A), B (missing)"`` for error messages."""
    return ", ".join(f"{labels[k]} ({'found: ' + str(v) if v else 'missing'})" for k, v in found.items())


def list_files(folder: Path, report: Report | None = None) -> list[Path]:
    """Sorted visible files of ``folder``; hidden files (``.DS_Store``, ``._x``) are skipped and reported."""
    files = []
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.name.startswith("."):
            if report is not None:
                report.ignore(p, "hidden files")
            continue
        files.append(p)
    return files


def index_cases(
    folder: Path, report: Report, case_id_or_reason: Callable[[Path], tuple[str | None, str]]
) -> dict[str, Path]:
    """Case ID -> file for the files of ``folder``.

    ``case_id_or_reason(path)`` returns ``(case_id, "")``, or ``(None, reason)`` for a file that is no case (it is
    reported under ``reason``, e.g. "non-image files"). Two files with the same case ID are an error naming both.
    """
    found: dict[str, Path] = {}
    for path in list_files(folder, report):
        case_id, reason = case_id_or_reason(path)
        if case_id is None:
            report.ignore(path, reason)
            continue
        if case_id in found:
            raise ConversionError(
                f"duplicate case ID {case_id}: also {found[case_id].name}", path, hint="remove one of the two files"
            )
        found[case_id] = path
    return found


def has_images(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in IMAGE_SUFFIXES and _visible(p) for p in folder.iterdir() if p.is_file())
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What a conversion skipped, ignored, noticed; printed in the summary."""

    skipped: list[str] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)
    ignored_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ignore(self, path: Path, reason: str) -> None:
        """Count a file that is not part of any case (``LICENSE.txt`` and the like are not even counted)."""
        if _QUIET_IGNORED.match(path.name):
            return
        self.ignored[reason] += 1
        if len(self.ignored_examples[reason]) < 2:
            self.ignored_examples[reason].append(path.name)

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append(f"{what}: {reason}")


# --------------------------------------------------------------------------------------------------------------------
# parallel map
# --------------------------------------------------------------------------------------------------------------------


def default_num_workers() -> int:
    """``$nnUNet_def_n_proc`` (nnU-Net's own knob) if set, else min(8, CPU count)."""
    value = os.environ.get("nnUNet_def_n_proc")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    return max(1, min(8, os.cpu_count() or 1))


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it (and stops the workers), workers stay quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed with SIGKILL cannot stop its workers, and a worker whose result nobody reads blocks forever:
    # workers watch for being orphaned and exit.
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Cancel pending work and end the worker processes now, not after their current case."""
    processes = list((getattr(executor, "_processes", None) or {}).values())  # pid -> Process (CPython 3.9-3.13)
    for process in processes:
        if process.is_alive():
            process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join(timeout=10)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], num_workers: int | None = None, desc: str = "") -> list[R]:
    """``[fn(x) for x in items]`` with a progress bar, in ``num_workers`` spawned processes (in-process if 1).

    ``fn`` must be a module-level function and ``items`` picklable. The first exception (KeyboardInterrupt and
    :class:`Terminated` included) ends the workers at once and is re-raised (ConversionError keeps its path and hint
    across processes); workers ignore SIGINT, so a Ctrl-C in the terminal prints no worker tracebacks.
    """
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    items = list(items)
    check_num_workers(num_workers)
    num_workers = default_num_workers() if num_workers is None else num_workers
    bar = {"desc": desc, "unit": "case", "disable": None, "dynamic_ncols": True, "file": sys.stderr}
    if num_workers <= 1 or len(items) <= 1:
        return [fn(x) for x in tqdm(items, **bar)]
    results: list[Any] = [None] * len(items)
    executor = ProcessPoolExecutor(
        max_workers=min(num_workers, len(items)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
    )
    try:
        futures = {executor.submit(fn, x): i for i, x in enumerate(items)}
        for fut in tqdm(as_completed(futures), total=len(futures), **bar):
            results[futures[fut]] = fut.result()
    except BrokenProcessPool as e:
        _stop_workers(executor)
        raise ConversionError(
            "a worker process died without an error message (killed by the system, e.g. out of memory, or a crash "
            "in a file reader)",
            hint="run again with -np 1 (fewer processes, less memory); if it still dies, the last case the progress "
            "bar reached is the suspect",
        ) from e
    except BaseException:
        _stop_workers(executor)
        raise
    executor.shutdown(wait=True)
    return results


# --------------------------------------------------------------------------------------------------------------------
# dataset.json and splits
# --------------------------------------------------------------------------------------------------------------------


def write_dataset_json(
    folder: Path,
    *,
    channel_names: dict[str, str],
    labels: dict[str, int | tuple[int, ...]],
    num_training: int,
    file_ending: str,
    dataset_name: str,
    reference: str,
    license: str,
    description: str | None = None,
    regions_class_order: Sequence[int] | None = None,
    overwrite_image_reader_writer: str | None = None,
    **extra: Any,
) -> Path:
    """dataset.json via nnU-Net's own ``generate_dataset_json`` (with reference, licence and converted_by)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        os.fspath(folder),
        dict(channel_names),
        dict(labels),
        num_training,
        file_ending,
        regions_class_order=None if regions_class_order is None else tuple(regions_class_order),
        dataset_name=dataset_name,
        reference=reference,
        description=description,
        overwrite_image_reader_writer=overwrite_image_reader_writer,
        license=license,
        converted_by=CONVERTED_BY,
        **extra,
    )
    return folder / "dataset.json"


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t.casefold() for t in re.split(r"(\d+)", text)]


def read_id_list(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file (CRLF, BOM and any encoding tolerated)."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [line.strip().strip("\"'") for line in text.splitlines() if line.strip()]


def _split_list_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(train, val) lists of a split folder: ``*train*<k>.txt`` with ``*val*<k>.txt``, or train.txt with val.txt."""
    files = {p.name: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".csv", ".lst")}
    pairs = []
    for name in sorted(files, key=_natural_key):
        if "train" not in name.lower():
            continue
        i = name.lower().index("train")
        partner = next(
            (
                name[:i] + v + name[i + 5 :]
                for v in ("val", "valid", "validation")
                if name[:i] + v + name[i + 5 :] in files
            ),
            None,
        )
        if partner is None:
            raise ConversionError(
                "training list without validation list", files[name], hint=f"add {name[:i]}val{name[i + 5 :]}"
            )
        pairs.append((files[name], files[partner]))
    if not pairs:
        raise ConversionError(
            "no split lists found (expected *train*.txt with matching *val*.txt, or a splits_final.json)",
            folder,
        )
    return pairs


def load_split_file(
    path: str | os.PathLike, to_case_id: Callable[[str], str | None], case_ids: Iterable[str]
) -> list[dict[str, list[str]]]:
    """Read published split lists and map their IDs to this dataset's case IDs.

    Accepted:
        - an nnU-Net ``splits_final.json`` (list of ``{"train": [...], "val": [...]}``);
        - a folder with ``<x>train<k>.txt`` + ``<x>val<k>.txt`` pairs (CMUNeXt / LGMSNet) or ``train.txt`` + ``val.txt``
          (Kvasir-SEG MediaEval), one fold per pair, in natural order of the names;
        - one of those text files (its partner is found next to it).
    Lines are IDs as the publishers wrote them (``benign (12)``, ``ISIC_0000000``, ``1698``, file names with
    extensions, paths); ``to_case_id`` maps each to a case ID. A line holding several tokens (``image.jpg mask.jpg``)
    is matched by its first token that names a case.

    Raises:
        ConversionError: unreadable file, no lists, or IDs that are not cases of this dataset.
    """
    path = Path(path).expanduser()
    known = set(case_ids)
    if not path.exists():
        raise ConversionError("split file does not exist", path)
    if path.is_file() and path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
            folds_raw = [(path, path, list(f["train"]), list(f["val"])) for f in raw]
        except (ValueError, KeyError, TypeError) as e:
            raise ConversionError(
                f"not an nnU-Net splits file ({e})", path, hint='expected [{"train": [...], "val": [...]}, ...]'
            ) from e
    else:
        if path.is_dir():
            pairs = _split_list_pairs(path)
        else:
            lower = path.name.lower()
            if "train" not in lower and "val" not in lower:
                raise ConversionError(
                    "cannot tell whether this list is a training or a validation list",
                    path,
                    hint="name the files <x>train<k>.txt and <x>val<k>.txt, or pass their folder",
                )
            key = "train" if "train" in lower else "val"
            pairs = [pair for pair in _split_list_pairs(path.parent) if path in pair]
            if not pairs:
                raise ConversionError(f"no matching {'val' if key == 'train' else 'train'} list next to it", path)
        folds_raw = [(tr, va, read_id_list(tr), read_id_list(va)) for tr, va in pairs]

    def resolve(token: str) -> str | None:
        for candidate in [token] + re.split(r"[\s,;]+", token):
            cid = to_case_id(candidate) if candidate else None
            if cid is not None and cid in known:
                return cid
        return to_case_id(token)

    folds = []
    for train_src, val_src, train, val in folds_raw:
        fold = {}
        for key, tokens, src in (("train", train, train_src), ("val", val, val_src)):
            ids = [resolve(str(t)) for t in tokens]
            unknown = [str(t) for t, cid in zip(tokens, ids, strict=True) if cid is None or cid not in known]
            if unknown:
                raise ConversionError(
                    f"{len(unknown)} of {len(tokens)} IDs in the {key} list are not among the {len(known)} cases "
                    f"found in SOURCE, e.g. {', '.join(repr(u) for u in unknown[:3])}",
                    src,
                    hint="the split lists must belong to this dataset, and SOURCE must hold all cases they name",
                )
            fold[key] = ids
        folds.append(fold)
    return folds


def validate_splits(splits: Sequence[dict[str, list[str]]], training_ids: Iterable[str], report: Report) -> list[dict]:
    """Check folds against the training cases: no unknown IDs, no overlap, no empty side; sorted, de-duplicated."""
    training = set(training_ids)
    clean = []
    for k, fold in enumerate(splits):
        train, val = sorted(set(fold["train"])), sorted(set(fold["val"]))
        for key, ids in (("train", train), ("val", val)):
            unknown = [i for i in ids if i not in training]
            if unknown:
                raise ConversionError(
                    f"fold {k}: {len(unknown)} {key} IDs are not training cases of this dataset, e.g. {unknown[:3]}",
                    hint="check the split lists and that SOURCE holds every case they name",
                )
            if not ids:
                raise ConversionError(f"fold {k} has no {key} cases", hint="check the split lists")
        overlap = set(train) & set(val)
        if overlap:
            raise ConversionError(
                f"fold {k}: {len(overlap)} cases are in both train and val, e.g. {sorted(overlap)[:3]}"
            )
        uncovered = training - set(train) - set(val)
        if uncovered:
            report.warnings.append(
                f"fold {k}: {len(uncovered)} training cases are in neither train nor val (nnU-Net will not use "
                f"them in this fold), e.g. {sorted(uncovered)[:3]}"
            )
        clean.append({"train": train, "val": val})
    return clean


SPLITS_DIR = Path(__file__).resolve().parent / "splits"
NNUNET_SPLIT = "nnunet"


def check_split_args(
    split: str,
    split_file: str | os.PathLike | None,
    choices: Iterable[str],
    with_file: Iterable[str] = (NNUNET_SPLIT,),
) -> None:
    """``split`` must be one of ``choices``; ``split_file`` only goes with the splits in ``with_file``."""
    choices = list(choices)
    if split not in choices:
        raise ConversionError(f"unknown split {split!r} for this dataset; choose one of: {', '.join(choices)}")
    if split_file is not None and split not in with_file:
        raise ConversionError(f"--split {split} and --split-file exclude each other; pass one of them")


def write_splits(folder: Path, splits: Sequence[dict[str, list[str]]]) -> Path:
    """``splits_final.json`` next to dataset.json; nnU-Net 2.8 copies it to nnUNet_preprocessed when planning."""
    path = folder / "splits_final.json"
    path.write_text(json.dumps(list(splits), indent=1) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------------
# 2D: reading, binarising, writing
# --------------------------------------------------------------------------------------------------------------------


def _read_tiff(path: Path) -> np.ndarray:
    import logging

    import tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # tifffile logs broken headers and returns nothing; we raise instead
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ValueError("no image in the file")
            arr = tif.pages[0].asarray()
    except Exception as e:  # tifffile raises TiffFileError, ValueError, KeyError, ... on broken files
        raise ConversionError(
            f"cannot read TIFF ({type(e).__name__}: {e})",
            path,
            hint="the file is damaged or not a TIFF; re-download it",
        ) from e
    finally:
        logger.setLevel(level)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):  # planar configuration
        arr = np.moveaxis(arr, 0, -1)
    if arr.size == 0:
        raise ConversionError("cannot read TIFF (empty image)", path, hint="the file is damaged; re-download it")
    return np.ascontiguousarray(arr)


def load_image_array(path: Path) -> np.ndarray:
    """Decoded pixels of a PNG/JPEG/BMP/TIFF as stored, (H, W) or (H, W, C).

    TIFFs go through tifffile (CVC-ClinicDB's RGB TIFFs carry a header Pillow rejects); 1-bit images become bool
    arrays; palette images are expanded to RGB(A); CMYK/YCbCr become RGB.
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "PA":
                im = im.convert("RGBA")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ConversionError(
            f"cannot read image ({type(e).__name__}: {e})",
            path,
            hint="the file is truncated, damaged or not an image; re-download or remove it",
        ) from e


def to_rgb(arr: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 and whether the source was grey (1 channel, or 3 equal channels)."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise ConversionError(
            f"{arr.dtype} pixels; only 8-bit images are supported",
            path,
            hint="convert the image to 8 bits per channel first",
        )
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # grey (+ alpha)
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2), True
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = np.ascontiguousarray(arr[..., :3])
        grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        return rgb, grey
    raise ConversionError(f"unsupported image shape {arr.shape}", path, hint="expected a grey or RGB(A) image")


# Threshold mode (lossy or anti-aliased masks): what counts as compression noise rather than a grey region or colour.
# Measured on the real Kvasir-SEG (JPEG) and CVC-ClinicDB (TIFF) masks and on synthetic JPEG masks down to quality 30:
# every pixel between a quarter and three quarters of the range lies within 3 px of both a black and a white pixel.
MASK_GREY_BAND = (0.25, 0.75)  # of the value range: values strictly inside are "grey" (63..192 for 8 bits)
MASK_EDGE_RADIUS = 3  # px: grey or coloured pixels this close to both black and white are edge noise
MASK_NOISE_PIXELS = 16  # grey or coloured pixels away from edges tolerated per mask (isolated JPEG ringing)
MASK_EDGE_SHARE = 1 / 3  # grey pixels may fill at most this share of the strip along black/white edges


def _distinct(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    return np.unique(arr)


def _grey_band(grey: np.ndarray) -> tuple[int, int]:
    """Values strictly between these two are grey (8-bit range, or 16-bit if the mask uses it)."""
    top = 255 if grey.max(initial=0) <= 255 else 65535
    low = int(MASK_GREY_BAND[0] * top)
    return low, top - low


def _away_from_edges(grey: np.ndarray) -> np.ndarray:
    """Pixels that are not within MASK_EDGE_RADIUS of both a black and a white pixel."""
    from scipy import ndimage

    low, high = _grey_band(grey)
    window = 2 * MASK_EDGE_RADIUS + 1
    near_black = ndimage.maximum_filter(grey <= low, size=window)
    near_white = ndimage.maximum_filter(grey >= high, size=window)
    return ~(near_black & near_white)


def _check_colours(rgb: np.ndarray, path: Path, grey: np.ndarray | None) -> None:
    """Raise if a colour mask holds more than one foreground colour (labels that would be merged into one).

    ``grey`` None: lossless mask, exact colours. Otherwise (thresholded, possibly lossy) colours are told apart by
    which channels are above half range, ignoring pixels along black/white edges and a few noise pixels.
    """
    if grey is None:
        codes = (rgb[..., 0].astype(np.int64) << 32) | (rgb[..., 1].astype(np.int64) << 16) | rgb[..., 2]
        colours, counts = np.unique(codes[codes != 0], return_counts=True)
        found = [
            (tuple(int(c >> s) & 0xFFFF for s in (32, 16, 0)), int(n)) for c, n in zip(colours, counts, strict=True)
        ]
    else:
        half = (255 if rgb.max(initial=0) <= 255 else 65535) // 2
        chroma = rgb.max(axis=2).astype(np.int64) - rgb.min(axis=2)
        if np.count_nonzero(chroma > half // 2) <= MASK_NOISE_PIXELS:
            return  # black and white (or grey)
        hard = _away_from_edges(grey)
        bits = (rgb > half).astype(np.int64) @ np.array([4, 2, 1])
        colours, counts = np.unique(bits[(bits != 0) & hard], return_counts=True)
        found = [
            (tuple(int(v) for v in np.median(rgb[(bits == c) & hard], axis=0)), int(n))
            for c, n in zip(colours, counts, strict=True)
            if n > MASK_NOISE_PIXELS
        ]
    if len(found) > 1:
        shown = ", ".join(f"RGB{c} ({n} px)" for c, n in sorted(found, key=lambda t: -t[1])[:4])
        raise ConversionError(
            f"mask has {len(found)} foreground colours: {shown}; merging them would mix different labels",
            path,
            hint="this dataset has one foreground label: check that this is the dataset's original mask, or save "
            "the structure you want as a black-and-white mask",
        )


def _check_grey_band(grey: np.ndarray, path: Path, threshold: int) -> None:
    """Raise unless the grey pixels of a thresholded mask are edge noise of a black-and-white mask."""
    low, high = _grey_band(grey)
    mid = (grey > low) & (grey < high)
    n_mid = int(np.count_nonzero(mid))
    if n_mid == 0:
        return
    away = _away_from_edges(grey)
    n_away = int(np.count_nonzero(mid & away))
    strip = grey.size - int(np.count_nonzero(away))
    if n_away > MASK_NOISE_PIXELS or n_mid > MASK_EDGE_SHARE * strip:
        raise ConversionError(
            f"mask has {n_mid} grey pixels ({100 * n_mid / grey.size:.1f} %) with values between {low:g} and "
            f"{high:g}, {n_away} of them more than {MASK_EDGE_RADIUS} px from a black/white edge: a grey band or "
            f"a soft mask, not compression noise (a few pixels along edges, at most {MASK_NOISE_PIXELS} elsewhere); "
            f"the threshold {threshold} would silently decide which side the band falls on",
            path,
            hint="check that this is the dataset's original mask; if the grey region means something, save a "
            "black-and-white mask that says which side it belongs to and convert again",
        )


def binarize_mask(arr: np.ndarray, path: Path, threshold: int | None = None) -> np.ndarray:
    """A {0, 1} uint8 mask.

    Args:
        arr: decoded mask, (H, W) or (H, W, C); colour masks must have a single foreground colour and are reduced
            with the channel maximum (alpha dropped).
        path: for error messages.
        threshold: None: the mask must be binary (0 and one other value, e.g. 0/255, 0/1, 1-bit) and every non-zero
            pixel is foreground. An int: pixels > threshold are foreground (lossy JPEG masks, anti-aliased edges);
            masks whose maximum is 1 are read as 0/1. Grey values (between a quarter and three quarters of the
            range) are accepted only as edge noise: next to both black and white, a few pixels in all
            (``MASK_EDGE_RADIUS``, ``MASK_NOISE_PIXELS``, ``MASK_EDGE_SHARE``).

    Raises:
        ConversionError: non-binary values where a binary mask is expected, a grey band, or several colours.
    """
    colour = None
    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels in (3, 4):
            colour = arr[..., :3]
        arr = arr[..., : 1 if channels == 2 else 3 if channels == 4 else channels].max(axis=2)
    if arr.ndim != 2:
        raise ConversionError(f"unsupported mask shape {arr.shape}", path)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if threshold is None:
        values = _distinct(arr)
        if np.count_nonzero(values) > 1:
            shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            raise ConversionError(
                f"mask is not binary: {len(values)} distinct values ({shown}); expected 0 and one foreground value",
                path,
                hint="check that this is the original mask of the distribution; if it is anti-aliased or was saved "
                "lossily, pass --mask-threshold 127 to treat values > 127 as foreground",
            )
        if colour is not None:
            _check_colours(colour, path, None)
        return (arr != 0).astype(np.uint8)
    if arr.max(initial=0) <= 1:
        return (arr > 0).astype(np.uint8)
    if colour is not None:
        _check_colours(colour, path, arr)
    if len(_distinct(arr)) > 2:  # 0/255 (or 0/v) masks need no check
        _check_grey_band(arr, path, threshold)
    return (arr > threshold).astype(np.uint8)


@dataclass(frozen=True)
class Case2D:
    """One image with its mask(s). Several masks are OR-merged (BUSI multi-lesion cases).

    Attributes:
        case_id: nnU-Net case identifier (no spaces or parentheses).
        image: the source image.
        masks: the source mask(s); all must have the image's size.
        subset: "Tr" (imagesTr/labelsTr) or "Ts" (imagesTs/labelsTs).
        part: the official subset it came from ("training", "validation", "test", ...).
        group: class or other grouping for the summary (e.g. "benign"), optional.
    """

    case_id: str
    image: Path
    masks: tuple[Path, ...]
    subset: str = "Tr"
    part: str = "training"
    group: str | None = None


@dataclass(frozen=True)
class Options2D:
    """How cases are written: ``resize`` to NxN (None: native) and the mask rule (see :func:`binarize_mask`)."""

    resize: int | None = None
    mask_threshold: int | None = None
    compress_level: int = 6


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    subset: str
    part: str
    group: str | None
    size: tuple[int, int]  # (H, W) of the source
    out_size: tuple[int, int]
    foreground: int  # foreground pixels written
    grey: bool
    digest: str  # hash of the decoded source pixels
    image: str


def _save_png(arr: np.ndarray, path: Path, compress_level: int) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG", compress_level=compress_level)


def _describe_size_mismatch(image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> str:
    text = f"mask is {mask_hw[1]}x{mask_hw[0]} (WxH) but the image is {image_hw[1]}x{image_hw[0]}"
    if image_hw == mask_hw[::-1]:
        text += "; width and height are swapped (an EXIF orientation tag on the image?)"
    return text


def _naming_the_case(convert: Callable[[Any, Path, Any], R], case: Case2D | Case3D, out_dir: Path, options: Any) -> R:
    """Runs ``convert(case, out_dir, options)``; any unexpected exception becomes a ConversionError naming the case."""
    try:
        return convert(case, out_dir, options)
    except ConversionError:
        raise
    except Exception as e:
        raise ConversionError(
            f"unexpected {type(e).__name__} while converting case {case.case_id}: {e}", case.image
        ) from e


def convert_case_2d(job: tuple[Case2D, Path, Options2D]) -> CaseResult:
    """Worker: read, check, binarise, OR-merge, optionally resize, and write one case as lossless PNG."""
    return _naming_the_case(_convert_case_2d, *job)


def _convert_case_2d(case: Case2D, out_dir: Path, options: Options2D) -> CaseResult:
    from PIL import Image

    rgb, grey = to_rgb(load_image_array(case.image), case.image)
    hw = rgb.shape[:2]
    digest = hashlib.blake2b(rgb.tobytes() + str(rgb.shape).encode(), digest_size=16).hexdigest()
    mask = np.zeros(hw, dtype=np.uint8)
    for mask_path in case.masks:
        m = binarize_mask(load_image_array(mask_path), mask_path, options.mask_threshold)
        if m.shape != hw:
            raise ConversionError(
                _describe_size_mismatch(hw, m.shape),
                mask_path,
                hint=f"image and mask must have the same size; check that it belongs to {case.image.name}",
            )
        mask |= m
    if options.resize:
        n = options.resize
        rgb = np.asarray(Image.fromarray(rgb).resize((n, n), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((n, n), Image.Resampling.NEAREST))
    _save_png(rgb, out_dir / f"images{case.subset}" / f"{case.case_id}_0000.png", options.compress_level)
    _save_png(mask, out_dir / f"labels{case.subset}" / f"{case.case_id}.png", options.compress_level)
    return CaseResult(
        case_id=case.case_id,
        subset=case.subset,
        part=case.part,
        group=case.group,
        size=(int(hw[0]), int(hw[1])),
        out_size=(int(mask.shape[0]), int(mask.shape[1])),
        foreground=int(np.count_nonzero(mask)),
        grey=grey,
        digest=digest,
        image=str(case.image),
    )


def pair_files(
    images: dict[str, Path],
    masks: dict[str, list[Path]],
    image_dir: Path,
    mask_dir: Path,
    expected_mask: Callable[[Path], str],
) -> list[tuple[str, Path, tuple[Path, ...]]]:
    """Match images to masks by key; raise naming the files if an image has no mask or a mask has no image."""
    missing = sorted(k for k in images if k not in masks)
    if missing:
        first = images[missing[0]]
        raise ConversionError(
            f"{len(missing)} image(s) without mask, e.g. {first.name} (expected {mask_dir / expected_mask(first)})",
            first,
            hint="restore the missing masks from the official download, or remove these images from SOURCE",
        )
    extra = sorted(k for k in masks if k not in images)
    if extra:
        first = masks[extra[0]][0]
        raise ConversionError(
            f"{len(extra)} mask(s) without image, e.g. {first.name} (no matching image in {image_dir})",
            first,
            hint="restore the missing images from the official download, or remove these masks from SOURCE",
        )
    return [(k, images[k], tuple(sorted(masks[k]))) for k in sorted(images)]


def check_unique_ids(cases: Sequence[Case2D]) -> None:
    """Raise if two source files map to the same case ID."""
    seen: dict[str, Case2D] = {}
    for case in cases:
        if case.case_id in seen:
            raise ConversionError(
                f"duplicate case ID {case.case_id}: also produced by {seen[case.case_id].image}",
                case.image,
                hint="SOURCE holds two copies of this case (e.g. different case or extension of the file name, or "
                "the same file in two folders); remove one",
            )
        seen[case.case_id] = case


def sanitize_id(text: str) -> str:
    """A case ID from a file stem: letters, digits, '-' and '_' only (``"benign (1)"`` -> ``"benign_1"``)."""
    cleaned = re.sub(r"[^A-Za-z0-9\-]+", "_", text).strip("_")
    if not cleaned:
        raise ConversionError(f"cannot make a case ID from {text!r}")
    return cleaned


# --------------------------------------------------------------------------------------------------------------------
# 2D driver and summary
# --------------------------------------------------------------------------------------------------------------------


def _size_text(sizes: Sequence[tuple[int, int]]) -> str:
    if not sizes:
        return "-"
    areas = [h * w for h, w in sizes]
    order = np.argsort(areas)
    lo, mid, hi = sizes[order[0]], sizes[order[len(order) // 2]], sizes[order[-1]]
    distinct = len(set(sizes))
    return f"min {lo[1]}x{lo[0]}, median {mid[1]}x{mid[0]}, max {hi[1]}x{hi[0]} (WxH; {distinct} distinct)"


def convert_2d_dataset(
    *,
    name: str,
    folder_name: str,
    dataset_id: int,
    cases: Sequence[Case2D],
    label_name: str,
    reference: str,
    license: str,
    description: str,
    report: Report,
    options: Options2D,
    splits: Sequence[dict[str, list[str]]] | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    output_root: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    check_results: Callable[[Sequence[CaseResult], Report], None] | None = None,
    verbose: bool = True,
) -> Path:
    """Write ``output_root/DatasetXXX_<folder_name>`` from ``cases`` atomically and print a summary.

    ``check_results(results, report)`` may add notes or warnings after the cases are written, or raise
    ConversionError to abort (nothing is left behind then).

    Returns:
        the dataset folder.
    """
    check_dataset_id(dataset_id)
    check_num_workers(num_workers)
    if options.resize is not None and (not isinstance(options.resize, int) or options.resize < 8):
        raise ConversionError(f"--resize must be an integer >= 8, got {options.resize!r}")
    t = options.mask_threshold
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 0 < t <= 255):
        raise ConversionError(
            f"--mask-threshold must be an integer from 1 to 255 (8-bit mask values), got {t!r}",
            hint="values > T become foreground; 127 suits lossy 0/255 masks",
        )
    root = resolve_output_root(output_root)
    dataset_name = f"Dataset{dataset_id:03d}_{folder_name}"
    prepare_target(root, dataset_name, dataset_id, overwrite, report)
    training = [c for c in cases if c.subset == "Tr"]
    if not training:
        raise ConversionError(
            "no training cases found", hint="check SOURCE: " + "; ".join(report.skipped or ["no image/mask pairs"])
        )
    check_unique_ids(cases)
    if splits is not None:
        splits = validate_splits(splits, [c.case_id for c in training], report)

    with atomic_dataset_folder(root, dataset_name, dataset_id, overwrite) as tmp:
        subsets = sorted({c.subset for c in cases})
        for subset in subsets:
            (tmp / f"images{subset}").mkdir()
            (tmp / f"labels{subset}").mkdir()
        results: list[CaseResult] = parallel_map(
            convert_case_2d, [(c, tmp, options) for c in cases], num_workers, desc=f"{dataset_name}"
        )
        _check_foreground(results, options, report)
        if check_results is not None:
            check_results(results, report)
        test = [r for r in results if r.subset == "Ts"]
        parts_ts = sorted({r.part for r in test})
        write_dataset_json(
            tmp,
            channel_names=CHANNELS_RGB,
            labels={"background": 0, label_name: 1},
            num_training=len(training),
            file_ending=FILE_ENDING_2D,
            dataset_name=dataset_name,
            reference=reference,
            license=license,
            description=description,
            numTest=len(test),
            nnunet_lite={
                "converter": name,
                "resize": options.resize,
                "mask_rule": "binary (0 and one value)"
                if options.mask_threshold is None
                else f"value > {options.mask_threshold}",
                "channels": "RGB uint8, grey sources replicated to 3 channels",
                **(settings or {}),
            },
        )
        if test:
            sets = {part: sorted(r.case_id for r in test if r.part == part) for part in parts_ts}
            (tmp / "test_sets.json").write_text(json.dumps(sets, indent=1) + "\n", encoding="utf-8")
        if splits is not None:
            write_splits(tmp, splits)

    target = root / dataset_name
    if verbose:
        print(format_summary(target, results, report, options, label_name, splits))
    return target


def _check_foreground(results: Sequence[CaseResult], options: Options2D, report: Report) -> None:
    """Refuse a dataset whose masks all came out empty or all full (a wrong threshold or mask rule); warn about
    single full masks."""
    rule = "binary masks" if options.mask_threshold is None else f"--mask-threshold {options.mask_threshold}"
    full = [r.case_id for r in results if r.foreground == r.out_size[0] * r.out_size[1]]
    if results and all(r.foreground == 0 for r in results):
        raise ConversionError(
            f"all {len(results)} masks are empty (no foreground pixel) with {rule}",
            hint="check the masks and the threshold: values > T are foreground (127 for 0/255 masks)",
        )
    if results and len(full) == len(results):
        raise ConversionError(
            f"all {len(results)} masks are entirely foreground with {rule}",
            hint="check the masks and the threshold: values > T are foreground (127 for 0/255 masks)",
        )
    if full:
        report.warnings.append(
            f"{len(full)} masks are entirely foreground (inverted or blank masks?), e.g. {', '.join(full[:3])}"
        )


def convert_registered_2d(
    name: str,
    cases: Sequence[Case2D],
    report: Report,
    *,
    label_name: str,
    reference: str,
    case_id: Callable[[str], str | None],
    dataset_id: int,
    split: str,
    split_file: str | os.PathLike | None,
    resize: int | None,
    mask_threshold: int | None,
    overwrite: bool,
    num_workers: int | None,
    output_root: str | os.PathLike | None,
    verbose: bool,
    splits: Sequence[dict[str, list[str]]] | None = None,
    settings: dict[str, Any] | None = None,
    check_results: Callable[[Sequence[CaseResult], Report], None] | None = None,
) -> Path:
    """:func:`convert_2d_dataset` for a dataset of ``DATASETS``, with the arguments every 2D converter shares.

    Folder name, licence and description come from the dataset's spec; ``splits`` built by the converter for
    ``split`` win, otherwise ``split_file`` (if given) is read with ``case_id`` against the training cases.
    """
    from . import DATASETS

    spec = DATASETS[name]
    if splits is None and split_file is not None:
        splits = load_split_file(split_file, case_id, [c.case_id for c in cases if c.subset == "Tr"])
    return convert_2d_dataset(
        name=name,
        folder_name=spec.folder_name,
        dataset_id=dataset_id,
        cases=cases,
        label_name=label_name,
        reference=reference,
        license=spec.license,
        description=spec.title,
        report=report,
        options=Options2D(resize=resize, mask_threshold=mask_threshold),
        splits=splits,
        overwrite=overwrite,
        num_workers=num_workers,
        output_root=output_root,
        settings={"split": "split file" if split_file is not None else split, **(settings or {})},
        check_results=check_results,
        verbose=verbose,
    )


def format_summary(
    target: Path,
    results: Sequence[CaseResult],
    report: Report,
    options: Options2D,
    label_name: str,
    splits: Sequence[dict] | None,
) -> str:
    lines = [f"wrote {target}"]
    for subset, folders in (("Tr", "imagesTr/labelsTr"), ("Ts", "imagesTs/labelsTs")):
        rs = [r for r in results if r.subset == subset]
        if not rs:
            continue
        parts = Counter(r.part for r in rs)
        groups = Counter(r.group for r in rs if r.group)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(parts.items()))
        if 0 < len(groups) <= 6:
            detail += "; " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items()))
        elif groups:
            detail += f"; {len(groups)} groups ({', '.join(sorted(groups)[:2])}, ...)"
        lines.append(f"  {folders}: {len(rs)} cases ({detail})")
    for item in report.skipped:
        lines.append(f"  skipped: {item}")
    for reason, n in sorted(report.ignored.items()):
        lines.append(f"  ignored: {n} {reason} (e.g. {', '.join(report.ignored_examples[reason])})")
    empty = [r.case_id for r in results if r.foreground == 0]
    lines.append(
        f"  labels: background 0, {label_name} 1; {len(results) - len(empty)} cases with {label_name}, "
        f"{len(empty)} empty" + (f" (e.g. {', '.join(empty[:3])})" if empty else "")
    )
    grey = sum(r.grey for r in results)
    lines.append(
        f"  images: 3 channels rgb_to_0_1; {grey} grey sources replicated, {len(results) - grey} colour; "
        f"source sizes {_size_text([r.size for r in results])}"
    )
    if options.resize:
        lines.append(f"  resized to {options.resize}x{options.resize} (images bilinear, masks nearest)")
    else:
        big = max((max(r.size) for r in results), default=0)
        if big > LARGE_IMAGE_SIDE:
            lines.append(
                f"  note: native resolution, largest side {big} px; nnU-Net's 2D plans follow the median size, "
                "consider --resize 256 to reproduce the papers' protocol"
            )
    by_digest: dict[str, list[str]] = defaultdict(list)
    for r in results:
        by_digest[r.digest].append(r.case_id)
    dups = [sorted(v) for v in by_digest.values() if len(v) > 1]
    if dups:
        shown = "; ".join(" = ".join(d) for d in sorted(dups)[:5])
        lines.append(
            f"  duplicates: {len(dups)} groups of identical images ({shown}{'; ...' if len(dups) > 5 else ''})"
        )
    if splits is not None:
        sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in splits)
        lines.append(f"  splits_final.json: {len(splits)} fold(s), train/val {sizes}")
    else:
        lines.append("  splits: none written; nnU-Net makes 5 random folds (seed 12345) when training")
    for note in report.notes:
        lines.append(f"  note: {note}")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# 3D parts (NIfTI volumes): checked, copied losslessly, never resampled
# --------------------------------------------------------------------------------------------------------------------

FILE_ENDING_NIFTI = ".nii.gz"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
CHANNELS_CT: dict[str, str] = {"0": "CT"}  # nnU-Net's CT normalisation (dataset-wide percentile clip + z-score)
# How far image and label headers may differ and still be "the same grid". Spacing uses nnU-Net's own test
# (np.allclose defaults, an error in verify_dataset_integrity); origin and direction, which nnU-Net only warns about,
# get a tolerance for float32 header round-off (1 micrometre, 1e-4 in the direction cosines).
SPACING_RTOL, SPACING_ATOL = 1e-5, 1e-8
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4
_GZIP_MAGIC = b"\x1f\x8b"


def nifti_stem(name: str) -> str | None:
    """``"img0001.nii.gz"`` -> ``"img0001"`` (any case of the suffix); None if the name is not a NIfTI file."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1/2 header that decide how many bytes the volume has."""

    ndim: int
    shape: tuple[int, ...]
    bitpix: int
    vox_offset: int

    @property
    def expected_bytes(self) -> int:
        """Length of the uncompressed single-file (``.nii``) stream: header, extensions and voxel data."""
        return self.vox_offset + int(np.prod(self.shape, dtype=np.int64)) * self.bitpix // 8


def read_nifti_header(path: Path) -> NiftiHeader:
    """Parse the size fields of a NIfTI-1 or NIfTI-2 file (gzip-compressed or not, whatever its name says).

    Raises:
        ConversionError: not a single-file NIfTI (``.nii``/``.nii.gz``), or unreadable.
    """
    import gzip
    import struct

    try:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rb") as f:
            raw = f.read(540)
    except (OSError, EOFError) as e:
        raise ConversionError(
            f"cannot read NIfTI header ({e})", path, hint="replace the file with an intact copy"
        ) from e
    for endian in "<>":
        if len(raw) >= 348 and struct.unpack(endian + "i", raw[:4])[0] == 348 and raw[344:347] == b"n+1":
            dim = struct.unpack(endian + "8h", raw[40:56])
            bitpix = struct.unpack(endian + "h", raw[72:74])[0]
            vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
            break
        if len(raw) >= 540 and struct.unpack(endian + "i", raw[:4])[0] == 540 and raw[4:7] == b"n+2":
            dim = struct.unpack(endian + "8q", raw[16:80])
            bitpix = struct.unpack(endian + "h", raw[14:16])[0]
            vox_offset = int(struct.unpack(endian + "q", raw[168:176])[0])
            break
    else:
        raise ConversionError(
            "not a single-file NIfTI-1/2 volume (no 'n+1'/'n+2' header)",
            path,
            hint="the file is damaged or in another format; replace it with the original .nii.gz",
        )
    ndim = int(dim[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        raise ConversionError(f"invalid NIfTI header (dim[0]={ndim}, bitpix={bitpix})", path)
    return NiftiHeader(ndim, tuple(int(d) for d in dim[1 : ndim + 1]), int(bitpix), vox_offset)


def check_nifti_complete(path: Path, header: NiftiHeader | None = None) -> None:
    """Raise if the file holds fewer bytes than its header announces (an interrupted download or copy).

    Cheap for intact ``.nii.gz`` files: the gzip trailer records the uncompressed length, which is compared with the
    header; only on a mismatch is the stream decompressed to find out (multi-member gzip, trailing bytes).
    """
    import gzip
    import zlib

    header = header or read_nifti_header(path)
    expected = header.expected_bytes
    hint = "the file is incomplete (interrupted download or copy?); download it again"
    size = path.stat().st_size
    if not _is_gzip(path):
        if size < expected:
            raise ConversionError(f"truncated: {size} bytes, the header announces {expected}", path, hint=hint)
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 4))
        trailer = f.read(4)
    if size >= 18 and int.from_bytes(trailer, "little") == expected % 2**32:
        return
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        raise ConversionError(f"truncated or corrupt gzip stream ({e})", path, hint=hint) from e
    if total < expected:
        raise ConversionError(
            f"truncated: {total} bytes uncompressed, the header announces {expected}", path, hint=hint
        )


def copy_nifti(src: Path, dst: Path) -> str:
    """Copy a NIfTI volume to ``dst`` (a ``.nii.gz`` name) without touching header or voxels.

    Returns:
        "copied" (the file was gzip-compressed already: byte copy) or "compressed" (an uncompressed ``.nii`` was
        gzip-compressed; the decompressed bytes equal the source, and the gzip stream is deterministic).
    """
    import gzip

    if _is_gzip(src):
        shutil.copyfile(src, dst)
        return "copied"
    with open(src, "rb") as fin, open(dst, "wb") as raw, gzip.GzipFile("", "wb", 6, raw, mtime=0) as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    return "compressed"


def orientation_code(direction: Sequence[float]) -> str:
    """Where each voxel axis points, nibabel style: SimpleITK's row-major 3x3 direction -> e.g. "RAS", "IPL"."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = (("R", "L"), ("A", "P"), ("I", "S"))  # SimpleITK world axes are LPS: +x = L, +y = P, +z = S
    code = ""
    for column in matrix.T:
        axis = int(np.argmax(np.abs(column)))
        code += letters[axis][int(column[axis] > 0)]
    return code


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of a volume as SimpleITK reads it (axes in file order i, j, k)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int
    pixel_type: str

    @property
    def orientation(self) -> str:
        return orientation_code(self.direction) if len(self.size) == 3 else "?"


def _geometry(source: Any) -> Geometry:
    """From a ``sitk.Image`` or an ``sitk.ImageFileReader`` after ``ReadImageInformation``."""
    import SimpleITK as sitk

    return Geometry(
        size=tuple(int(s) for s in source.GetSize()),
        spacing=tuple(float(s) for s in source.GetSpacing()),
        origin=tuple(float(s) for s in source.GetOrigin()),
        direction=tuple(float(s) for s in source.GetDirection()),
        components=int(
            source.GetNumberOfComponentsPerPixel() if isinstance(source, sitk.Image) else source.GetNumberOfComponents()
        ),
        pixel_type=sitk.GetPixelIDValueAsString(source.GetPixelID()),
    )


def read_geometry(path: Path) -> Geometry:
    """The header geometry of a volume, without reading its voxels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ConversionError(
            f"cannot read volume ({str(e).strip().splitlines()[-1] if str(e).strip() else e})",
            path,
            hint="replace the file with an intact copy",
        ) from e
    return _geometry(reader)


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    return "(" + ", ".join(f"{v:.{digits}g}" for v in values) + ")"


def geometry_mismatch(image: Geometry, label: Geometry) -> str | None:
    """What differs between two grids (size, spacing, origin, direction), or None if they agree within tolerance."""
    if image.size != label.size:
        text = f"size {'x'.join(map(str, label.size))} but the image is {'x'.join(map(str, image.size))}"
        if sorted(image.size) == sorted(label.size):
            text += "; the same sizes in another order (a transposed or re-oriented array?)"
        return text
    if not np.allclose(label.spacing, image.spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
        return f"spacing {_fmt(label.spacing)} mm but the image has {_fmt(image.spacing)} mm"
    if not np.allclose(label.origin, image.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {_fmt(label.origin, 6)} mm but the image has {_fmt(image.origin, 6)} mm"
    if not np.allclose(label.direction, image.direction, rtol=0, atol=DIRECTION_ATOL):
        return (
            f"direction {_fmt(label.direction, 3)} ({label.orientation}) but the image has "
            f"{_fmt(image.direction, 3)} ({image.orientation})"
        )
    return None


@dataclass(frozen=True)
class Case3D:
    """One volume with its label map (None: an unlabelled test case).

    Attributes:
        case_id: nnU-Net case identifier.
        image: the source image (``.nii.gz`` or ``.nii``).
        label: the source label map, or None.
        subset: suffix of the output folders: "Tr" (imagesTr/labelsTr), "Ts" (imagesTs/labelsTs), or another suffix
            for extra held-out sets (e.g. "Ts_challenge" -> imagesTs_challenge).
        part: the official subset it came from ("training", "test", ...), for the summary and test_sets.json.
    """

    case_id: str
    image: Path
    label: Path | None
    subset: str = "Tr"
    part: str = "training"


@dataclass(frozen=True)
class Options3D:
    """What a label map may contain.

    Attributes:
        label_values: the allowed voxel values of a label map (0 included).
        label_hint: what the values mean, for the error message.
        expected_orientation: stored orientation code the distribution uses (e.g. "IPL"); others are noted.
    """

    label_values: tuple[int, ...]
    label_hint: str
    expected_orientation: str | None = None


@dataclass(frozen=True)
class CaseResult3D:
    case_id: str
    subset: str
    part: str
    size: tuple[int, ...]  # as stored (i, j, k)
    spacing: tuple[float, ...]
    orientation: str
    pixel_type: str
    labels_present: tuple[int, ...] | None  # None: no label map
    written: tuple[str, ...]  # "copied" / "compressed" per file
    image: str


def _label_values(path: Path, options: Options3D, image: Geometry) -> tuple[int, ...]:
    """The values present in a label map, after checking its grid against the image's and its values."""
    import SimpleITK as sitk

    try:
        itk = sitk.ReadImage(os.fspath(path))
    except RuntimeError as e:
        raise ConversionError(
            "cannot read label map (truncated or damaged file?)", path, hint="replace it with an intact copy"
        ) from e
    geometry = _geometry(itk)
    mismatch = geometry_mismatch(image, geometry)
    if mismatch:
        raise ConversionError(
            f"label map does not match its image: {mismatch}",
            path,
            hint="image and label must share one voxel grid; check that the label belongs to this image. If it "
            "does and only the header differs, copy the image's header onto the label (e.g. SimpleITK "
            "CopyInformation) and convert again",
        )
    if geometry.components != 1:
        raise ConversionError(f"label map has {geometry.components} components per voxel, expected 1", path)
    arr = sitk.GetArrayViewFromImage(itk)  # a view of itk's buffer: itk stays referenced below
    if arr.dtype.kind == "f":
        _check_finite(path, "label map")
        if not np.array_equal(arr, np.rint(arr)):
            raise ConversionError(
                "label map has non-integer values (a resampled or probability map?)",
                path,
                hint=f"label maps hold integer labels ({options.label_hint})",
            )
    if arr.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        values = np.unique(arr)
    allowed = set(options.label_values)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        count = int(np.isin(arr, bad).sum())
        shown = ", ".join(f"{v:g}" for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise ConversionError(
            f"label values outside {min(allowed)}..{max(allowed)}: {shown} ({count} voxels)",
            path,
            hint=f"expected {options.label_hint}; this is not an original label map of the dataset",
        )
    return tuple(int(v) for v in values.tolist())


def _count_nonfinite(path: Path) -> tuple[int, int]:
    """(NaN, inf) voxel counts of a volume stored as floats, (0, 0) for integer storage (scaled or not).

    Read with nibabel, which returns the stored values: SimpleITK reads NaN as 0, so nnU-Net's SimpleITKIO would
    train on it silently, while its nibabel readers and verification reject it; inf breaks the CT normalisation.
    """
    import nibabel as nib

    try:
        img = nib.load(os.fspath(path))
        if img.get_data_dtype().kind != "f":
            return 0, 0
        voxels = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error, ValueError, ...
        raise ConversionError(
            f"cannot read volume ({type(e).__name__}: {e})", path, hint="replace it with an intact copy"
        ) from e
    return int(np.count_nonzero(np.isnan(voxels))), int(np.count_nonzero(np.isinf(voxels)))


def _check_finite(path: Path, what: str = "image") -> None:
    n_nan, n_inf = _count_nonfinite(path)
    if n_nan or n_inf:
        found = " and ".join(t for t, n in ((f"{n_nan} NaN", n_nan), (f"{n_inf} infinite", n_inf)) if n)
        raise ConversionError(
            f"{what} contains {found} voxel values, which nnU-Net cannot train on",
            path,
            hint="replace them with a real value (e.g. -1024 HU, air) and save the volume again"
            if what == "image"
            else "replace the label map with the dataset's original",
        )


def convert_case_3d(job: tuple[Case3D, Path, Options3D]) -> CaseResult3D:
    """Worker: check one case (complete files, 3D single-channel image, label grid and values) and copy it."""
    return _naming_the_case(_convert_case_3d, *job)


def _convert_case_3d(case: Case3D, out_dir: Path, options: Options3D) -> CaseResult3D:

    header = read_nifti_header(case.image)
    if header.ndim != 3:
        singleton = header.ndim > 3 and all(d == 1 for d in header.shape[3:])
        raise ConversionError(
            f"expected a 3D volume, found {header.ndim} dimensions {header.shape}",
            case.image,
            hint="drop the trailing axes of length 1 (e.g. nibabel.funcs.squeeze_image) and save the volume again"
            if singleton
            else "nnU-Net's NIfTI readers take 3D volumes with one channel",
        )
    check_nifti_complete(case.image, header)
    image = read_geometry(case.image)
    if image.components != 1:
        raise ConversionError(f"image has {image.components} components per voxel, expected 1 (CT)", case.image)
    if "float" in image.pixel_type:  # float storage, or integers with scl_slope/scl_inter (read as float)
        _check_finite(case.image)
    labels_present = None
    if case.label is not None:
        label_header = read_nifti_header(case.label)
        if label_header.ndim != 3:
            raise ConversionError(
                f"expected a 3D label map, found {label_header.ndim} dimensions {label_header.shape}", case.label
            )
        check_nifti_complete(case.label, label_header)
        labels_present = _label_values(case.label, options, image)
    written = [copy_nifti(case.image, out_dir / f"images{case.subset}" / f"{case.case_id}_0000{FILE_ENDING_NIFTI}")]
    if case.label is not None:
        written.append(copy_nifti(case.label, out_dir / f"labels{case.subset}" / f"{case.case_id}{FILE_ENDING_NIFTI}"))
    return CaseResult3D(
        case_id=case.case_id,
        subset=case.subset,
        part=case.part,
        size=image.size,
        spacing=image.spacing,
        orientation=image.orientation,
        pixel_type=image.pixel_type,
        labels_present=labels_present,
        written=tuple(written),
        image=str(case.image),
    )


def id_ranges(ids: Sequence[str]) -> str:
    """``["case_00001", "case_00002", "case_00003", "case_00007"]`` -> ``"case_00001-00003, case_00007"``."""
    parsed = []
    for cid in sorted(ids, key=_natural_key):
        m = re.fullmatch(r"(.*?)(\d+)", cid)
        parsed.append((m.group(1), m.group(2)) if m else (cid, None))
    parts: list[str] = []
    i = 0
    while i < len(parsed):
        prefix, digits = parsed[i]
        j = i
        while (
            digits is not None
            and j + 1 < len(parsed)
            and parsed[j + 1][0] == prefix
            and parsed[j + 1][1] is not None
            and int(parsed[j + 1][1]) == int(parsed[j][1]) + 1
        ):
            j += 1
        first = prefix + (digits or "")
        parts.append(first if j == i else f"{first}-{parsed[j][1]}")
        i = j + 1
    return ", ".join(parts)


def convert_3d_dataset(
    *,
    name: str,
    folder_name: str,
    dataset_id: int,
    cases: Sequence[Case3D],
    labels: dict[str, int | tuple[int, ...]],
    label_names: dict[int, str],
    options: Options3D,
    reference: str,
    license: str,
    description: str,
    report: Report,
    channel_names: dict[str, str] | None = None,
    regions_class_order: Sequence[int] | None = None,
    reader: str | None = None,
    splits: Sequence[dict[str, list[str]]] | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    output_root: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    verbose: bool = True,
) -> Path:
    """Write ``output_root/DatasetXXX_<folder_name>`` from NIfTI ``cases`` atomically and print a summary.

    Every case is checked (complete files, a 3D single-channel image, label map on the image's grid with values in
    ``options.label_values``) and copied without resampling or re-encoding. Held-out sets (subset other than "Tr")
    are listed in ``test_sets.json``.

    Args:
        labels: dataset.json labels (ints, or tuples of ints for region-based training).
        label_names: name of each raw label value > 0, for the summary.
        reader: ``overwrite_image_reader_writer`` of dataset.json (None: nnU-Net's choice by file ending).

    Returns:
        the dataset folder.
    """
    check_dataset_id(dataset_id)
    check_num_workers(num_workers)
    root = resolve_output_root(output_root)
    dataset_name = f"Dataset{dataset_id:03d}_{folder_name}"
    prepare_target(root, dataset_name, dataset_id, overwrite, report)
    training = [c for c in cases if c.subset == "Tr"]
    if not training:
        raise ConversionError(
            "no training cases found", hint="check SOURCE: " + "; ".join(report.skipped or ["no image/label pairs"])
        )
    unlabelled = [c.case_id for c in training if c.label is None]
    if unlabelled:
        raise ConversionError(f"training cases without label map: {id_ranges(unlabelled)}")
    check_unique_ids(cases)  # type: ignore[arg-type]  # uses case_id and image only
    if splits is not None:
        splits = validate_splits(splits, [c.case_id for c in training], report)

    with atomic_dataset_folder(root, dataset_name, dataset_id, overwrite) as tmp:
        for subset in sorted({c.subset for c in cases}):
            (tmp / f"images{subset}").mkdir()
            if any(c.label is not None for c in cases if c.subset == subset):
                (tmp / f"labels{subset}").mkdir()
        results: list[CaseResult3D] = parallel_map(
            convert_case_3d, [(c, tmp, options) for c in cases], num_workers, desc=dataset_name
        )
        held_out = [r for r in results if r.subset != "Tr"]
        _check_orientations(results, options, reader, report)
        labelled = [r.labels_present for r in results if r.labels_present is not None]
        absent = [name for v, name in sorted(label_names.items()) if not any(v in present for present in labelled)]
        if absent:
            report.warnings.append(
                f"no labelled case contains {', '.join(absent)}; nnU-Net still trains an output for it"
            )
        write_dataset_json(
            tmp,
            channel_names=channel_names or CHANNELS_CT,
            labels=labels,
            num_training=len(training),
            file_ending=FILE_ENDING_NIFTI,
            dataset_name=dataset_name,
            reference=reference,
            license=license,
            description=description,
            regions_class_order=regions_class_order,
            overwrite_image_reader_writer=reader,
            numTest=sum(r.subset == "Ts" for r in results),
            nnunet_lite={"converter": name, "files": "NIfTI copied unchanged (never resampled)", **(settings or {})},
        )
        if held_out:
            sets: dict[str, list[str]] = defaultdict(list)
            for r in held_out:
                sets[r.part].append(r.case_id)
            text = json.dumps({k: sorted(v) for k, v in sorted(sets.items())}, indent=1)
            (tmp / "test_sets.json").write_text(text + "\n", encoding="utf-8")
        if splits is not None:
            write_splits(tmp, splits)

    target = root / dataset_name
    if verbose:
        print(format_summary_3d(target, results, report, labels, label_names, regions_class_order, reader, splits))
    return target


def _check_orientations(
    results: Sequence[CaseResult3D], options: Options3D, reader: str | None, report: Report
) -> None:
    orientations = Counter(r.orientation for r in results)
    if options.expected_orientation:
        other = [r.case_id for r in results if r.orientation != options.expected_orientation]
        if other:
            report.notes.append(
                f"{len(other)} cases are not stored in the distribution's {options.expected_orientation} orientation "
                f"(re-saved by some tool?): {id_ranges(other[:20])}{', ...' if len(other) > 20 else ''}"
            )
    if len(orientations) > 1 and not (reader and "Reorient" in reader):
        report.warnings.append(
            "volumes are stored in "
            + ", ".join(f"{k} ({v})" for k, v in orientations.most_common())
            + " orientation; nnU-Net's default reader does not reorient, so the network sees these cases in "
            "different anatomical orientations"
        )


def _range_text(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if np.isclose(lo, hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def format_summary_3d(
    target: Path,
    results: Sequence[CaseResult3D],
    report: Report,
    labels: dict[str, int | tuple[int, ...]],
    label_names: dict[int, str],
    regions_class_order: Sequence[int] | None,
    reader: str | None,
    splits: Sequence[dict] | None,
) -> str:
    lines = [f"wrote {target}"]
    for subset in sorted({r.subset for r in results}, key=lambda s: (s != "Tr", s != "Ts", s)):
        rs = [r for r in results if r.subset == subset]
        with_labels = any(r.labels_present is not None for r in rs)
        folders = f"images{subset}/labels{subset}" if with_labels else f"images{subset} (no labels)"
        parts = Counter(r.part for r in rs)
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(parts.items()))
        lines.append(f"  {folders}: {len(rs)} cases ({detail})")
    for item in report.skipped:
        lines.append(f"  skipped: {item}")
    for reason, n in sorted(report.ignored.items()):
        lines.append(f"  ignored: {n} {reason} (e.g. {', '.join(report.ignored_examples[reason])})")
    labelled = [r for r in results if r.labels_present is not None]
    counts = Counter(v for r in labelled for v in r.labels_present if v)
    values = "; ".join(f"{v} {label_names[v]}" for v in sorted(label_names))
    lines.append(f"  label values: 0 background; {values}")
    if regions_class_order is not None:
        regions = ", ".join(
            f"{k} {v if isinstance(v, int) else tuple(v)}" for k, v in labels.items() if k != "background"
        )
        lines.append(
            f"  region-based training: {regions}; regions_class_order {tuple(regions_class_order)} "
            "(one sigmoid output per region)"
        )
    present = ", ".join(f"{label_names[v]} {counts.get(v, 0)}" for v in sorted(label_names))
    empty = [r.case_id for r in labelled if not any(r.labels_present)]
    lines.append(
        f"  cases containing each label ({len(labelled)} labelled): {present}"
        + (f"; background only: {id_ranges(empty)}" if empty else "")
    )
    if results:
        sizes = sorted(r.size for r in results)
        orientations = Counter(r.orientation for r in results)
        spacing = np.array([r.spacing for r in results])
        lines.append(
            f"  images: 1 channel CT ({', '.join(sorted({r.pixel_type for r in results}))}); grid as stored "
            f"{'x'.join(map(str, sizes[0]))} to {'x'.join(map(str, sizes[-1]))}; spacing (mm, as stored) "
            + " x ".join(_range_text(spacing[:, k]) for k in range(spacing.shape[1]))
            + "; orientation "
            + ", ".join(f"{k} {v}" for k, v in orientations.most_common())
        )
    lines.append(
        f"  reader: {reader or 'SimpleITKIO (nnU-Net default for .nii.gz)'}"
        + ("; it reorients every volume to RAS when reading" if reader and "Reorient" in reader else "")
    )
    written = Counter(w for r in results for w in r.written)
    lines.append(
        f"  files: {written.get('copied', 0)} copied unchanged"
        + (f", {written['compressed']} uncompressed .nii gzip-compressed" if written.get("compressed") else "")
        + "; nothing resampled"
    )
    if splits is not None:
        sizes_text = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in splits)
        lines.append(f"  splits_final.json: {len(splits)} fold(s), train/val {sizes_text}")
    else:
        lines.append("  splits: none written; nnU-Net makes 5 random folds (seed 12345) when training")
    for note in report.notes:
        lines.append(f"  note: {note}")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
