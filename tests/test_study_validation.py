"""``nnunet_lite study``: study files and options that cannot be right are refused before anything runs, each with
one line naming the field (or option) and what to do, and nothing written (docs/reliability.md, "Studies")."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from nnunet_lite.cli import build_parser, main

pytest.importorskip("tomllib", reason="nnunet_lite study needs Python >= 3.11")

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
raw = "nnUNet_raw"
preprocessed = "nnUNet_preprocessed"
results = "nnUNet_results"

[[datasets]]
id = 993
synthetic = { num_train = 10, num_test = 2, seed = 3 }

[[datasets]]
id = 994
synthetic = { num_train = 2, num_test = 2, seed = 4 }
train = false

[[zeroshot]]
source = 993
target = 994

[budget]
epochs = 1
iterations_per_epoch = 4

[report]
bootstrap = 200
"""
NAME = "Dataset993_SyntheticLesions"


def write(tmp_path: Path, text: str = GOOD) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Runs ``nnunet_lite study ...``; asserts exit 1, a single stderr line and no file created; returns the line."""
    before = tree(tmp_path)
    assert main(["study", *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert tree(tmp_path) == before, tree(tmp_path) - before
    return err[0]


def run_refused(tmp_path: Path, capsys: pytest.CaptureFixture, text: str, *options: str) -> str:
    return refused(tmp_path, capsys, ["run", str(write(tmp_path, text)), "--dry-run", "--gpus", "0", *options])


STUDY_FILE_MISTAKES = [
    pytest.param(
        ('baseline = "nnUNetTrainerLGMSNet"', 'baseline = "nnUNetTrainerLGMSNt"'),
        "baseline: 'nnUNetTrainerLGMSNt' is not one of the study's models; did you mean 'nnUNetTrainerLGMSNet'?",
        id="baseline-typo",
    ),
    pytest.param(
        ('baseline = "nnUNetTrainerLGMSNet"', 'baseline = "nnUNetTrainer"'),
        "baseline: 'nnUNetTrainer' is not one of the study's models; did you mean 'nnUNetTrainerLGMSNet'?",
        id="baseline-not-trained",
    ),
    pytest.param(
        ('baseline = "nnUNetTrainerLGMSNet"', 'baseline = "UNet"'),
        "baseline: 'UNet' is not one of the study's models; choose one of nnUNetTrainerLGMSNet, nnUNetTrainerAULUNet",
        id="baseline-unrelated",
    ),
    pytest.param(
        ("target = 994", "target = 993"),
        "zeroshot[0]: source and target are both dataset 993; a zero-shot pair evaluates on another dataset (the "
        "source's own test set is already in the report)",
        id="zeroshot-source-is-target",
    ),
    pytest.param(
        ('configurations = ["2d"]', 'configurations = ["3d_fullres", "3d_cascade_fullres"]'),
        "configurations: 3d_cascade_fullres trains on 3d_lowres predictions: list 3d_lowres too",
        id="cascade-without-lowres",
    ),
    pytest.param(
        ('configurations = ["2d"]', 'configurations = ["2d fast"]'),
        "configurations: '2d fast' is not a configuration name; nnU-Net's are 2d, 3d_fullres, 3d_lowres, "
        "3d_cascade_fullres",
        id="configuration-name",
    ),
    pytest.param(
        ("folds = [0, 1]", "fold = [0, 1]"),
        "fold: Extra inputs are not permitted; did you mean 'folds'?",
        id="unknown-field",
    ),
    pytest.param(
        ("epochs = 1", "epoch = 1"),
        "budget.epoch: Extra inputs are not permitted; did you mean 'epochs'?",
        id="unknown-nested-field",
    ),
    pytest.param(
        ("seed = 3 }", "seed = 3, sise = 64 }"),
        "datasets[0].synthetic.sise: Extra inputs are not permitted; did you mean 'size'?",
        id="unknown-field-in-a-list",
    ),
    pytest.param(
        ("bootstrap = 200", "bootstrap = 200\ncolour = 1"),
        "report.colour: Extra inputs are not permitted (known here: bootstrap, latency, latency_seconds)",
        id="unknown-field-no-close-match",
    ),
    pytest.param(
        (
            "[budget]",
            '[[ensemble]]\nname = "lite"\ntrainers = ["nnUNetTrainerLGMSNet", "nnUNetTrainerAULUNt"]\n[budget]',
        ),
        "ensemble[0].trainers: 'nnUNetTrainerAULUNt' is not in trainers; did you mean 'nnUNetTrainerAULUNet'?",
        id="ensemble-member-not-trained",
    ),
    pytest.param(
        ("[budget]", '[[ensemble]]\nname = "lite"\ntrainers = ["nnUNetTrainerLGMSNet"]\n[budget]'),
        "ensemble[0].trainers: ['nnUNetTrainerLGMSNet'] averages fewer than 2 different trainers; list at least 2 of "
        "trainers (nnUNetTrainerLGMSNet, nnUNetTrainerAULUNet)",
        id="ensemble-one-member",
    ),
    pytest.param(
        (
            "[budget]",
            '[[ensemble]]\nname = "a"\ntrainers = ["nnUNetTrainerLGMSNet", "nnUNetTrainerAULUNet"]\n' * 2 + "[budget]",
        ),
        "ensemble[0].name: 'a' is used by two ensembles; give each its own name",
        id="ensemble-duplicate-name",
    ),
    pytest.param(
        (
            "seed = 3 }",
            'seed = 3 }\ntest = false\n[[ensemble]]\nname = "a"\n'
            'trainers = ["nnUNetTrainerLGMSNet", "nnUNetTrainerAULUNet"]',
        ),
        "ensemble: no training dataset has test = true, and ensembles average test-set predictions; set test = true "
        "on one or remove [[ensemble]]",
        id="ensemble-without-test-set",
    ),
    # the rest needs the study's folders or nnU-Net's trainer lookup: refused by `study run`, also with --dry-run
    pytest.param(
        ('configurations = ["2d"]', 'configurations = ["3d_fullres"]'),
        f"configurations: '3d_fullres' cannot be trained: {NAME} is 2D: nnU-Net plans only 2d for it; use 2d",
        id="3d-configuration-of-2d-data",
    ),
    pytest.param(
        ('configurations = ["2d"]', 'configurations = ["2D"]'),
        "configurations: '2D' cannot be trained: {NAME} is 2D: nnU-Net plans only 2d for it; did you mean '2d'?",
        id="configuration-case",
    ),
    pytest.param(
        ("folds = [0, 1]", "folds = [0, 5]"),
        f"folds: fold 5 does not exist for {NAME}: nnU-Net's default split (no splits_final.json) has 5 folds (0-4); "
        "nnU-Net would train a random 80:20 split instead; use folds below 5",
        id="fold-outside-5-fold-split",
    ),
    pytest.param(
        ('"nnUNetTrainerAULUNet"]', '"nnUNetTrainerAULUNt"]'),
        "trainers[1]: 'nnUNetTrainerAULUNt' is not a trainer that nnU-Net can find (its own, nnunet_lite's or yours); "
        "did you mean 'nnUNetTrainerAULUNet'?",
        id="unknown-trainer",
    ),
    pytest.param(
        ('"nnUNetTrainerAULUNet"]', '"nnUNetTrainer_5epoch"]'),
        "trainers[1]: 'nnUNetTrainer_5epoch' is not a trainer that nnU-Net can find (its own, nnunet_lite's or yours)"
        "; did you mean 'nnUNetTrainer_5epochs'?",
        id="unknown-nnunet-trainer",
    ),
    pytest.param(
        ("folds = [0, 1]", 'folds = [0, 1]\nplans = ["default", "matched:nnUNetTrainerMedLiteNt"]'),
        "plans[1]: 'nnUNetTrainerMedLiteNt' is not a trainer that nnU-Net can find (its own, nnunet_lite's or yours)"
        "; did you mean 'nnUNetTrainerMedLiteNet'?",
        id="matched-unknown-trainer",
    ),
    pytest.param(
        ("folds = [0, 1]", 'folds = [0, 1]\nplans = ["default", "matched:x"]\nmatched_trainers = ["nnUNetTrainr"]'),
        "matched_trainers[0]: 'nnUNetTrainr' is not a trainer that nnU-Net can find (its own, nnunet_lite's or yours)"
        "; did you mean 'nnUNetTrainer'?",
        id="unknown-matched-trainer",
    ),
]


@pytest.mark.parametrize("change, message", STUDY_FILE_MISTAKES)
def test_study_file_mistakes_are_refused_before_anything_runs(tmp_path, capsys, change, message):
    text = GOOD.replace(*change)
    assert text != GOOD
    line = run_refused(tmp_path, capsys, text)
    assert line.startswith("nnunet_lite study: ") and "study.toml: " in line, line
    assert line.endswith(message.replace("{NAME}", NAME)), line


def test_missing_download_is_refused_while_its_conversion_is_pending(tmp_path, capsys):
    text = GOOD.replace(
        "synthetic = { num_train = 10, num_test = 2, seed = 3 }", 'convert = "kvasir"\nsource = "dl/kv"'
    )
    line = run_refused(tmp_path, capsys, text)
    # a relative source means the study file's folder (the jobs run in work_dir)
    assert line.endswith(
        f"datasets[0].source: {tmp_path / 'dl' / 'kv'} does not exist; give the folder of the official download "
        "(see nnunet_lite convert kvasir --help), relative paths meaning the study file's folder"
    ), line
    # `study init`'s template names placeholder downloads: loading it (status, report) is fine
    assert main(["study", "init", str(tmp_path / "template.toml")]) == 0
    env = {v: str(tmp_path) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    assert Study.load(tmp_path / "template.toml", environ=env).spec.datasets[0].source == Path(
        "/data/downloads/ISIC2018"
    )
    # once converted, the download is no longer needed
    study = Study.load(tmp_path / "study.toml")
    (tmp_path / "nnUNet_raw" / "Dataset993_KvasirSEG").mkdir(parents=True)
    (tmp_path / "nnUNet_raw" / "Dataset993_KvasirSEG" / "dataset.json").write_text('{"file_ending": ".png"}')
    study.check_runnable()


def test_folds_follow_splits_final_json(tmp_path, capsys):
    pre = tmp_path / "nnUNet_preprocessed" / NAME
    pre.mkdir(parents=True)
    (pre / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * 2))
    line = run_refused(tmp_path, capsys, GOOD.replace("folds = [0, 1]", "folds = [0, 1, 2]"))
    assert line.endswith(
        f"folds: fold 2 does not exist for {NAME}: {pre / 'splits_final.json'} has 2 folds (0-1); nnU-Net would "
        "train a random 80:20 split instead; use folds below 2"
    ), line
    (pre / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * 10))
    study = Study.load(write(tmp_path, GOOD.replace("folds = [0, 1]", "folds = [7, 9]")))
    assert study.fold_count(study.spec.datasets[0], NAME) == (10, str(pre / "splits_final.json"))
    study.check_runnable()  # a 10-fold split has fold 9


def test_configurations_of_existing_plans_decide(tmp_path, capsys):
    """Custom configurations (nnU-Net's `inherits_from`) are allowed where the dataset's nnUNetPlans.json has them."""
    pre = tmp_path / "nnUNet_preprocessed" / NAME
    pre.mkdir(parents=True)
    (pre / "nnUNetPlans.json").write_text(
        json.dumps({"configurations": {"2d": {}, "2d_bs48": {"inherits_from": "2d"}}})
    )
    line = run_refused(tmp_path, capsys, GOOD.replace('configurations = ["2d"]', 'configurations = ["2d_bs64"]'))
    assert line.endswith(
        f"configurations: '2d_bs64' cannot be trained: {pre / 'nnUNetPlans.json'} has 2d, 2d_bs48; "
        "did you mean '2d_bs48'?"
    ), line
    Study.load(
        write(tmp_path, GOOD.replace('configurations = ["2d"]', 'configurations = ["2d_bs48"]'))
    ).check_runnable()


def test_work_dir_must_be_a_writable_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "work").write_text("not a folder")
    line = run_refused(tmp_path, capsys, GOOD)
    assert line.endswith(
        f"work_dir: {tmp_path / 'work'} is a file, not a folder; name a folder (it is created if missing)"
    )
    line = run_refused(tmp_path, capsys, GOOD.replace('work_dir = "work"', 'work_dir = "work/study"'))
    assert line.endswith(
        f"work_dir: {tmp_path / 'work' / 'study'} cannot be created: {tmp_path / 'work'} is a file; name a folder"
    ), line
    (tmp_path / "work").unlink()
    # root may write anywhere, so the permission is simulated where access(2) is asked
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    line = run_refused(tmp_path, capsys, GOOD)
    assert line.endswith(
        f"work_dir: {tmp_path / 'work'} cannot be created: {tmp_path} is not writable by this user; "
        "choose a folder you can write to"
    ), line


def test_trainer_in_an_extension_folder_is_found_and_suggested(tmp_path, capsys, monkeypatch):
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "my_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
        "class nnUNetTrainerMine(nnUNetTrainer):\n    pass\n"
    )
    monkeypatch.setenv("nnUNet_extTrainer", str(ext))
    text = GOOD.replace('"nnUNetTrainerAULUNet"]', '"nnUNetTrainerMyne"]').split("[budget]")[0]
    line = run_refused(tmp_path, capsys, text)
    assert line.endswith(
        "trainers[1]: 'nnUNetTrainerMyne' is not a trainer that nnU-Net can find (its own, "
        "nnunet_lite's or yours); did you mean 'nnUNetTrainerMine'?"
    ), line
    Study.load(write(tmp_path, text.replace("Myne", "Mine"))).check_trainers()
    # with a budget the trainer must be importable by module name, which a module of an extension folder is not
    line = run_refused(tmp_path, capsys, text.replace("Myne", "Mine") + "[budget]\nepochs = 1\n")
    assert "budget: trainer nnUNetTrainerMine lives in 'my_trainers', which is not importable by name" in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "S", "-n", "--cores", "0"], "argument --cores: expected an integer >= 1, got '0'"),
        (["run", "S", "-n", "--cores", "-2"], "argument --cores: expected an integer >= 1, got '-2'"),
        (["run", "S", "-n", "--gpus", "-1"], "argument --gpus: expected an integer >= 0, got '-1' (0 runs on the CPU)"),
        (["run", "S", "-n", "--jobs", "0"], "argument --jobs: expected an integer >= 1, got '0'"),
        (["report", "S", "--bootstrap", "0"], "argument --bootstrap: expected an integer >= 100, got '0'"),
        (["report", "S", "--bootstrap", "-5"], "argument --bootstrap: expected an integer >= 100, got '-5'"),
    ],
)
def test_option_values_are_refused_by_argparse(tmp_path, capsys, argv, message):
    argv = [str(write(tmp_path)) if a == "S" else a for a in argv]
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["study", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert tree(tmp_path) == before


def test_slurm_executor_needs_sbatch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    line = refused(tmp_path, capsys, ["run", str(write(tmp_path)), "--dry-run", "--executor", "slurm"])
    assert line == (
        "nnunet_lite study: --executor slurm: sbatch is not on PATH; run on a SLURM login node (or load its module), "
        "or drop --executor slurm to run here"
    )


def test_more_gpus_than_visible_are_refused(tmp_path):
    study = write(tmp_path)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [str(BIN / "nnunet_lite"), "study", "run", str(study), "--dry-run", "--gpus", "2"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "nnunet_lite study: --gpus 2: CUDA_VISIBLE_DEVICES='' makes 0 GPU(s) visible here; "
        "pass --gpus 0 to run on the CPU"
    ]
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    "spelling", [["--snakemake-args", "--slurm-no-account"], ["--snakemake-args=--slurm-no-account"]]
)
def test_snakemake_args_may_start_with_dashes(spelling):
    args = build_parser().parse_args(["study", "run", "s.toml", *spelling, "--cores", "1"])
    assert args.snakemake_args == "--slurm-no-account" and args.cores == 1
    args = build_parser().parse_args(["study", "run", "s.toml", "--snakemake-args", "-F", "--dry-run"])
    assert args.snakemake_args == "-F" and args.dry_run


def test_snakemake_args_reach_snakemake_or_are_refused_in_one_line(tmp_path, capsys):
    pytest.importorskip("snakemake")
    study = write(tmp_path)
    line = refused(
        tmp_path, capsys, ["run", str(study), "--dry-run", "--gpus", "0", "--snakemake-args", "'--retries 2"]
    )
    assert line == (
        'nnunet_lite study: --snakemake-args "\'--retries 2": No closing quotation (shell quoting, as on a command '
        'line); quote the whole value once, e.g. --snakemake-args "--retries 2"'
    )
    line = refused(tmp_path, capsys, ["run", str(study), "--dry-run", "--gpus", "0", "--snakemake-args", "--no-such"])
    assert line == (
        "nnunet_lite study: Snakemake rejects the command: unrecognized arguments: --no-such (see python -m snakemake "
        "--help; --snakemake-args passes options through)"
    )
    line = refused(tmp_path, capsys, ["run", str(study), "--dry-run", "--gpus", "0", "--snakemake-args=--retries x"])
    assert "Snakemake rejects the command: argument --retries/--restart-times/-T: invalid int value: 'x'" in line
    # the spelling docs/studies-slurm.md documents, through the real command line and Snakemake's dry run
    out = subprocess.run(
        [str(BIN / "nnunet_lite"), "study", "run", str(study), "--dry-run", "--gpus", "0"]
        + ["--snakemake-args", "--slurm-no-account"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    command = next(line for line in out.stdout.splitlines() if line.startswith("+ "))
    assert command.endswith("--dry-run --quiet rules --slurm-no-account"), command
    assert "train" in out.stdout + out.stderr


def test_matched_plans_name_follows_plan_matched():
    from nnunet_lite.comparison.matched_plans import default_plans_name
    from nnunet_lite.study.model import matched_plans_name

    for trainer in ("nnUNetTrainerLGMSNet", "nnUNetTrainer", "nnUNetTrainer_Mine", "MyTrainer"):
        assert matched_plans_name(trainer) == default_plans_name("nnUNetPlans", trainer, None)
