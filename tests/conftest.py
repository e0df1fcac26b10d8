import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_lite.nnunet_env import SHIM_FOLDER

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BIN = Path(sys.executable).parent

# Test-only trainers: short budgets for CPU. They live in their own nnUNet_extTrainer folder, the way a user adds
# their own subclasses of the nnunet_lite trainers.
TEST_TRAINERS = """
import os
import random

import numpy as np
import torch

from nnunet_lite.trainers import nnUNetTrainerAULUNet_paper, nnUNetTrainerLGMSNet, nnUNetTrainerMedLiteNet

SHORT = {"num_epochs": 3, "num_iterations_per_epoch": 40, "num_val_iterations_per_epoch": 2}


class Seeded:
    \"\"\"Fixes the seeds nnU-Net leaves open, so that a short test training is reproducible: weight initialisation,
    patch sampling and augmentation. Augmentation runs in the training process (nnU-Net's SingleThreadedAugmenter),
    because nnU-Net's worker processes draw fresh seeds.\"\"\"

    # nnU-Net's exact signature: its __init__ records these arguments by name
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        os.environ["nnUNet_n_proc_DA"] = "0"
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        super().__init__(plans, configuration, fold, dataset_json, device)


class nnUNetTrainerLGMSNet_test(Seeded, nnUNetTrainerLGMSNet):
    hyperparameters = SHORT


# nnU-Net's SGD recipe needs hundreds of iterations before this 28k-parameter network predicts any foreground
# (see README); the paper's AdamW recipe learns faster. Twice the iterations: an AULUNet iteration costs about half
# of an LGMSNet one (README demo table), and 120 left it near the start-up phase.
class nnUNetTrainerAULUNet_test(Seeded, nnUNetTrainerAULUNet_paper):
    hyperparameters = {**SHORT, "num_iterations_per_epoch": 80}


class nnUNetTrainerMedLiteNet_test(Seeded, nnUNetTrainerMedLiteNet):
    hyperparameters = SHORT


class nnUNetTrainerLGMSNet_test3d(Seeded, nnUNetTrainerLGMSNet):
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_iterations_per_epoch": 1}
"""


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads cost more than they save and stall badly on a shared, busy CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory):
    """nnU-Net folders in a temporary directory and the environment the real nnU-Net commands need (CPU-friendly)."""
    root = tmp_path_factory.mktemp("nnunet")
    ext = root / "test_trainers"
    ext.mkdir()
    (ext / "nnunet_lite_test_trainers.py").write_text(TEST_TRAINERS)
    env = {
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_extTrainer": os.pathsep.join([str(SHIM_FOLDER), str(ext)]),
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "1",  # 0 crashes nnU-Net 2.8.1 planning (torch.set_num_threads(0))
        "nnUNet_compile": "f",
    }
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield root


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Runs an installed console command (nnUNetv2_*, nnunet_lite) and fails the test with its output on error."""
    cmd = [str(BIN / args[0]), *args[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc
