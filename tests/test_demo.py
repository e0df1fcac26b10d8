import json

import numpy as np
import pytest
from PIL import Image

from nnunet_lite.cli import main
from nnunet_lite.demo import DEMO_MARKER, DemoResult, format_table, prepare_work_dir

from .conftest import run_cli


def test_demo_refuses_foreign_or_earlier_folders(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    assert main(["demo", "--work-dir", str(foreign)]) == 1
    assert "is not an nnunet_lite demo folder" in capsys.readouterr().err
    assert (foreign / "precious.txt").read_text() == "keep me"

    earlier = tmp_path / "earlier"
    prepare_work_dir(earlier, overwrite=False)
    (earlier / "result.txt").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_work_dir(earlier, overwrite=False)
    prepare_work_dir(earlier, overwrite=True)
    assert sorted(p.name for p in earlier.iterdir()) == [DEMO_MARKER]


def test_table_lists_every_trainer():
    table = format_table([DemoResult("nnUNetTrainerX", 1234, 10.0, 1.0, 0.5, 0.9, 0.8)])
    assert "nnUNetTrainerX" in table and "1,234" in table and "0.900" in table


@pytest.mark.slow
def test_demo_end_to_end_tiny_budget(tmp_path):
    work = tmp_path / "demo"
    out = run_cli(
        "nnunet_lite",
        "demo",
        "--work-dir",
        str(work),
        "-tr",
        "nnUNetTrainerAULUNet",
        "--epochs",
        "1",
        "--iterations",
        "5",
        "--num-train",
        "10",
        "--num-test",
        "2",
        "--device",
        "cpu",
    ).stdout
    results = json.loads((work / "demo_results.json").read_text())
    assert [r["trainer"] for r in results] == ["nnUNetTrainerAULUNet"]
    assert results[0]["params"] == 28_642  # 3 inputs, 2 outputs
    assert "nnUNetTrainerAULUNet" in out and "test Dice" in out
    # the reported scores are those of the written segmentations (1 x 5 iterations: often empty ones, Dice 0)
    labels = work / "nnUNet_raw" / "Dataset990_SyntheticLesions" / "labelsTs"
    predictions = sorted((work / "predictions" / "nnUNetTrainerAULUNet").glob("*.png"))
    assert [p.name for p in predictions] == sorted(p.name for p in labels.glob("*.png")) and len(predictions) == 2
    pairs = [(np.asarray(Image.open(p)) == 1, np.asarray(Image.open(labels / p.name)) == 1) for p in predictions]
    dice = np.mean([2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in pairs])
    iou = np.mean([(a & b).sum() / (a | b).sum() for a, b in pairs])
    assert (results[0]["dice"], results[0]["iou"]) == pytest.approx((dice, iou))
    assert (
        work
        / "nnUNet_results"
        / "Dataset990_SyntheticLesions"
        / "nnUNetTrainerAULUNet__nnUNetPlans__2d"
        / "fold_0"
        / "checkpoint_final.pth"
    ).is_file()
