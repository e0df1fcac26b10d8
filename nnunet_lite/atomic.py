"""Write a file or a folder so that readers see the old version or the complete new one, never a half-written one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask_mode(kind: int) -> int:
    # tempfile creates 0600 files and 0700 folders; give the result the permissions a plain open()/mkdir() would
    umask = os.umask(0)
    os.umask(umask)
    return kind & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to a temporary sibling of ``path`` and renames it over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty temporary sibling of ``target``; when the block succeeds it becomes ``target``.

    An existing ``target`` raises FileExistsError unless ``overwrite``; it is moved aside first and deleted only after
    the new folder is in place, so a failure never destroys it. On any exception (KeyboardInterrupt included) the
    temporary folder is removed and ``target`` stays as it was.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_into_place(tmp: Path, target: Path, *, aside_prefix: str | None = None, aside_name: str | None = None) -> None:
    """Renames the finished folder ``tmp`` (a sibling of ``target``) to ``target``, with the permissions of a plain
    ``mkdir``. An existing ``target`` is first moved into a ``*.old`` folder beside it (named with ``aside_prefix``,
    holding it as ``aside_name``; defaults from ``target``'s name), put back if the rename fails, and deleted only once
    ``tmp`` is in place."""
    tmp.chmod(_umask_mode(0o777))
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=aside_prefix or f".{target.name}.", suffix=".old", dir=target.parent))
    aside = old / (aside_name or target.name)
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(aside, target)  # put the previous folder back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
