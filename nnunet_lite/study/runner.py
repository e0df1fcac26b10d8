"""``study run``: Snakemake's command line on the packaged Snakefile.

We drive Snakemake through its CLI in a subprocess (``python -m snakemake``), not its Python API: the CLI is the
interface Snakemake documents and keeps stable across releases (the API was rewritten in 8.0 and is still marked
internal), the same flags work for users who want to call Snakemake themselves, and a kill of the run (Ctrl-C,
SIGTERM, a lost SSH session) behaves exactly like a kill of a user's Snakemake run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from .model import StudyError
from .study import Study

EXTRA = "pip install 'nnunet-lite[study]'  (Snakemake 9 needs Python >= 3.11)"


def require_snakemake(slurm: bool = False) -> None:
    """One line naming the extra when Snakemake (or its SLURM plugin) is missing."""
    import importlib.util

    if sys.version_info < (3, 11):
        raise StudyError(f"needs Python >= 3.11 (Snakemake 9); this is {sys.version.split()[0]}")
    if importlib.util.find_spec("snakemake") is None:
        raise StudyError(f"Snakemake is not installed: {EXTRA}")
    if slurm and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        raise StudyError(f"--executor slurm needs snakemake-executor-plugin-slurm: {EXTRA}")


def snakefile() -> Path:
    return Path(str(files("nnunet_lite.study").joinpath("Snakefile")))


@dataclass
class RunOptions:
    cores: int | None = None
    gpus: int = 0
    dry_run: bool = False
    executor: str = "local"
    slurm_partition: str | None = None
    slurm_account: str | None = None
    jobs: int = 100
    keep_going: bool = False
    extra: list[str] = field(default_factory=list)


def snakemake_command(study: Study, options: RunOptions) -> list[str]:
    slurm = options.executor == "slurm"
    config = [f"study={study.file}", f"gpus={options.gpus}", f"slurm={int(slurm)}"]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile()), "--directory", str(study.work_dir)]
    cmd += ["--config", *config]
    # incomplete jobs of a killed run are rerun; only a changed input file (not a changed Snakefile, parameters or
    # package version) makes Snakemake redo a finished step, and trainings ignore even that (ancient inputs)
    cmd += ["--rerun-incomplete", "--rerun-triggers", "mtime", "--printshellcmds", "--show-failed-logs"]
    if slurm:
        cmd += ["--executor", "slurm", "--jobs", str(options.jobs), "--latency-wait", "60"]
        defaults = []
        if options.slurm_partition:
            defaults.append(f"slurm_partition={options.slurm_partition}")
        if options.slurm_account:
            defaults.append(f"slurm_account={options.slurm_account}")
        if defaults:
            cmd += ["--default-resources", *defaults]
        if not any(arg.startswith("--slurm-status-command") for arg in options.extra):
            # the plugin (2.8) compares sacct's state with "CANCELLED" exactly, but sacct reports a scancel'ed job as
            # "CANCELLED by <uid>": with sacct, Snakemake would wait forever for a cancelled job
            cmd += ["--slurm-status-command", "squeue"]
    else:
        cmd += ["--cores", str(options.cores or os.cpu_count() or 1), "--resources", f"gpu={options.gpus}"]
    if options.keep_going:
        cmd.append("--keep-going")
    if options.dry_run:
        cmd += ["--dry-run", "--quiet", "rules"]
    return cmd + list(options.extra)


def visible_gpus() -> int:
    """GPUs this process may use (torch honours CUDA_VISIBLE_DEVICES)."""
    import torch

    return torch.cuda.device_count()


def check_options(options: RunOptions) -> None:
    """The run's own options, before anything is written (one line each)."""
    if options.cores is not None and options.cores < 1:
        raise StudyError(f"--cores {options.cores}: give at least 1 (or leave it out to use all CPUs)")
    if options.jobs < 1:
        raise StudyError(f"--jobs {options.jobs}: give at least 1")
    if options.gpus < 0:
        raise StudyError(f"--gpus {options.gpus}: give 0 (CPU only) or more")
    if options.executor == "slurm" and shutil.which("sbatch") is None:
        raise StudyError(
            "--executor slurm: sbatch is not on PATH; run on a SLURM login node (or load its module), "
            "or drop --executor slurm to run here"
        )
    if options.executor == "local" and options.gpus > 0:
        found = visible_gpus()
        if options.gpus > found:
            mask = os.environ.get("CUDA_VISIBLE_DEVICES")
            why = f"CUDA_VISIBLE_DEVICES={mask!r} makes {found}" if mask is not None else f"{found}"
            fix = f"pass --gpus {found} or fewer" if found else "pass --gpus 0 to run on the CPU"
            raise StudyError(f"--gpus {options.gpus}: {why} GPU(s) visible here; {fix}")


def check_snakemake_args(cmd: list[str]) -> None:
    """Snakemake's own parser on the command ``study run`` will start: an unknown or malformed option (also one of
    --snakemake-args) is one line here instead of Snakemake's 120-line usage after the work_dir was made."""
    from snakemake.cli import get_argument_parser

    parser = get_argument_parser()

    def refuse(message: str) -> None:
        raise StudyError(
            f"Snakemake rejects the command: {message} (see python -m snakemake --help; "
            "--snakemake-args passes options through)"
        )

    parser.error = refuse  # argparse's hook; the default prints the usage and exits
    try:
        parser.parse_args(cmd[cmd.index("snakemake") + 1 :])
    except SystemExit as e:  # --help, --version in --snakemake-args
        raise StudyError("--snakemake-args: --help/--version do not start a run; use python -m snakemake --help") from e


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_stale_lock(study: Study) -> None:
    """After a run was killed hard (SIGKILL, node loss) Snakemake's directory lock stays; remove it only if the
    run that held it is provably gone (same host, dead PID)."""
    locks = study.work_dir / ".snakemake" / "locks"
    pid_file = study.work_dir / ".nnunet_lite_study_run.json"
    if not locks.is_dir() or not any(locks.iterdir()) or not pid_file.is_file():
        return
    owner = json.loads(pid_file.read_text())
    if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner["pid"])):
        for lock in locks.iterdir():
            lock.unlink()


def run_study(study: Study, options: RunOptions) -> int:
    # everything that can be refused is refused before the work_dir exists
    check_options(options)
    require_snakemake(slurm=options.executor == "slurm")
    study.check_runnable()
    cmd = snakemake_command(study, options)
    check_snakemake_args(cmd)
    study.work_dir.mkdir(parents=True, exist_ok=True)
    study.write_budget_trainers()
    print("+ " + shlex.join(cmd), flush=True)
    if not options.dry_run:
        _clear_stale_lock(study)
    env = dict(os.environ)
    env.update(study.environment())
    proc = subprocess.Popen(cmd, env=env)
    if not options.dry_run:
        pid_file = study.work_dir / ".nnunet_lite_study_run.json"
        pid_file.write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid}))
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Snakemake got the SIGINT too; let it cancel its jobs and remove its lock
        proc.send_signal(signal.SIGINT)
        return proc.wait()
