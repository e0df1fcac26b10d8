"""Signals, worker processes and damaged checkpoints: the conversion is a real subprocess that gets SIGTERM, a
process-group SIGINT (Ctrl-C in a terminal) or SIGKILL in the middle of its work; afterwards nothing may be left in
nnUNet_raw and no worker may survive. Checkpoints that are damaged or crafted give one line, and a crafted one never
runs its code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnunet_lite.cli import main

from .convert_fixtures import make_kvasir, save

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads worker processes from /proc")


def slow_kvasir(root: Path, n: int = 150, side: int = 512) -> Path:
    """Kvasir-SEG with ``n`` noise images (slow to PNG-encode): several seconds of work for two workers."""
    base = root / "Kvasir-SEG"
    rng = np.random.default_rng(0)
    first_image = save(
        rng.integers(0, 256, (side, side, 3), dtype=np.uint8), base / "images" / "case000.jpg", quality=95
    )
    mask = np.zeros((side, side), np.uint8)
    mask[100:300, 150:350] = 255
    first_mask = save(mask, base / "masks" / "case000.png")
    for i in range(1, n):
        shutil.copyfile(first_image, base / "images" / f"case{i:03d}.jpg")
        shutil.copyfile(first_mask, base / "masks" / f"case{i:03d}.png")
    return root


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for c in map(int, children):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status is left


def start_conversion(source: Path, raw: Path, new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "nnUNet_raw": str(raw), "PYTHONUNBUFFERED": "1"}
    env.pop("nnUNet_preprocessed", None)
    return subprocess.Popen(
        [sys.executable, "-m", "nnunet_lite", "convert", "kvasir", str(source), "-np", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=new_session,
        # SIGINT as in a terminal: a runner (e.g. a pytest-xdist worker) may ignore it, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_until_working(proc: subprocess.Popen, raw: Path, timeout: float = 300) -> tuple[Path, set[int]]:
    """The hidden temporary folder once workers have written a few cases, and the process's descendants."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        partials = list(raw.glob(".Dataset504_KvasirSEG.*.partial"))
        if partials and len(list((partials[0] / "labelsTr").glob("*.png"))) >= 2:
            workers = descendants(proc.pid)
            if len(workers) >= 2:
                return partials[0], workers
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the conversion did not start working in time")


@pytest.fixture
def source(tmp_path):
    return slow_kvasir(tmp_path / "download")


@pytest.mark.parametrize("how", ["SIGTERM", "process-group SIGINT"])
def test_signal_during_conversion_removes_everything_and_stops_workers(how, source, tmp_path):
    raw = tmp_path / "nnUNet_raw"
    raw.mkdir()
    proc = start_conversion(source, raw, new_session=how != "SIGTERM")
    partial, workers = wait_until_working(proc, raw)
    if how == "SIGTERM":
        os.kill(proc.pid, signal.SIGTERM)
    else:  # what Ctrl-C in a terminal does: every process of the foreground group gets SIGINT
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (143 if how == "SIGTERM" else 130), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last == (
        "terminated (SIGTERM); nothing was written" if how == "SIGTERM" else "interrupted; nothing was written"
    )
    assert list(raw.iterdir()) == [], f"left behind: {list(raw.iterdir())}"
    assert not partial.exists()
    deadline = time.monotonic() + 20
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if alive(p)], "worker processes survived their parent"


def test_a_killed_conversion_is_cleaned_up_by_the_next_run(source, tmp_path, capsys, monkeypatch):
    """kill -9 cannot be handled: its temporary folder stays, and the next run removes it."""
    raw = tmp_path / "nnUNet_raw"
    raw.mkdir()
    proc = start_conversion(source, raw)
    partial, workers = wait_until_working(proc, raw)
    proc.kill()
    proc.communicate(timeout=60)
    assert partial.exists()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if alive(p)], "worker processes survived their killed parent"

    monkeypatch.setenv("nnUNet_raw", str(raw))
    small = make_kvasir(tmp_path / "small")
    assert main(["convert", "kvasir", str(small), "-np", "1"]) == 0
    err = capsys.readouterr().err
    assert f"note: removed {partial}, left by a killed conversion (process {proc.pid})" in err
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset504_KvasirSEG"]


def test_a_worker_orphaned_while_starting_exits_at_once():
    """A worker still starting (importing) when its parent is killed must not take its new parent for the one to
    watch: it exits in its initializer instead of waiting forever for work."""
    code = (
        "import os, time\n"
        "from nnunet_lite.dataset_conversion._engine.pool import _worker_init\n"
        "_worker_init(PARENT)\n"
        "time.sleep(30)\n"
    )
    gone = subprocess.run([sys.executable, "-c", code.replace("PARENT", "0")], timeout=60)
    assert gone.returncode == 1
    watching = subprocess.Popen([sys.executable, "-c", code.replace("PARENT", str(os.getpid()))])
    time.sleep(3)  # its parent (this test) is alive: it keeps working
    assert watching.poll() is None
    watching.kill()
    watching.wait(timeout=30)


def test_temporary_folder_of_a_running_or_foreign_process_is_kept(tmp_path, capsys, monkeypatch):
    from nnunet_lite.dataset_conversion._engine.output import _owner

    raw = tmp_path / "nnUNet_raw"
    running = raw / f".Dataset504_KvasirSEG.{_owner()}.abcd1234.partial"  # this very process: running
    foreign = raw / ".Dataset504_KvasirSEG.othernode-123.abcd1234.partial"
    running.mkdir(parents=True)
    foreign.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    assert main(["convert", "kvasir", str(make_kvasir(tmp_path / "k")), "-np", "1"]) == 0
    err = capsys.readouterr().err
    assert running.exists() and foreign.exists()
    assert f"note: {foreign} is a temporary folder from host othernode; remove it if no conversion" in err


@pytest.mark.parametrize("value", ["0", "-4", "two"])
def test_num_workers_must_be_a_positive_integer(value, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    with pytest.raises(SystemExit) as exc:
        main(["convert", "kvasir", str(make_kvasir(tmp_path / "k")), "-np", value])
    assert exc.value.code == 2
    assert "argument --num-workers/-np: expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()


def test_overwrite_says_that_preprocessed_data_is_stale(tmp_path, capsys, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
        (tmp_path / var).mkdir()
    source = make_kvasir(tmp_path / "k")
    assert main(["convert", "kvasir", str(source), "-np", "1"]) == 0
    assert "stale" not in capsys.readouterr().out
    assert main(["convert", "kvasir", str(source), "-np", "1", "--overwrite"]) == 0
    assert "stale" not in capsys.readouterr().out  # never planned: nothing is stale
    (tmp_path / "nnUNet_preprocessed" / "Dataset504_KvasirSEG").mkdir()
    assert main(["convert", "kvasir", str(source), "-np", "1", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "Dataset504_KvasirSEG holds plans, splits_final.json and preprocessed data made from the dataset" in out
    assert "run nnUNetv2_plan_and_preprocess -d 504 --verify_dataset_integrity again" in out


# --------------------------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------------------------


class _Crafted:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _checkpoints(folder: Path) -> dict[str, Path]:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    garbage = folder / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 20)
    good = folder / "good.pth"
    torch.save(
        {
            "network_weights": {"w": torch.zeros(2)},
            "logging": {"epoch_start_timestamps": [0.0, 10.0], "epoch_end_timestamps": [4.0, np.float64(16.0)]},
            "current_epoch": 2,
            "_best_ema": np.float64(0.5),
            "init_args": {"device": torch.device("cpu")},
        },
        good,
    )
    truncated = folder / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    crafted = folder / "crafted.pth"
    torch.save({"network_weights": {}, "x": _Crafted(folder / "PWNED")}, crafted)
    return {"garbage": garbage, "truncated": truncated, "crafted": crafted, "good": good}


def test_checkpoint_reader_allows_what_nnunet_stores_and_refuses_the_rest(tmp_path):
    from nnunet_lite.checkpoints import CheckpointError, load_checkpoint

    files = _checkpoints(tmp_path)
    assert load_checkpoint(files["good"])["_best_ema"] == 0.5  # numpy scalars are allow-listed
    for name, needle in (
        ("garbage", "cannot read checkpoint: truncated, damaged or not a PyTorch file"),
        ("truncated", "cannot read checkpoint: truncated, damaged or not a PyTorch file"),
        ("crafted", "refusing to unpickle"),
    ):
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(files[name])
        text = str(exc.value)
        assert text.startswith(str(files[name])) and needle in text and "\n" not in text, text
    assert not (tmp_path / "PWNED").exists(), "the crafted checkpoint ran its code"


def _fake_results(root: Path, checkpoint: Path) -> Path:
    """nnUNet_results/Dataset990_Fake/nnUNetTrainer__nnUNetPlans__2d with plans.json, dataset.json, fold_0."""
    model = root / "Dataset990_Fake" / "nnUNetTrainer__nnUNetPlans__2d"
    (model / "fold_0").mkdir(parents=True)
    (model / "plans.json").write_text(
        json.dumps({"dataset_name": "Dataset990_Fake", "plans_name": "nnUNetPlans", "configurations": {}})
    )
    (model / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}, "file_ending": ".png"}))
    shutil.copyfile(checkpoint, model / "fold_0" / "checkpoint_final.pth")
    return model


@pytest.mark.parametrize("kind", ["garbage", "truncated", "crafted"])
def test_export_refuses_bad_checkpoints_with_one_line(kind, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    files = _checkpoints(tmp_path / "files")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
        (tmp_path / var).mkdir()
    model = _fake_results(tmp_path / "nnUNet_results", files[kind])
    code = main(["export", "-d", "990", "-c", "2d", "-tr", "nnUNetTrainer", "-f", "0", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(model / "fold_0" / "checkpoint_final.pth") in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "files" / "PWNED").exists()


@pytest.mark.parametrize("kind", ["garbage", "crafted"])
def test_compare_costs_refuse_bad_checkpoints_with_one_line(kind, tmp_path, monkeypatch):
    from nnunet_lite.comparison.compare import model_costs
    from nnunet_lite.comparison.nnunet_io import ComparisonError, ModelFolder

    files = _checkpoints(tmp_path / "files")
    model = _fake_results(tmp_path / "results", files[kind])
    folder = ModelFolder(trainer="nnUNetTrainer", plans="nnUNetPlans", configuration="2d", path=model)
    with pytest.raises(ComparisonError) as exc:
        model_costs(folder, ["0"])
    assert str(model / "fold_0" / "checkpoint_final.pth") in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "files" / "PWNED").exists()
    shutil.copyfile(files["good"], model / "fold_0" / "checkpoint_final.pth")
    costs = model_costs(folder, ["0"])
    assert costs["seconds_per_epoch"] == pytest.approx(5.0) and costs["epochs"] == "2"  # (4 + 6) / 2


def test_profile_fold_must_be_a_number_or_all(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile", "-f", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument -f: a fold is a number (0-4 for nnU-Net's 5 folds) or 'all', got 'x'" in err
    assert "Traceback" not in err
