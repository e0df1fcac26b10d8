"""A spawn-safe process pool with a progress bar that stops its workers at once on any error or signal."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from .errors import ConversionError
from .output import check_num_workers

T = TypeVar("T")


R = TypeVar("R")


def default_num_workers() -> int:
    """``$nnUNet_def_n_proc`` (nnU-Net's own knob) if set, else min(8, CPU count)."""
    value = os.environ.get("nnUNet_def_n_proc")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    return max(1, min(8, os.cpu_count() or 1))


def _worker_init(parent: int) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it (and stops the workers), workers stay quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed with SIGKILL cannot stop its workers, and a worker whose result nobody reads blocks forever:
    # workers watch for being orphaned and exit. The parent's pid comes from the parent: a worker still importing
    # when its parent was killed would otherwise take its new parent (init) for the one to watch, and never exit.
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


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
        initargs=(os.getpid(),),
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
