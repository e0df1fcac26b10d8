"""``nnunet_lite profile --training`` on a tiny planned dataset: nnU-Net's own trainer, timed phase by phase."""

import json
import os
from pathlib import Path

import pytest

from nnunet_lite.cli import main

from .conftest import run_cli

DATASET = 938  # unique among the test modules: they share one nnUNet_raw per session
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planned(nnunet_env):
    from nnunet_lite.synthetic import make_lesion_dataset_2d

    make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), DATASET, num_train=6, num_test=1, seed=5)
    run_cli("nnUNetv2_plan_and_preprocess", "-d", str(DATASET), "-c", "2d", "-np", "1", "-npfp", "1")
    plans = json.loads(
        (Path(os.environ["nnUNet_preprocessed"]) / "Dataset938_SyntheticLesions" / "nnUNetPlans.json").read_text()
    )
    return plans["configurations"]["2d"]


def test_training_profile_times_nnunets_own_step(planned, tmp_path, capsys):
    from nnunet_lite.comparison.nnunet_io import build_network, find_trainer_class, load_plans
    from nnunet_lite.profiling import count_flops, count_parameters

    out = tmp_path / "profile.json"
    code = main(
        [
            "profile",
            "--training",
            "-tr",
            "nnUNetTrainerAULUNet",
            "nnUNetTrainer",
            "-d",
            str(DATASET),
            "--iterations",
            "2",
            "--warmup",
            "1",
            "--top",
            "5",
            "--num-workers",
            "0",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "train_step ms" in printed and "Top operators of one train_step of nnUNetTrainerAULUNet" in printed
    profiles = json.loads(out.read_text())["training_profiles"]
    assert [p["trainer"] for p in profiles] == ["nnUNetTrainerAULUNet", "nnUNetTrainer"]
    plans, dataset_json, _ = load_plans("Dataset938_SyntheticLesions")
    for p in profiles:
        # the plans' batch and patch, the network nnU-Net builds for them
        assert p["batch_size"] == planned["batch_size"] and p["patch_size"] == planned["patch_size"]
        network, shape = build_network(find_trainer_class(p["trainer"]), plans, "2d", dataset_json)
        assert p["params"] == count_parameters(network)
        # as trained: nnU-Net's U-Net adds its deep-supervision heads (a few 1x1 convolutions) to the forward
        assert p["forward_macs_per_patch"] == pytest.approx(count_flops(network, shape) / 2, rel=0.01)
        for phase in ("forward_s", "backward_s", "optimizer_s", "step_s"):
            assert p[phase] > 0, phase
        # the phase-by-phase breakdown runs the same operations as train_step: same order of magnitude
        parts = p["forward_s"] + p["backward_s"] + p["optimizer_s"]
        assert 0.3 < parts / p["step_s"] < 3
        assert p["gmacs_per_s"] == pytest.approx(3 * p["forward_macs_per_patch"] * p["batch_size"] / p["step_s"] / 1e9)
        assert p["samples_per_s"] == pytest.approx(p["batch_size"] / (p["step_s"] + p["data_wait_s"]))
        assert len(p["top_operators"]) == 5 and abs(sum(o["share"] for o in p["top_operators"])) <= 1.0 + 1e-9
        assert any("conv" in o["operator"] for o in p["top_operators"]), p["top_operators"]
    # the dense U-Net needs far more compute per patch than AULUNet
    assert profiles[1]["forward_macs_per_patch"] > 20 * profiles[0]["forward_macs_per_patch"]
    # a profile trains in a temporary folder: nothing lands in nnUNet_results
    assert not any(Path(os.environ["nnUNet_results"]).glob("Dataset938*"))


def test_training_profile_bad_input_is_one_line(planned, capsys):
    assert main(["profile", "--training", "-tr", "nnUNetTrainerAULUNet"]) == 1
    assert "needs -d DATASET" in capsys.readouterr().err
    assert main(["profile", "--training", "-tr", "nnUNetTrainerAULUNet", "-d", str(DATASET), "-c", "3d_fullres"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("profiling the training of")]
    assert errors == [
        "nnunet_lite profile: configuration '3d_fullres' is not in nnUNetPlans of "
        "Dataset938_SyntheticLesions (has: ['2d'])"
    ]
    assert main(["profile", "--training", "-tr", "nnUNetTrainerNope", "-d", str(DATASET)]) == 1
    assert "trainer 'nnUNetTrainerNope' not found" in capsys.readouterr().err
    assert main(["profile", "--training", "-d", str(DATASET), "--iterations", "0"]) == 1
    assert "--iterations must be >= 1" in capsys.readouterr().err
