"""GPU slots of a local study run: ``python -m nnunet_lite.study.slot --gpu-slots K --lock-dir DIR -- COMMAND ...``.

Every step of ``study run --gpus K`` that uses a GPU (training, test predictions, zero-shot, profile, robustness)
runs under one of K slots: it holds an ``flock`` on ``DIR/gpu_<k>.lock`` for its lifetime and sees only the slot's
device. Snakemake never runs more than K ``gpu=1`` jobs at once, so a free slot always exists, and the kernel drops
the lock when the process dies (no stale state). Slot k is the k-th entry of an inherited ``CUDA_VISIBLE_DEVICES``
(``CUDA_VISIBLE_DEVICES=2,3`` and K=2: GPUs 2 and 3), or device k when none is set.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SlotError(Exception):
    """More slots than the inherited CUDA_VISIBLE_DEVICES makes visible (one line)."""


def slot_devices(slots: int, inherited: str | None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each slot: the inherited entries in order, else ``0..slots-1``."""
    if inherited is None:
        return [str(k) for k in range(slots)]
    entries = [e.strip() for e in inherited.split(",") if e.strip()]
    if len(entries) < slots:
        raise SlotError(
            f"{slots} GPU slots but CUDA_VISIBLE_DEVICES={inherited!r} makes {len(entries)} GPU(s) visible; "
            f"pass --gpus {len(entries)} or widen CUDA_VISIBLE_DEVICES"
        )
    return entries[:slots]


@contextmanager
def gpu_slot(lock_dir: Path, slots: int) -> Iterator[int]:
    """Holds the first free slot in 0..slots-1 (an flock on ``lock_dir/gpu_<slot>.lock``) and yields its index."""
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(slots):
            handle = open(lock_dir / f"gpu_{slot}.lock", "w")  # noqa: SIM115 (held for the job's lifetime)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield slot
            finally:
                handle.close()
            return
        time.sleep(1)  # only while a just-finished job's process is still exiting


@contextmanager
def slot_environment(lock_dir: Path | None, slots: int, environ: dict[str, str]) -> Iterator[str | None]:
    """Holds a slot (when ``slots`` > 0) and sets the child's CUDA_VISIBLE_DEVICES in ``environ`` to its device;
    yields the device, or None without slots."""
    if not slots:
        yield None
        return
    devices = slot_devices(slots, environ.get("CUDA_VISIBLE_DEVICES"))
    with gpu_slot(lock_dir, slots) as slot:
        environ["CUDA_VISIBLE_DEVICES"] = devices[slot]
        yield devices[slot]


def run_command(command: list[str], env: dict[str, str], **popen) -> int:
    """Runs the child; SIGTERM/Ctrl-C (scancel, Snakemake's cancel) terminate it too. Returns its exit code, 130 when
    interrupted."""
    child = subprocess.Popen(command, env=env, **popen)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        child.wait()
        return 130


def split_command(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """A wrapper's own options (before the first ``--``) and the wrapped command (after it). argparse's REMAINDER
    would swallow options that follow a positional argument and run them as the command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_lite.study.slot")
    parser.add_argument("--gpu-slots", type=int, required=True)
    parser.add_argument("--lock-dir", type=Path, required=True)
    options, command = split_command(argv)
    args = parser.parse_args(options)
    if not command:
        parser.error("no command: give it after --")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    env = dict(os.environ)
    try:
        with slot_environment(args.lock_dir, args.gpu_slots, env) as device:
            print(f"nnunet_lite study: GPU slot on CUDA_VISIBLE_DEVICES={device}", file=sys.stderr, flush=True)
            return run_command(command, env)
    except SlotError as e:
        print(f"nnunet_lite study: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
