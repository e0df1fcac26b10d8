"""The one exception type of the converters, and SIGTERM turned into an exception so that cleanup runs."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
