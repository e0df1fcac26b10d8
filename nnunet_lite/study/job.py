"""One training job of a study: ``python -m nnunet_lite.study.job FOLD_DIR LOG [--gpu-slots K] -- nnUNetv2_train ...``.

Decides at run time (on the node that runs it, so also for a resubmitted SLURM job) whether nnU-Net resumes: with
``--val`` when training finished but its validation did not, with ``--c`` when the fold has a readable
``checkpoint_latest.pth`` or ``checkpoint_best.pth``, else from scratch. Every checkpoint it relies on is read first:
a truncated or corrupt one (a job killed during ``torch.save``) is set aside as ``*.damaged`` and the next one is
used; an intact file that the safe loader refuses is never touched, and the job fails with one line instead.

Writes the small state files ``study status`` reads (running with host/PID/SLURM job, failed with exit code and
log). A ``.running`` marker that names a job still alive (a local PID, or a SLURM job that ``squeue`` lists) makes
the job refuse to start, so a resubmission never races a running training; a stale marker is replaced. On a local
machine with several GPUs the training holds a GPU slot (:mod:`nnunet_lite.study.slot`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .slot import SlotError, gpu_slot, run_command, slot_environment, split_command

__all__ = ["JobRefusedError", "gpu_slot", "live_job", "main", "resume_flag", "state_files"]

FINAL, LATEST, BEST = "checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"


class JobRefusedError(Exception):
    """The job must not start (one line): a live job holds the fold, or a checkpoint is intact but refused."""


def resume_flag(fold_dir: Path) -> list[str]:
    """How nnU-Net continues this fold: ``--val`` if training finished but its validation did not (the final
    checkpoint stays untouched), ``--c`` if an interrupted training left a readable ``checkpoint_latest.pth`` or
    ``checkpoint_best.pth``, else nothing (from scratch).

    Raises:
        JobRefusedError: a checkpoint is intact but the safe loader refuses it (left as it is).
    """
    fold_dir = Path(fold_dir)
    # a kill during nnU-Net's final torch.save leaves a truncated checkpoint_final.pth that --val would crash on
    _set_aside_if_damaged(fold_dir / FINAL)
    if (fold_dir / FINAL).is_file():
        return ["--val"]
    for name in (LATEST, BEST):
        _set_aside_if_damaged(fold_dir / name)
    # nnU-Net's --c takes checkpoint_latest.pth, else checkpoint_best.pth
    resumable = any((fold_dir / n).is_file() for n in (LATEST, BEST))
    return ["--c"] if resumable else []


def _set_aside_if_damaged(checkpoint: Path) -> None:
    """A job killed while nnU-Net wrote a checkpoint (scancel, SIGKILL) leaves a truncated file that --c or --val
    would crash on: rename it to ``*.damaged`` so that nnU-Net resumes from another checkpoint, or starts the fold
    again. Only broken bytes are set aside: an intact file the safe loader refuses stops the job instead."""
    from ..checkpoints import CheckpointError, load_checkpoint

    if not checkpoint.is_file():
        return
    try:
        load_checkpoint(checkpoint)
    except CheckpointError as e:
        if not e.damaged:
            raise JobRefusedError(
                f"{e}; not set aside, the fold was not started: fix or move that file, then rerun"
            ) from e
        checkpoint.rename(checkpoint.with_name(checkpoint.name + ".damaged"))
        print(f"nnunet_lite study: {e}; set aside as {checkpoint.name}.damaged", file=sys.stderr)


def state_files(log: Path) -> tuple[Path, Path]:
    """The running and failed markers next to the job's log file."""
    return log.with_name(log.name + ".running"), log.with_name(log.name + ".failed")


def _process_start(pid: int) -> float | None:
    """When a local process started (seconds since the epoch, from /proc), or None where /proc cannot say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def pid_alive(pid: int, started: float | None = None) -> bool:
    """Whether local process ``pid`` runs; with ``started`` (when the marker was written), a process that began
    later is a reused PID, not the marker's job."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is not None:
        begun = _process_start(pid)
        if begun is not None and begun > started + 2:  # btime has 1 s resolution
            return False
    return True


def live_job(marker: Path) -> str | None:
    """The job a ``.running`` marker names if it is still alive ("SLURM job 123", "PID 42 on host"), else None.

    A SLURM job counts as alive while ``squeue`` lists it; a local PID while it runs (and was not reused); a job on
    another host without SLURM cannot be checked and counts as alive.
    """
    try:
        state = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    job_id = state.get("slurm_job_id")
    host, pid = state.get("host"), state.get("pid")
    if job_id and str(job_id) == os.environ.get("SLURM_JOB_ID"):
        # this very allocation: a requeued job (its previous run is gone) or a local run inside salloc (check the PID)
        if host != socket.gethostname():
            return None
    elif job_id and shutil.which("squeue"):
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%i"], capture_output=True, text=True)
        if out.returncode == 0:
            return f"SLURM job {job_id}" if out.stdout.strip() else None
        # a job Slurm has forgotten: "Invalid job id specified"; anything else (controller down): assume alive
        return None if "invalid job id" in out.stderr.lower() else f"SLURM job {job_id}"
    if host == socket.gethostname() and isinstance(pid, int):
        return f"PID {pid} on {host}" if pid_alive(pid, state.get("started")) else None
    return f"PID {pid} on {host}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_lite.study.job")
    parser.add_argument("fold_dir", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("--gpu-slots", type=int, default=0)
    parser.add_argument("--lock-dir", type=Path, default=None)
    options, command = split_command(argv)
    args = parser.parse_args(options)
    if not command:
        parser.error("no training command: give it after --")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    running, failed = state_files(args.log)
    holder = live_job(running)
    if holder is not None:  # before touching any checkpoint: that job may be writing one right now
        print(
            f"nnunet_lite study: {running} names {holder}, which is still running; not starting a second training "
            f"of {args.fold_dir} (delete the marker only if that job is really gone)",
            file=sys.stderr,
        )
        return 2
    args.log.parent.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
    try:
        command = command + resume_flag(args.fold_dir)
    except JobRefusedError as e:
        return _fail(args.log, failed, 2, f"nnunet_lite study: {e}")
    env = dict(os.environ)
    try:
        with (
            slot_environment(args.lock_dir or args.log.parent, args.gpu_slots, env) as device,
            open(args.log, "a") as log,
        ):
            state = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
            state.update(command=command, started=time.time(), gpu=device)
            running.write_text(json.dumps(state))
            log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
            log.flush()
            code = run_command(command, env, stdout=log, stderr=subprocess.STDOUT)
            if code == 130:  # Ctrl-C, SIGTERM (scancel, Snakemake's cancel): interrupted, not failed
                running.unlink(missing_ok=True)
                return 130
            if code == 0 and not (args.fold_dir / FINAL).is_file():
                log.write(f"nnUNetv2_train exited 0 but wrote no {FINAL}\n")
                code = 1
    except SlotError as e:
        return _fail(args.log, failed, 2, f"nnunet_lite study: {e}")
    running.unlink(missing_ok=True)
    if code != 0:
        return _fail(args.log, failed, code, f"training failed (exit {code}); read {args.log}", in_log=False)
    return code


def _fail(log: Path, failed: Path, code: int, message: str, in_log: bool = True) -> int:
    """Writes the failed marker (what ``study status`` shows) and one line on stderr (and in the job's log)."""
    if in_log:
        with open(log, "a") as handle:
            handle.write(message + "\n")
    failed.write_text(json.dumps({"exit_code": code, "log": str(log), "finished": time.time(), "reason": message}))
    print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
