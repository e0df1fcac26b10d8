"""``nnunet_lite study``: the study file's validation, the runner's command line, and a tiny study end to end
(killed after its first training, then continued without retraining it)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnunet_lite.cli import main

pytest.importorskip("tomllib", reason="nnunet_lite study needs Python >= 3.11")

from nnunet_lite.study.job import resume_flag  # noqa: E402
from nnunet_lite.study.model import runtime_minutes  # noqa: E402
from nnunet_lite.study.runner import RunOptions, snakemake_command  # noqa: E402
from nnunet_lite.study.study import Study  # noqa: E402

from .conftest import BIN  # noqa: E402

GOOD = """
name = "tiny"
work_dir = "work"
configurations = ["2d"]
trainers = ["nnUNetTrainerLGMSNet", "nnUNetTrainerAULUNet"]
folds = [0, 1]
baseline = "nnUNetTrainerLGMSNet"

[nnunet]
raw = "work/nnUNet_raw"
preprocessed = "work/nnUNet_preprocessed"
results = "work/nnUNet_results"

[[datasets]]
id = 993
synthetic = { num_train = 10, num_test = 2, seed = 3 }

[budget]
epochs = 1
iterations_per_epoch = 4
val_iterations_per_epoch = 1

[resources.train]
cpus = 1

[resources.predict]
cpus = 1

[env]
nnUNet_compile = "f"

[report]
bootstrap = 200
latency = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


SYNTHETIC = "synthetic = { num_train = 10, num_test = 2, seed = 3 }"
BAD_FIELDS = [
    ((SYNTHETIC, 'convert = "isic2018"'), "datasets[0]: convert = 'isic2018' needs source"),
    ((SYNTHETIC, 'convert = "isic2019"\nsource = "x"'), "datasets[0].convert: unknown converter 'isic2019'"),
    (("folds = [0, 1]", "folds = [0, -1]"), "folds[1]: Input should be greater than or equal to 0"),
    (('"nnUNetTrainerAULUNet"]', '"nnUNetTrainer AULUNet"]'), "trainers: 'nnUNetTrainer AULUNet' is not a trainer"),
    (("cpus = 1\n\n[resources.predict]", "cpus = 0\n\n[resources.predict]"), "resources.train.cpus: Input should be"),
    (("[report]", '[report]\ntime = "2h"'), "report.time: Extra inputs are not permitted"),
    (("epochs = 1", 'epochs = "one"'), "budget.epochs: Input should be a valid integer"),
    (("[budget]", "[budget\n"), "not valid TOML"),
    (("folds = [0, 1]", 'folds = [0, 1]\nrobustness = "mri"'), "robustness: unknown corruption suite 'mri'"),
    (
        ('configurations = ["2d"]', 'configurations = ["3d_lowres", "3d_cascade_fullres"]'),
        "folds: 3d_cascade_fullres trains on the 3d_lowres predictions of all 5 folds (folds = [0, 1]); set folds = "
        "[0, 1, 2, 3, 4] or remove 3d_cascade_fullres",
    ),
]


@pytest.mark.parametrize("change, message", BAD_FIELDS)
def test_bad_study_file_gets_one_line_naming_the_field(tmp_path, capsys, change, message):
    text = GOOD.replace(*change)
    assert text != GOOD
    assert main(["study", "status", str(write(tmp_path, text))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(tmp_path / "study.toml") in err[0] and message in err[0], err[0]


def test_study_resolves_trainings_budget_names_and_environment(tmp_path):
    study = Study.load(write(tmp_path, GOOD.replace('plans = ["default"]', "")), environ={})
    trainings = study.trainings()
    assert [(t.trainer, t.fold) for t in trainings] == [
        ("nnUNetTrainerLGMSNet_1ep4it", 0),
        ("nnUNetTrainerLGMSNet_1ep4it", 1),
        ("nnUNetTrainerAULUNet_1ep4it", 0),
        ("nnUNetTrainerAULUNet_1ep4it", 1),
    ]
    assert trainings[0].fold_dir == (
        tmp_path / "work/nnUNet_results/Dataset993_SyntheticLesions/nnUNetTrainerLGMSNet_1ep4it__nnUNetPlans__2d/fold_0"
    )
    env = study.environment()
    assert env["nnUNet_raw"] == str(tmp_path / "work" / "nnUNet_raw") and env["nnUNet_compile"] == "f"
    assert str(study.budget_folder) in env["nnUNet_extTrainer"].split(os.pathsep)
    assert study.baseline == "nnUNetTrainerLGMSNet_1ep4it__nnUNetPlans"


def test_matched_plans_and_paths_from_environment(tmp_path):
    text = GOOD.replace("folds = [0, 1]", 'folds = [0, 1]\nplans = ["default", "matched:nnUNetTrainerAULUNet"]')
    text = text.split("[nnunet]")[0] + "[[datasets]]" + text.split("[[datasets]]")[1]
    env = {v: str(tmp_path / v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    study = Study.load(write(tmp_path, text.replace("[budget]", "[unused]").split("[unused]")[0]), environ=env)
    models = sorted({(t.trainer, t.plans) for t in study.trainings()})
    assert models == [
        ("nnUNetTrainer", "nnUNetPlans_matched_aulunet"),
        ("nnUNetTrainerAULUNet", "nnUNetPlans"),
        ("nnUNetTrainerLGMSNet", "nnUNetPlans"),
    ]
    assert study.paths["nnUNet_results"] == tmp_path / "nnUNet_results"
    with pytest.raises(Exception, match=r"nnunet.raw is not set and neither is \$nnUNet_raw"):
        Study.load(tmp_path / "study.toml", environ={})


def test_runtime_minutes():
    assert [runtime_minutes(t) for t in ("90", "90m", "2h", "1d", "01:30:00", "1-00:00:00")] == [
        90,
        90,
        120,
        1440,
        90,
        1440,
    ]
    with pytest.raises(ValueError, match="time limit"):
        runtime_minutes("two hours")


def test_resume_flag_follows_the_checkpoints(tmp_path):
    import torch

    assert resume_flag(tmp_path) == []
    torch.save({"current_epoch": 2, "network_weights": {}}, tmp_path / "checkpoint_latest.pth")
    assert resume_flag(tmp_path) == ["--c"]
    # cancelled while nnU-Net wrote it: a truncated checkpoint is set aside, --c would crash on it
    data = (tmp_path / "checkpoint_latest.pth").read_bytes()
    (tmp_path / "checkpoint_latest.pth").write_bytes(data[: len(data) // 2])
    assert resume_flag(tmp_path) == []
    assert (tmp_path / "checkpoint_latest.pth.damaged").is_file()
    torch.save({"current_epoch": 1, "network_weights": {}}, tmp_path / "checkpoint_best.pth")
    assert resume_flag(tmp_path) == ["--c"]
    # killed during validation: only validate again
    torch.save({"current_epoch": 1, "network_weights": {}}, tmp_path / "checkpoint_final.pth")
    assert resume_flag(tmp_path) == ["--val"]


def test_snakemake_command_local_and_slurm(tmp_path):
    study = Study.load(write(tmp_path, GOOD), environ={})
    local = snakemake_command(study, RunOptions(cores=2, gpus=4))
    assert local[1:3] == ["-m", "snakemake"] and "--rerun-incomplete" in local
    assert local[local.index("--resources") + 1] == "gpu=4" and local[local.index("--cores") + 1] == "2"
    slurm = snakemake_command(study, RunOptions(executor="slurm", slurm_partition="gpu", jobs=20))
    assert slurm[slurm.index("--executor") + 1] == "slurm" and "slurm=1" in slurm
    assert slurm[slurm.index("--default-resources") + 1] == "slurm_partition=gpu" and "--cores" not in slurm
    # sacct's "CANCELLED by <uid>" is not recognised by the plugin: squeue is the default status command
    assert slurm[slurm.index("--slurm-status-command") + 1] == "squeue"
    own = snakemake_command(study, RunOptions(executor="slurm", extra=["--slurm-status-command", "sacct"]))
    assert own.count("--slurm-status-command") == 1 and own[-1] == "sacct"


def test_budget_trainers_checkpoint_often_enough_to_resume(tmp_path):
    study = Study.load(write(tmp_path, GOOD.replace("epochs = 1", "epochs = 20")), environ={})
    module = study.write_budget_trainers().read_text()
    assert "self.num_epochs = 20" in module and "self.save_every = min(self.save_every, 4)" in module


def test_robustness_and_figure_rules_join_the_workflow(tmp_path):
    pytest.importorskip("snakemake")
    text = GOOD.replace("folds = [0, 1]", 'folds = [0, 1]\nrobustness = "dermoscopy"\nfigure = true')
    out = subprocess.run(
        [str(BIN / "nnunet_lite"), "study", "run", str(write(tmp_path, text)), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    rules = out.stdout + out.stderr
    for rule in ("robustness_make", "robustness", "figure"):  # one job each: one tested dataset, one configuration
        assert re.search(rf"^{rule}\s+1$", rules, re.MULTILINE), rules[-3000:]


def test_init_writes_valid_files_and_refuses_to_overwrite(tmp_path, capsys):
    for flag in ([], ["--example"]):
        path = tmp_path / f"s{len(flag)}.toml"
        assert main(["study", "init", str(path), *flag]) == 0
        env = {v: str(tmp_path) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        study = Study.load(path, environ=env)
        assert study.trainings()
        assert main(["study", "init", str(path), *flag]) == 1
    assert "pass --overwrite" in capsys.readouterr().err


def _status(study_file: Path) -> list[dict]:
    out = subprocess.run(
        [str(BIN / "nnunet_lite"), "study", "status", str(study_file), "--json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_tiny_study_killed_after_first_training_continues_without_retraining(tmp_path):
    study_file = write(tmp_path, GOOD)
    cmd = [str(BIN / "nnunet_lite"), "study", "run", str(study_file), "--cores", "1", "--gpus", "0"]
    early = Study.load(study_file, environ={}).work_dir / "report" / "study_report.md"
    early.parent.mkdir(parents=True)
    early.write_text("# an early `study report`, before anything ran\n")  # must not stop the run
    log = tmp_path / "first_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    study = Study.load(study_file, environ={})
    deadline = time.time() + 900
    while "(Rule: train)" not in log.read_text() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)  # until Snakemake reports the first training finished
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run: Snakemake, the runner and any training in progress
    proc.wait()
    done = [t for t in study.trainings() if (t.fold_dir / "validation" / "summary.json").is_file()]
    assert done, log.read_text()[-3000:]
    first = done[0]
    checkpoint = first.fold_dir / "checkpoint_final.pth"
    first_mtime = checkpoint.stat().st_mtime_ns

    status = {(r["trainer"], r["fold"]): r for r in _status(study_file)}
    assert status[(first.trainer, first.fold)]["status"] == "done"
    assert status[(first.trainer, first.fold)]["epochs_done"] == 1
    assert sum(r["status"] == "done" for r in status.values()) < 4

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert checkpoint.stat().st_mtime_ns == first_mtime, "the finished fold was retrained"
    jobs = [line for line in (second.stdout + second.stderr).splitlines() if "nnunet_lite.study.job" in line]
    assert len(jobs) == 3 and not any(f"job {first.fold_dir} " in line for line in jobs), jobs
    rows = _status(study_file)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert all(r["epochs_done"] == r["epochs_planned"] == 1 for r in rows)

    report = (study.work_dir / "report" / "study_report.md").read_text()
    table = report.split("| model")[1].split("\n\n")[0].splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == [
        "nnUNetTrainerLGMSNet_1ep4it",
        "nnUNetTrainerAULUNet_1ep4it",
    ]
    assert all("MISSING" not in line for line in table[2:])
    assert (
        "test Dice" in report
        and (study.work_dir / "report" / "Dataset993_SyntheticLesions_2d" / "comparison.png").is_file()
    )
    predictions = study.work_dir / "predictions" / "Dataset993_SyntheticLesions"
    assert sorted(p.name for p in predictions.iterdir()) == [
        "nnUNetTrainerAULUNet_1ep4it__nnUNetPlans__2d",
        "nnUNetTrainerLGMSNet_1ep4it__nnUNetPlans__2d",
    ]
    assert all(len(list(p.glob("*.png"))) == 2 for p in predictions.iterdir())

    # a fold whose final checkpoint is gone: status leaves it, and the next run trains exactly that fold again
    others = {t.key: t.fold_dir.joinpath("checkpoint_final.pth").stat().st_mtime_ns for t in study.trainings()[1:]}
    gone = study.trainings()[0]
    (gone.fold_dir / "checkpoint_final.pth").unlink()
    assert [r["status"] for r in _status(study_file)][0] != "done"
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    jobs = [line for line in (third.stdout + third.stderr).splitlines() if "nnunet_lite.study.job" in line]
    assert len(jobs) == 1 and f"job {gone.fold_dir} " in jobs[0], jobs
    assert (gone.fold_dir / "checkpoint_final.pth").is_file()
    assert {t.key: t.fold_dir.joinpath("checkpoint_final.pth").stat().st_mtime_ns for t in study.trainings()[1:]} == (
        others
    )
    assert [r["status"] for r in _status(study_file)] == ["done"] * 4


def _snakemake_dry_run(study_file: Path, gpus: int = 0, quiet: bool = True) -> str:
    """The output of ``study run --dry-run``'s Snakemake command (run directly: no budget trainers to write, so no
    nnU-Net import); with quiet=False every job is printed with its resources and shell command, and Snakemake's
    own defaults apply to resources a rule leaves out (``--default-resources``, as the SLURM runner passes it)."""
    study = Study.load(study_file, environ={})
    cmd = snakemake_command(study, RunOptions(dry_run=True, gpus=gpus, cores=2))
    if not quiet and "--quiet" in cmd:
        del cmd[cmd.index("--quiet") : cmd.index("--quiet") + 2]
        cmd += ["--default-resources", "slurm_partition=anything"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **study.environment()})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _dry_run(study_file: Path) -> dict[str, int]:
    """Jobs per rule that ``study run --dry-run`` plans; {} for "Nothing to be done"."""
    text = _snakemake_dry_run(study_file)
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def _finished_tiny_study(tmp_path: Path) -> Study:
    """The files of a finished GOOD study (empty, with increasing mtimes along the workflow), without running it."""
    study = Study.load(write(tmp_path, GOOD), environ={})
    ds = "Dataset993_SyntheticLesions"

    def make(path: Path, stamp: int, directory: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=True) if directory else path.write_bytes(b"")
        os.utime(path, (stamp, stamp))

    t = 1_700_000_000
    make(study.paths["nnUNet_raw"] / ds / "dataset.json", t)
    make(study.paths["nnUNet_preprocessed"] / ds / "nnUNetPlans.json", t + 10)
    for training in study.trainings():
        make(training.fold_dir / "checkpoint_final.pth", t + 20)
        make(training.fold_dir / "checkpoint_best.pth", t + 20)
        make(training.fold_dir / "validation" / "summary.json", t + 21)
        make(study.work_dir / "predictions" / ds / training.model_folder, t + 30, directory=True)
    make(study.work_dir / "profile" / ds / "nnUNetPlans__2d.json", t + 30)
    make(study.work_dir / "report" / "study_report.md", t + 40)
    return study


def test_an_early_report_never_stops_the_study(tmp_path):
    pytest.importorskip("snakemake")
    study_file = write(tmp_path, GOOD)
    report = Study.load(study_file, environ={}).work_dir / "report" / "study_report.md"
    report.parent.mkdir(parents=True)
    report.write_text("# written by `study report` before anything ran\n")
    jobs = _dry_run(study_file)
    assert jobs.get("train") == 4 and jobs.get("predict_test") == 2 and jobs.get("report") == 1, jobs


def test_status_and_run_agree_on_a_fold_whose_final_checkpoint_is_gone(tmp_path):
    pytest.importorskip("snakemake")
    from nnunet_lite.study.status import study_status

    study = _finished_tiny_study(tmp_path)
    assert [r["status"] for r in study_status(study)] == ["done"] * 4
    assert _dry_run(study.file) == {}
    gone = study.trainings()[3]
    (gone.fold_dir / "checkpoint_final.pth").unlink()
    rows = study_status(study)
    assert [r["status"] for r in rows] == ["done", "done", "done", "interrupted"]
    assert rows[3]["note"] == "checkpoint_final.pth is gone: trained again; resumes from checkpoint_best.pth with --c"
    # what status leaves is what run does: that one training, its model's test predictions and the report
    assert _dry_run(study.file) == {"retrain_request": 1, "train": 1, "predict_test": 1, "report": 1, "all": 1}
    (gone.fold_dir / "checkpoint_best.pth").unlink()
    assert study_status(study)[3]["status"] == "missing"


def _planned_jobs(study_file: Path, gpus: int) -> list[dict]:
    """Every job of a dry-run as {rule, input, output, resources, shell}."""
    jobs = []
    for line in _snakemake_dry_run(study_file, gpus, quiet=False).splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            jobs.append({"rule": m.group(1), "input": [], "output": "", "resources": {}, "shell": ""})
        elif line.startswith("    input: "):
            jobs[-1]["input"] = line.split(": ", 1)[1].split(", ")
        elif line.startswith("    output: "):
            jobs[-1]["output"] = line.split(": ", 1)[1]
        elif line.startswith("    resources: "):
            jobs[-1]["resources"] = dict(kv.split("=", 1) for kv in line.split(": ", 1)[1].split(", "))
        elif line.startswith("Shell command: "):
            jobs[-1]["shell"] = line
    return jobs


CASCADE_STUDY = GOOD.replace('configurations = ["2d"]', 'configurations = ["3d_lowres", "3d_cascade_fullres"]').replace(
    "folds = [0, 1]", "folds = [0, 1, 2, 3, 4]"
)


def test_cascade_waits_for_every_lowres_fold_and_predicts_from_lowres_predictions(tmp_path):
    """nnU-Net's 3d_cascade_fullres trains on the 3d_lowres predictions that all five 3d_lowres validations write,
    and predicts from the 3d_lowres test predictions: both are inputs of its jobs, so it never starts early."""
    pytest.importorskip("snakemake")
    study = Study.load(write(tmp_path, CASCADE_STUDY), environ={})
    jobs = _planned_jobs(study.file, gpus=0)
    results = study.paths["nnUNet_results"] / "Dataset993_SyntheticLesions"
    predictions = study.work_dir / "predictions" / "Dataset993_SyntheticLesions"
    folders = sorted({t.model_folder for t in study.trainings()})  # TRAINER(budget)__nnUNetPlans__CFG
    assert len(folders) == 4
    for lowres_folder in [f for f in folders if f.endswith("__3d_lowres")]:
        cascade_folder = lowres_folder.replace("__3d_lowres", "__3d_cascade_fullres")
        summaries = {str(results / lowres_folder / f"fold_{f}" / "validation" / "summary.json") for f in range(5)}
        cascade = [j for j in jobs if j["rule"] == "train" and f"/{cascade_folder}/" in j["output"]]
        assert len(cascade) == 5
        for j in cascade:
            assert summaries <= set(j["input"]), j["input"]
        lowres_train = [j for j in jobs if j["rule"] == "train" and f"/{lowres_folder}/" in j["output"]]
        assert len(lowres_train) == 5 and all(not (summaries & set(j["input"])) for j in lowres_train)
        [predict] = [j for j in jobs if j["rule"] == "predict_test" and j["output"].endswith(f"/{cascade_folder}")]
        previous = str(predictions / lowres_folder)
        assert previous in predict["input"] and f"-prev_stage_predictions {previous}" in predict["shell"]
        [lowres_predict] = [j for j in jobs if j["rule"] == "predict_test" and j["output"] == previous]
        assert "-prev_stage_predictions" not in lowres_predict["shell"]


def test_cascade_refuses_what_it_cannot_run(tmp_path, capsys):
    text = CASCADE_STUDY.replace("folds = [0, 1, 2, 3, 4]", 'folds = [0, 1, 2, 3, 4]\nrobustness = "generic"')
    assert main(["study", "status", str(write(tmp_path, text))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "3d_cascade_fullres: zero-shot and robustness runs predict without the 3d_lowres stage the cascade needs; run "
        "them in a study without 3d_cascade_fullres"
    ), err


GPU_STUDY = (
    GOOD.replace("[resources.train]\n", "[resources.train]\ngpus = 1\n")
    .replace("[resources.predict]\n", "[resources.predict]\ngpus = 1\n")
    .replace("folds = [0, 1]", 'folds = [0, 1]\nrobustness = "dermoscopy"\nzeroshot = [{ source = 993, target = 995 }]')
    .replace("[budget]", "[[datasets]]\nid = 995\nsynthetic = { num_train = 2 }\ntest = false\n\n[budget]")
)


def test_every_job_gets_its_step_memory_and_every_gpu_step_a_slot(tmp_path):
    pytest.importorskip("snakemake")
    jobs = _planned_jobs(write(tmp_path, GPU_STUDY), gpus=2)
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    gpu_rules = {"train", "predict_test", "zeroshot", "profile", "robustness"}
    assert gpu_rules | {"dataset", "preprocess", "robustness_make", "report"} <= set(by_rule), sorted(by_rule)
    # the study file gives no mem_mb: each step's documented default (docs/studies-slurm.md), never Snakemake's
    expected = {"preprocess": "16000", "train": "32000", "predict_test": "16000", "zeroshot": "16000"}
    expected |= {"profile": "16000", "robustness": "16000", "dataset": "4000", "robustness_make": "4000"}
    expected |= {"report": "4000"}
    for rule, memory in expected.items():
        assert {job["resources"].get("mem_mb") for job in by_rule[rule]} == {memory}, (rule, by_rule[rule])
    lock_dir = Study.load(tmp_path / "study.toml", environ={}).work_dir / "state" / "gpu_slots"
    for rule in gpu_rules:
        for job in by_rule[rule]:
            assert f"--gpu-slots 2 --lock-dir {lock_dir} -- " in job["shell"], (rule, job["shell"])
            assert "nnunet_lite.study.job" in job["shell"] or "-m nnunet_lite.study.slot" in job["shell"]
    for rule in ("dataset", "preprocess", "robustness_make", "report"):
        assert all("--gpu-slots" not in job["shell"] for job in by_rule[rule]), rule


def test_concurrent_trainings_get_different_gpus(tmp_path):
    from nnunet_lite.study.job import gpu_slot

    with gpu_slot(tmp_path, 2) as first, gpu_slot(tmp_path, 2) as second:
        assert {first, second} == {0, 1}
    with gpu_slot(tmp_path, 2) as again:  # released when the holder ends
        assert again == 0


def test_status_reads_failed_running_and_interrupted_folds(tmp_path):
    from nnunet_lite.study.job import main as job_main
    from nnunet_lite.study.status import format_status, log_file, study_status

    study = Study.load(write(tmp_path, GOOD), environ={})
    failed, interrupted, running, _ = study.trainings()
    log = log_file(study, failed)
    assert job_main([str(failed.fold_dir), str(log), "--", sys.executable, "-c", "import sys; sys.exit(3)"]) == 3

    interrupted.fold_dir.mkdir(parents=True)
    (interrupted.fold_dir / "checkpoint_latest.pth").write_bytes(b"")
    (interrupted.fold_dir / "debug.json").write_text(json.dumps({"num_epochs": "7"}))
    (interrupted.fold_dir / "training_log_2026_1_1_00_00_00.txt").write_text(
        "2026-01-01 00:00:01.0: Epoch 0\n2026-01-01 00:00:09.0: Epoch time: 8.0 s\n"
        "2026-01-01 00:00:09.5: Epoch 1\n2026-01-01 00:00:17.0: Epoch time: 7.5 s\n2026-01-01 00:00:17.5: Epoch 2\n"
    )
    marker = log_file(study, running)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.with_name(marker.name + ".running").write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": None})
    )

    rows = study_status(study)
    assert [r["status"] for r in rows] == ["failed", "interrupted", "running", "missing"]
    assert "exit 3" in rows[0]["note"] and str(log) in rows[0]["note"]
    assert (rows[1]["epochs_done"], rows[1]["epochs_planned"]) == (2, 7)
    assert rows[3]["epochs_planned"] == 1  # from the study's budget before the training starts
    assert format_status(rows).endswith(
        "4 trainings: 1 running, 1 interrupted, 1 failed, 1 missing; left: 4 trainings, 8 epochs"
    )


def test_missing_snakemake_names_the_extra(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "snakemake" else real(name, *a))
    assert main(["study", "run", str(write(tmp_path, GOOD)), "--gpus", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "nnunet_lite study: Snakemake is not installed: pip install 'nnunet-lite[study]'  "
        "(Snakemake 9 needs Python >= 3.11)"
    ]


ENSEMBLE_STUDY = GOOD.replace(
    "folds = [0, 1]", "folds = [0, 1]\nzeroshot = [{ source = 993, target = 995, ensemble = true }]"
).replace("[budget]", "[[datasets]]\nid = 995\nsynthetic = { num_train = 2 }\ntest = false\n\n[budget]")


def test_zeroshot_fold_ensemble_is_one_job_per_model_with_nnunets_ensemble(tmp_path):
    pytest.importorskip("snakemake")
    jobs = _planned_jobs(write(tmp_path, ENSEMBLE_STUDY), gpus=0)
    zeroshot = [job for job in jobs if job["rule"].startswith("zeroshot")]
    # one fold-ensemble prediction per model (2 trainers), none per fold
    assert [job["rule"] for job in zeroshot] == ["zeroshot_ensemble"] * 2
    assert all("--ensemble" in job["shell"] and "-f 0 1 " in job["shell"] for job in zeroshot)
    per_fold = _planned_jobs(write(tmp_path, ENSEMBLE_STUDY.replace("ensemble = true", "ensemble = false")), gpus=0)
    assert [job["rule"] for job in per_fold if job["rule"].startswith("zeroshot")] == ["zeroshot"] * 2


def test_zeroshot_ensemble_needs_two_folds(tmp_path, capsys):
    study_file = write(tmp_path, ENSEMBLE_STUDY.replace("folds = [0, 1]", "folds = [0]"))
    assert main(["study", "status", str(study_file)]) != 0
    err = capsys.readouterr().err.strip()
    assert "zeroshot[0].ensemble: a fold ensemble needs at least 2 folds (folds = [0])" in err
    assert len(err.splitlines()) == 1
