"""``nnunet_lite study run --executor slurm`` against a real Slurm: sbatch, sacct (the plugin's status query), scancel.

Uses the single-node cluster of ``scripts/slurm_local_cluster.sh``: a running one as it is, otherwise it starts one
(root, Slurm's Debian packages installed) and stops it afterwards. Skips with the reason otherwise, unless
``NNUNET_LITE_REQUIRE_SLURM=1`` (CI) turns the skip into a failure. One training is cancelled with ``scancel`` in
the middle of its run; the re-run must resume it from its last epoch and leave the finished fold alone.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import BIN

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm_local_cluster.sh"
CLUSTER_DIR = Path(os.environ.get("NNUNET_LITE_SLURM_DIR", "/tmp/nnunet_lite_slurm"))
REQUIRED = os.environ.get("NNUNET_LITE_REQUIRE_SLURM") == "1"
ACCOUNT, PARTITION = "nnunet_lite", "local"  # what the script creates
TRAIN_MEM_MB = 32000  # the Snakefile's DEFAULT_MEM_MB["train"]

# save_every = 1: nnU-Net writes checkpoint_latest.pth after every epoch (default: every 50th), so a cancelled
# short training has something to resume from, as a long one would.
EPOCHS = 4
TRAINER = f"""
from nnunet_lite.trainers import nnUNetTrainerLGMSNet


class nnUNetTrainerLGMSNet_slurmtest(nnUNetTrainerLGMSNet):
    hyperparameters = {{
        "num_epochs": {EPOCHS},
        "num_iterations_per_epoch": 4,
        "num_val_iterations_per_epoch": 1,
        "save_every": 1,
    }}
"""

STUDY = f"""
name = "slurm-tiny"
work_dir = "work"
configurations = ["2d"]
trainers = ["nnUNetTrainerLGMSNet_slurmtest"]
folds = [0, 1]

[nnunet]
raw = "work/nnUNet_raw"
preprocessed = "work/nnUNet_preprocessed"
results = "work/nnUNet_results"

[[datasets]]
id = 994
synthetic = {{ num_train = 8, num_test = 2, seed = 5 }}
test = false

[resources.default]
cpus = 1
mem_mb = 2000
partition = "{PARTITION}"

[resources.preprocess]
cpus = 1
mem_mb = 2000

[resources.train]  # no mem_mb: the train step's documented default (docs/studies-slurm.md), not Snakemake's
gpus = 0
cpus = 1
time = "30m"

[resources.predict]
gpus = 0
cpus = 1
mem_mb = 2000

[env]
nnUNet_compile = "f"

[report]
bootstrap = 200
latency = false
"""


def _skip(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"NNUNET_LITE_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args, str(CLUSTER_DIR)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def slurm_cluster():
    """SLURM_CONF of a running local cluster; starts (and afterwards stops) one if none runs and this is possible."""
    if sys.version_info < (3, 11):
        _skip("nnunet_lite study needs Python >= 3.11 (Snakemake 9)")
    for module in ("snakemake", "snakemake_executor_plugin_slurm"):
        if not _importable(module):
            _skip(f"{module} is not installed: pip install 'nnunet-lite[study]'")
    started = False
    if _script("status").returncode != 0:
        if os.geteuid() != 0:
            _skip(f"no local Slurm cluster runs and starting one needs root: sudo {SCRIPT} start")
        daemons = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
        if not all(shutil.which(d) or shutil.which(d, path="/usr/sbin:/sbin") for d in daemons):
            _skip(f"Slurm's Debian packages are not installed; {SCRIPT} start installs them")
        out = _script("start")
        assert out.returncode == 0, out.stdout + out.stderr
        started = True
    conf = str(CLUSTER_DIR / "etc" / "slurm.conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", conf)
        yield conf
    if started:
        out = _script("stop")
        assert out.returncode == 0, out.stdout + out.stderr


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _run_command(study_file: Path) -> list[str]:
    # Polling: the plugin's first check after 2 s (default 40); --jobs 1 runs one SLURM job at a time, so that one
    # fold finishes before the other starts and the test knows which one to cancel. Status via squeue: plugin 2.8.0
    # compares sacct's state with "CANCELLED" exactly, and sacct reports a scancel as "CANCELLED by <uid>", so
    # with sacct Snakemake would wait for the cancelled job forever.
    return [
        str(BIN / "nnunet_lite"),
        "study",
        "run",
        str(study_file),
        "--executor",
        "slurm",
        "--slurm-partition",
        PARTITION,
        "--slurm-account",
        ACCOUNT,
        "--jobs",
        "1",
        "--snakemake-args",
        "--slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 2 --slurm-keep-successful-logs "
        "--slurm-status-command squeue",
    ]


def _sacct(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "-j", job_id, "--format", "JobID,State,Account,Partition"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _scontrol(job_id: str) -> str:
    """What Slurm allocated to a job (``scontrol show job``: MinMemoryNode, TRES mem=...)."""
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def _latest_training_log(fold_dir: Path) -> str:
    return max(fold_dir.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime_ns).read_text()


def _complete(checkpoint: Path) -> bool:
    """The checkpoint exists and loads (not a file nnU-Net is still writing)."""
    from nnunet_lite.checkpoints import CheckpointError, load_checkpoint

    if not checkpoint.is_file():
        return False
    try:
        load_checkpoint(checkpoint)
    except CheckpointError:
        return False
    return True


def _first_epoch(log: str) -> int:
    """The first epoch an nnU-Net training log reports ("...: Epoch 3"); 0 for a training from scratch."""
    return int(re.search(r": Epoch (\d+)\s*$", log, re.MULTILINE).group(1))


def _job_log(study, fold_dir: Path) -> Path:
    """The study's log of one training job (logs/train/<dataset>/<model folder>/fold_N.log)."""
    return (
        study.work_dir / "logs" / "train" / fold_dir.parent.parent.name / fold_dir.parent.name / f"{fold_dir.name}.log"
    )


def test_study_on_slurm_cancelled_training_resumes(slurm_cluster, tmp_path, monkeypatch):
    trainers = tmp_path / "trainers"
    trainers.mkdir()
    (trainers / "slurmtest_trainers.py").write_text(TRAINER)
    from nnunet_lite.nnunet_env import SHIM_FOLDER
    from nnunet_lite.study.study import Study

    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(SHIM_FOLDER), str(trainers)]))
    study_file = tmp_path / "study.toml"
    study_file.write_text(STUDY)
    study = Study.load(study_file)
    folds = {t.fold: t.fold_dir for t in study.trainings()}
    cmd = _run_command(study_file)

    t0 = time.time()
    log = tmp_path / "first_run.log"
    with open(log, "w") as out:
        first = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    # Wait for one fold to finish and the other to be mid-run: no checkpoint_final.pth, and checkpoint_latest.pth and
    # checkpoint_best.pth both complete. A file that merely exists may still be being written (nnU-Net's torch.save
    # writes in place): cancelled then, the fold has nothing to resume from and rightly starts again from epoch 0.
    finished = cancelled = job_id = None
    deadline = time.time() + 900
    while cancelled is None and time.time() < deadline and first.poll() is None:
        done = [f for f, d in folds.items() if (d / "checkpoint_final.pth").is_file()]
        mid = [
            f
            for f, d in folds.items()
            if f not in done and _complete(d / "checkpoint_latest.pth") and _complete(d / "checkpoint_best.pth")
        ]
        if done and mid:
            finished, cancelled = done[0], mid[0]
            marker = _job_log(study, folds[cancelled]).with_suffix(".log.running")
            job_id = json.loads(marker.read_text())["slurm_job_id"]
            job_info = _scontrol(job_id)
            subprocess.run(["scancel", job_id], check=True)
        time.sleep(0.2)
    try:
        first.wait(timeout=300)
    finally:
        if first.poll() is None:  # the runner and its Snakemake (Ctrl-C: Snakemake cancels its SLURM jobs)
            os.killpg(first.pid, signal.SIGINT)
            try:
                first.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(first.pid, signal.SIGKILL)
    first_log = log.read_text()
    assert cancelled is not None, f"no fold was caught mid-run:\n{first_log[-4000:]}"
    # --default-resources slurm_partition=... did not replace the study's memory by Snakemake's default (1000 MB)
    assert re.search(rf"\bMinMemoryNode={TRAIN_MEM_MB}M\b", job_info), job_info
    t_first = time.time() - t0
    assert first.returncode != 0, "the run with a cancelled job must fail"
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in first_log, first_log[-4000:]
    # The plugin's status query (sacct) saw the real state in the accounting database.
    assert _sacct(job_id).startswith(f"{job_id}|CANCELLED"), _sacct(job_id)
    status = {r["fold"]: r for r in json.loads(_cli_json("status", study_file))}
    assert status[finished]["status"] == "done"
    assert status[cancelled]["status"] == "interrupted", status[cancelled]
    epochs_at_cancel = status[cancelled]["epochs_done"]
    assert 1 <= epochs_at_cancel < EPOCHS
    final_mtime = (folds[finished] / "checkpoint_final.pth").stat().st_mtime_ns

    t1 = time.time()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    t_second = time.time() - t1
    second_log = second.stdout + second.stderr
    assert second.returncode == 0, second_log[-4000:]
    # The finished fold was neither scheduled nor retrained; the cancelled one resumed (--c) from its checkpoint.
    assert (folds[finished] / "checkpoint_final.pth").stat().st_mtime_ns == final_mtime, "finished fold retrained"
    assert f"fold_{finished}.log" not in second_log, "the finished fold was scheduled again"
    resumed = _latest_training_log(folds[cancelled])
    assert 1 <= _first_epoch(resumed) <= epochs_at_cancel, resumed[:3000]
    job_log = _job_log(study, folds[cancelled]).read_text()
    # (Snakemake starts the log of a re-run job afresh) the job wrapper's command line: resumed with --c
    assert re.findall(r"^### \d{4}-.*$", job_log, re.MULTILINE)[-1].endswith(" --c"), job_log[:2000]
    rows = json.loads(_cli_json("status", study_file))
    assert [(r["status"], r["epochs_done"]) for r in rows] == [("done", EPOCHS), ("done", EPOCHS)]
    # Every job went through SLURM under the study's account and partition.
    submitted = [line.split("SLURM jobid ")[1].split()[0] for line in second_log.splitlines() if "SLURM jobid" in line]
    assert submitted and all(_sacct(j).endswith(f"|COMPLETED|{ACCOUNT}|{PARTITION}") for j in submitted)
    assert (study.work_dir / "report" / "study_report.md").is_file()
    print(f"first run (until the cancelled job failed it): {t_first:.0f} s; resumed run: {t_second:.0f} s")


def _cli_json(action: str, study_file: Path) -> str:
    out = subprocess.run(
        [str(BIN / "nnunet_lite"), "study", action, str(study_file), "--json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout
