"""Finding the download's folders, listing and pairing its files, and making case IDs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConversionError

if TYPE_CHECKING:
    from .records import Case2D
    from .report import Report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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


def single_dir(found: Sequence[Path], source: Path, what: str, expected: str) -> Path:
    """The one folder of ``found`` (from :func:`find_dirs`); an error saying ``expected`` if there is none, one listing
    them if there are several ``what`` folders."""
    if not found:
        raise ConversionError(
            f"no {what} folder found here or up to 3 levels down: expected {expected}",
            source,
            hint=f"pass the folder you unpacked the {what} download into",
        )
    if len(found) > 1:
        raise ConversionError(
            f"found several {what} folders: " + ", ".join(str(r) for r in found[:5]),
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


def pair_files(
    images: dict[Any, Path],
    masks: dict[Any, list[Path]],
    image_dir: Path,
    mask_dir: Path,
    expected_mask: Callable[[Path], str],
    expected_image: Callable[[Path], str] | None = None,
    mask_word: str = "mask",
) -> list[tuple[Any, Path, tuple[Path, ...]]]:
    """Match images to masks (or label maps: ``mask_word``) by key; raise naming the files if an image has no mask or
    a mask has no image. ``expected_mask(image)`` / ``expected_image(mask)`` name the missing partner file."""
    missing = sorted(k for k in images if k not in masks)
    if missing:
        first = images[missing[0]]
        raise ConversionError(
            f"{len(missing)} image(s) without {mask_word}, e.g. {first.name} (expected "
            f"{mask_dir / expected_mask(first)})",
            first,
            hint=f"restore the missing {mask_word}s from the official download, or remove these images from SOURCE",
        )
    extra = sorted(k for k in masks if k not in images)
    if extra:
        first = masks[extra[0]][0]
        partner = "matching image" if expected_image is None else expected_image(first)
        raise ConversionError(
            f"{len(extra)} {mask_word}(s) without image, e.g. {first.name} (no {partner} in {image_dir})",
            first,
            hint=f"restore the missing images from the official download, or remove these {mask_word}s from SOURCE",
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


def pair_folders(
    image_dir: Path,
    mask_dir: Path,
    report: Report,
    image_id: Callable[[Path], tuple[str | None, str]],
    mask_id: Callable[[Path], tuple[str | None, str]] | None = None,
) -> list[tuple[str, Path, tuple[Path, ...]]]:
    """(case ID, image, (mask,)) for an image folder and a mask folder with one mask per image (see
    :func:`index_cases` for ``image_id``/``mask_id``, :func:`pair_files` for the errors)."""
    images = index_cases(image_dir, report, image_id)
    masks = {k: [v] for k, v in index_cases(mask_dir, report, mask_id or image_id).items()}
    return pair_files(images, masks, image_dir, mask_dir, lambda p: p.name)
