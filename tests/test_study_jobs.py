"""The study's job wrappers without nnU-Net: which checkpoints a training resumes from (and which it never touches),
the ``.running`` marker of a live job, and GPU slots mapped through an inherited CUDA_VISIBLE_DEVICES."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnunet_lite.checkpoints import CheckpointError, DamagedCheckpointError, load_checkpoint
from nnunet_lite.study.job import live_job, resume_flag, state_files
from nnunet_lite.study.job import main as job_main


class _Foreign:
    """A type no nnU-Net checkpoint holds: the safe loader refuses it although the file is intact."""


def _save(path: Path, epoch: int = 1, **extra) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"current_epoch": epoch, "network_weights": {}, **extra}, path)
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_and_refused_checkpoints_are_told_apart(tmp_path):
    truncated = _save(tmp_path / "truncated.pth")
    _truncate(truncated)
    refused = _save(tmp_path / "refused.pth", x=_Foreign())
    with pytest.raises(DamagedCheckpointError) as damaged:
        load_checkpoint(truncated)
    assert damaged.value.damaged and "truncated, damaged or not a PyTorch file" in str(damaged.value)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(refused)
    assert not exc.value.damaged and not isinstance(exc.value, DamagedCheckpointError)
    assert "refusing to unpickle tests.test_study_jobs._Foreign" in str(exc.value)


def test_truncated_final_checkpoint_resumes_with_c_instead_of_val(tmp_path, capsys):
    # killed during nnU-Net's final torch.save: a truncated checkpoint_final.pth next to the last checkpoint_latest.pth
    _save(tmp_path / "checkpoint_latest.pth", epoch=7)
    _truncate(_save(tmp_path / "checkpoint_final.pth", epoch=8))
    assert resume_flag(tmp_path) == ["--c"]
    assert (tmp_path / "checkpoint_final.pth.damaged").is_file() and not (tmp_path / "checkpoint_final.pth").exists()
    assert "checkpoint_final.pth: cannot read checkpoint" in capsys.readouterr().err
    # and nnU-Net had already removed checkpoint_latest.pth, nothing else left: a fresh start
    (tmp_path / "checkpoint_latest.pth").unlink()
    _truncate(_save(tmp_path / "checkpoint_final.pth", epoch=8))
    assert resume_flag(tmp_path) == []
    _save(tmp_path / "checkpoint_final.pth", epoch=8)  # a readable one: only the validation is left
    assert resume_flag(tmp_path) == ["--val"]


def _job(tmp_path: Path, *options: str) -> tuple[list[str], Path, Path]:
    """job.py's arguments for a fold whose command records that it ran (and its CUDA_VISIBLE_DEVICES)."""
    fold, log = tmp_path / "fold_0", tmp_path / "logs" / "fold_0.log"
    fold.mkdir(exist_ok=True)
    code = (
        "import os, pathlib, sys; f = pathlib.Path(sys.argv[1]); "
        "(f / 'ran').write_text(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + ' ' + ' '.join(sys.argv[2:])); "
        "(f / 'checkpoint_final.pth').write_bytes(b'')"
    )
    return [str(fold), str(log), *options, "--", sys.executable, "-c", code, str(fold)], fold, log


def test_refused_checkpoint_is_never_set_aside_and_the_job_fails_with_one_line(tmp_path, capsys):
    args, fold, log = _job(tmp_path)
    latest = _save(fold / "checkpoint_latest.pth", epoch=40, x=_Foreign())
    before = latest.read_bytes()
    assert job_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnunet_lite study: {latest}: refusing to unpickle"), err
    assert "not set aside" in err[0]
    assert latest.read_bytes() == before and not list(fold.glob("*.damaged")), "a healthy checkpoint was set aside"
    assert not (fold / "ran").exists(), "the fold restarted from epoch 0"
    failed = json.loads(state_files(log)[1].read_text())
    assert failed["exit_code"] == 2 and "refusing to unpickle" in failed["reason"]


def _marker(log: Path, **state) -> Path:
    running = state_files(log)[0]
    running.parent.mkdir(parents=True, exist_ok=True)
    running.write_text(json.dumps({"host": socket.gethostname(), "slurm_job_id": None, **state}))
    return running


def test_job_refuses_to_start_while_its_marker_names_a_live_job(tmp_path, capsys):
    args, fold, log = _job(tmp_path)
    running = _marker(log, pid=os.getpid(), started=time.time())  # this test process: alive
    assert job_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"nnunet_lite study: {running} names PID {os.getpid()} on {socket.gethostname()}, which is still running; "
        f"not starting a second training of {fold} (delete the marker only if that job is really gone)"
    ]
    assert not (fold / "ran").exists() and running.is_file()


def test_stale_marker_of_a_dead_or_reused_pid_is_replaced(tmp_path):
    args, fold, log = _job(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    running = _marker(log, pid=dead.pid, started=time.time())
    assert live_job(running) is None
    # a live PID that began long after the marker was written is another process (PID reused)
    assert live_job(_marker(log, pid=os.getpid(), started=time.time() - 10**7)) is None
    assert job_main(args) == 0
    assert (fold / "ran").read_text().startswith("unset") and not running.exists()


def test_marker_of_a_slurm_job_asks_squeue(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"  # lists job 4242 only: squeue -h -j ID -o %i
    squeue.write_text('#!/bin/sh\n[ "$3" = "4242" ] && echo 4242\nexit 0\n')
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    args, fold, log = _job(tmp_path)
    running = _marker(log, host="node17", pid=1, slurm_job_id="4242")
    assert live_job(running) == "SLURM job 4242"
    assert job_main(args) == 2 and "names SLURM job 4242, which is still running" in capsys.readouterr().err
    _marker(log, host="node17", pid=1, slurm_job_id="4243")  # finished: squeue no longer lists it
    assert job_main(args) == 0 and (fold / "ran").is_file()


def test_slots_map_through_the_inherited_cuda_visible_devices():
    from nnunet_lite.study.slot import SlotError, slot_devices

    assert slot_devices(2, "2,3") == ["2", "3"]
    assert slot_devices(2, "GPU-aa, GPU-bb,GPU-cc") == ["GPU-aa", "GPU-bb"]
    assert slot_devices(2, None) == ["0", "1"]
    with pytest.raises(SlotError, match=r"3 GPU slots but CUDA_VISIBLE_DEVICES='2,3' makes 2 GPU\(s\) visible"):
        slot_devices(3, "2,3")


def test_training_and_any_gpu_command_run_on_the_slot_of_the_inherited_list(tmp_path, monkeypatch):
    from nnunet_lite.study.slot import gpu_slot

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    locks = tmp_path / "locks"
    args, fold, log = _job(tmp_path, "--gpu-slots", "2", "--lock-dir", str(locks))
    assert job_main(args) == 0
    assert (fold / "ran").read_text() == "2 "  # slot 0 -> the first inherited GPU, not GPU 0
    out = tmp_path / "child.txt"
    child = [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])"]
    command = [sys.executable, "-m", "nnunet_lite.study.slot", "--gpu-slots", "2", "--lock-dir", str(locks), "--"]
    with gpu_slot(locks, 2) as held:  # a training holds slot 0: the prediction gets slot 1, GPU 3
        assert held == 0
        result = subprocess.run(command + child, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "3" and "CUDA_VISIBLE_DEVICES=3" in result.stderr
    bad = subprocess.run(
        command + child, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "1"}, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "nnunet_lite study: 2 GPU slots but CUDA_VISIBLE_DEVICES='1' makes 1 GPU(s) visible; pass --gpus 1 or "
        "widen CUDA_VISIBLE_DEVICES"
    )
