"""One training job of a study: ``python -m nnunet_lite.study.job FOLD_DIR LOG [--gpu-slots K] -- nnUNetv2_train ...``.

Decides at run time (on the node that runs it, so also for a resubmitted SLURM job) whether nnU-Net resumes: with
``--c`` when the fold has ``checkpoint_latest.pth``, with ``--val`` when only the validation is missing. Writes the
small state files ``study status`` reads (running with host/PID/SLURM job, failed with exit code and log) and, on a
machine with several GPUs, gives the training its own device: it holds an ``flock`` on one of K slot files for its
lifetime. Snakemake never runs more than K ``gpu=1`` jobs at once, so a free slot always exists, and the kernel
drops the lock when the process dies (no stale state).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def resume_flag(fold_dir: Path) -> list[str]:
    """How nnU-Net continues this fold: ``--val`` if training finished but its validation did not (the final
    checkpoint stays untouched), ``--c`` if an interrupted training left ``checkpoint_latest.pth``, else nothing."""
    fold_dir = Path(fold_dir)
    if (fold_dir / "checkpoint_final.pth").is_file():
        return ["--val"]
    for name in ("checkpoint_latest.pth", "checkpoint_best.pth"):
        _set_aside_if_damaged(fold_dir / name)
    # nnU-Net's --c takes checkpoint_latest.pth, else checkpoint_best.pth
    resumable = any((fold_dir / n).is_file() for n in ("checkpoint_latest.pth", "checkpoint_best.pth"))
    return ["--c"] if resumable else []


def _set_aside_if_damaged(checkpoint: Path) -> None:
    """A job killed while nnU-Net wrote a checkpoint (scancel, SIGKILL) leaves a truncated file that --c would crash
    on: rename it to ``*.damaged`` so that nnU-Net resumes from the other checkpoint, or starts the fold again."""
    from ..checkpoints import CheckpointError, load_checkpoint

    if not checkpoint.is_file():
        return
    try:
        load_checkpoint(checkpoint)
    except CheckpointError as e:
        checkpoint.rename(checkpoint.with_name(checkpoint.name + ".damaged"))
        print(f"nnunet_lite study: {e}; set aside as {checkpoint.name}.damaged", file=sys.stderr)


def state_files(log: Path) -> tuple[Path, Path]:
    """The running and failed markers next to the job's log file."""
    return log.with_name(log.name + ".running"), log.with_name(log.name + ".failed")


@contextmanager
def gpu_slot(lock_dir: Path, slots: int):
    """Holds the first free slot in 0..slots-1 and sets CUDA_VISIBLE_DEVICES to it for the child."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_lite.study.job")
    parser.add_argument("fold_dir", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("--gpu-slots", type=int, default=0)
    parser.add_argument("--lock-dir", type=Path, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    command = command + resume_flag(args.fold_dir)
    running, failed = state_files(args.log)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
    env = dict(os.environ)
    with (
        gpu_slot(args.lock_dir or args.log.parent, args.gpu_slots) if args.gpu_slots else _no_slot() as slot,
        open(args.log, "a") as log,
    ):
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot)
        state = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
        state.update(command=command, started=time.time(), gpu=slot)
        running.write_text(json.dumps(state))
        log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            code = child.wait()
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM (scancel, Snakemake's cancel): interrupted, not failed
            child.terminate()
            child.wait()
            running.unlink(missing_ok=True)
            return 130
        if code == 0 and not (args.fold_dir / "checkpoint_final.pth").is_file():
            log.write("nnUNetv2_train exited 0 but wrote no checkpoint_final.pth\n")
            code = 1
    running.unlink(missing_ok=True)
    if code != 0:
        failed.write_text(json.dumps({"exit_code": code, "log": str(args.log), "finished": time.time()}))
        print(f"training failed (exit {code}); read {args.log}", file=sys.stderr)
    return code


@contextmanager
def _no_slot():
    yield None


if __name__ == "__main__":
    sys.exit(main())
