"""``nnunet_lite study init --protocol``: the three papers' experiments as study files that load, validate and plan."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from nnunet_lite.cli import main

pytest.importorskip("tomllib", reason="nnunet_lite study needs Python >= 3.11")

from nnunet_lite.study.model import load_study_model  # noqa: E402
from nnunet_lite.study.protocols import ARCHIVE_FOLDERS  # noqa: E402
from nnunet_lite.study.runner import RunOptions, snakemake_command  # noqa: E402
from nnunet_lite.study.study import Study  # noqa: E402

# per protocol: (main trainers, zero-shot pairs, trainings of the main file, ablation trainers, ablation trainings)
EXPECTED = {
    "aulunet": (
        ["nnUNetTrainerAULUNet", "nnUNetTrainerAULUNet_paper", "nnUNetTrainer"],
        [],
        40,  # 2 datasets x (3 trainers + matched nnU-Net) x 5 folds
        ["noAKF", "noRGF", "noLSG", "onlyAKF", "onlyRGF", "onlyLSG", "plain"]
        + ["d13", "d24", "d15", "d17", "d35", "d135", "d357"],
        150,  # 2 datasets x 15 trainers x 5 folds
    ),
    "lgmsnet": (
        ["nnUNetTrainerLGMSNet", "nnUNetTrainerLGMSNet_paper", "nnUNetTrainer"],
        [(503, 513), (504, 512), (502, 511)],  # BUSI -> BUS-B, Kvasir -> CVC-ClinicDB, ISIC 2018 -> PH2
        48,  # 4 datasets x 4 models x 3 folds
        ["LMS3333", "LMS5555", "GMS1to1", "GMS1to3", "GMSconv", "GMSattn"],
        63,  # 3 datasets x 7 trainers x 3 folds
    ),
    "medlitenet": (
        ["nnUNetTrainerMedLiteNet", "nnUNetTrainerMedLiteNet_paper", "nnUNetTrainer"]
        + ["nnUNetTrainerMedLiteNet_wideASPP", "nnUNetTrainerMedLiteNet_wideTokens"],  # the ensemble's members
        [(502, 511)],  # ISIC 2018 -> PH2
        30,  # (5 trainers + matched nnU-Net) x 5 folds
        ["noBAA", "noTransformer", "ResNet18"],
        20,
    ),
}


def _data_root(tmp_path: Path) -> Path:
    root = tmp_path / "downloads"
    for folder in ARCHIVE_FOLDERS.values():
        (root / folder).mkdir(parents=True)  # validation checks that sources exist; conversion is not run
    return root


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_protocol_files_validate_with_the_papers_design(protocol, tmp_path, capsys):
    root = _data_root(tmp_path)
    path = tmp_path / "paper" / f"{protocol}.toml"
    assert main(["study", "init", "--protocol", protocol, str(path), "--data-root", str(root)]) == 0
    assert f"{protocol}_ablations.toml" in capsys.readouterr().out
    trainers, pairs, n_main, variants, n_ablation = EXPECTED[protocol]
    net = trainers[0]

    main_study = Study.load(path, environ={})
    main_study.check_runnable()  # sources exist, folds and configurations fit, every trainer is importable
    spec = main_study.spec
    assert spec.trainers == trainers
    assert spec.plans == ["default", f"matched:{net}"] and spec.matched_trainers == ["nnUNetTrainer"]
    assert spec.baseline == "nnUNetTrainer"
    assert [(z.source, z.target) for z in spec.zeroshot] == pairs
    assert spec.robustness == ("dermoscopy" if protocol == "medlitenet" else None)
    assert len(main_study.trainings()) == n_main
    if protocol == "medlitenet":  # the paper's three-variant ensemble of test-set predictions
        (ens,) = spec.ensemble
        assert ens.trainers == [net, f"{net}_wideASPP", f"{net}_wideTokens"]
        assert [(e.dataset_name, e.configuration) for e in main_study.ensembles()] == [("Dataset502_ISIC2018", "2d")]
    else:
        assert spec.ensemble == []
    for dataset in spec.datasets:  # every source is the official archive's folder under --data-root
        assert dataset.source == (root / ARCHIVE_FOLDERS[dataset.convert]).resolve()

    ablations = Study.load(path.with_name(f"{protocol}_ablations.toml"), environ={})
    ablations.check_runnable()
    assert ablations.spec.trainers == [net] + [f"{net}_{v}" for v in variants]
    assert ablations.spec.baseline == net  # paired statistics against the full network
    assert len(ablations.trainings()) == n_ablation
    assert ablations.paths == main_study.paths  # converted and planned once for both files


def test_protocol_splits_follow_the_papers(tmp_path):
    root = _data_root(tmp_path)
    for protocol in EXPECTED:
        assert (
            main(
                ["study", "init", "--protocol", protocol, str(tmp_path / f"{protocol}.toml"), "--data-root", str(root)]
            )
            == 0
        )
    splits = {p: {d.convert: d.split for d in load_study_model(tmp_path / f"{p}.toml").datasets} for p in EXPECTED}
    assert splits["aulunet"] == {"isic2017": "trainval", "isic2018": "trainval"}  # official test sets as the test
    assert splits["lgmsnet"]["busi"] == "cmunext"  # LGMSNet's 3 published 452/195 folds
    assert load_study_model(tmp_path / "lgmsnet.toml").folds == [0, 1, 2]  # the paper's 3 splits
    assert splits["medlitenet"] == {"isic2018": "trainval", "ph2": None}


def test_without_data_root_each_source_says_what_to_put_where(tmp_path):
    path = tmp_path / "m.toml"
    assert main(["study", "init", "--protocol", "medlitenet", str(path)]) == 0
    text = path.read_text()
    assert "@" not in text.replace("+-", "")  # every placeholder filled
    assert 'source = "downloads/ISIC2018"' in text and 'source = "downloads/PH2Dataset"' in text
    assert "# put the unpacked download (https://challenge.isic-archive.com/data/#2018) in downloads/ISIC2018:" in text
    assert "#   ISIC2018_Task1-2_Training_Input/ISIC_*.jpg + ISIC2018_Task1_Training_GroundTruth/" in text
    model = load_study_model(path)  # valid TOML and schema; only the downloads are missing
    assert model.datasets[0].source == (tmp_path / "downloads" / "ISIC2018").resolve()
    assert "[[ensemble]]" in text and "nnUNetv2_ensemble" in text  # the three-variant ensemble, a study step
    assert [e.name for e in model.ensemble] == ["medlitenet3"]
    assert load_study_model(tmp_path / "m_ablations.toml").baseline == "nnUNetTrainerMedLiteNet"


def test_protocol_refuses_to_overwrite_and_unknown_names(tmp_path, capsys):
    path = tmp_path / "a.toml"
    assert main(["study", "init", "--protocol", "aulunet", str(path)]) == 0
    path.with_name("a_ablations.toml").write_text("mine")
    path.unlink()
    capsys.readouterr()
    assert main(["study", "init", "--protocol", "aulunet", str(path)]) == 1  # the ablation file exists
    err = capsys.readouterr().err
    assert (
        err.strip() == f"nnunet_lite study: {path.with_name('a_ablations.toml')} exists; pass --overwrite to replace it"
    )
    assert not path.exists() and path.with_name("a_ablations.toml").read_text() == "mine"  # nothing written
    assert main(["study", "init", "--protocol", "aulunet", str(path), "--overwrite"]) == 0
    assert "nnUNetTrainerAULUNet_d357" in path.with_name("a_ablations.toml").read_text()
    with pytest.raises(SystemExit) as e:
        main(["study", "init", "--protocol", "unet", str(path)])
    assert e.value.code == 2
    assert "invalid choice: 'unet'" in capsys.readouterr().err
    assert main(["study", "init", str(tmp_path / "b.toml"), "--data-root", str(tmp_path)]) == 1
    assert "--data-root fills the sources of --protocol NAME" in capsys.readouterr().err
    assert main(["study", "init", "--protocol", "lgmsnet", str(tmp_path / "c.toml"), "--data-root", "nowhere"]) == 1
    assert "--data-root nowhere: no such folder" in capsys.readouterr().err and not (tmp_path / "c.toml").exists()


@pytest.mark.slow
def test_medlitenet_protocol_dry_run_plans_its_jobs(tmp_path):
    """Snakemake plans the whole study from empty download folders (no data is read in a dry run)."""
    path = tmp_path / "medlitenet.toml"
    assert main(["study", "init", "--protocol", "medlitenet", str(path), "--data-root", str(_data_root(tmp_path))]) == 0
    study = Study.load(path, environ={})
    cmd = snakemake_command(study, RunOptions(dry_run=True, gpus=0, cores=2))
    cmd = cmd[: cmd.index("--quiet")]  # print every job with its inputs and shell command
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **study.environment()})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = (out.stdout + out.stderr).split("Job stats:")[1]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}
    assert jobs["train"] == 30 and jobs["zeroshot"] == 6 and jobs["robustness"] == 1
    assert jobs["dataset"] == 2 and jobs["plan_matched"] == 1 and jobs["predict_test"] == 6
    assert jobs["ensemble"] == 1 and jobs["total"] == 53
    text = out.stdout + out.stderr
    predictions = study.work_dir / "predictions" / "Dataset502_ISIC2018"
    members = [f"nnUNetTrainerMedLiteNet{v}__nnUNetPlans__2d" for v in ("", "_wideASPP", "_wideTokens")]
    (ensemble_cmd,) = [line for line in text.splitlines() if "nnUNetv2_ensemble" in line]
    inputs = " ".join(str(predictions / m) for m in members)
    assert f"-i {inputs} -o {predictions / 'ensemble_medlitenet3__2d'} -np 1 " in ensemble_cmd
    predict = [line for line in text.splitlines() if "nnUNetv2_predict " in line]
    with_npz = sorted(re.search(r"-tr (\S+)", line).group(1) for line in predict if "--save_probabilities" in line)
    assert len(predict) == 6 and with_npz == sorted(m.split("__")[0] for m in members)  # only the members
