"""Numbers and commands the README states, checked against the code: the network table and the startup hook."""

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from nnunet_lite.architectures import AULUNet, LGMSNet, MedLiteNet
from nnunet_lite.cli import main
from nnunet_lite.commands import env
from nnunet_lite.deploy.benchmark import nnunet_default_network_2d
from nnunet_lite.nnunet_env import SHIM_FOLDER
from nnunet_lite.profiling import count_flops

README = Path(__file__).resolve().parents[1] / "README.md"
NETWORKS = {
    "**LGMSNet**": lambda: LGMSNet(3, 1),
    "**MedLiteNet**": lambda: MedLiteNet(3, 1),
    "**AULUNet**": lambda: AULUNet(3, 1),
    "nnU-Net default 2D": lambda: nnunet_default_network_2d(3, 1),
}


def readme_network_rows() -> dict[str, list[str]]:
    """The cells of the README's network table (the first table), by the row's first cell."""
    rows = {}
    for line in README.read_text().split("\n\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for key in NETWORKS:
            if cells[0].startswith(key):
                rows[key] = cells
    return rows


def leading_number(cell: str) -> tuple[float, int]:
    """First number of a cell and its decimals: '0.058 (thop ...)' -> (0.058, 3); '33.5 M' -> (33.5, 1)."""
    match = re.match(r"([\d,]+)(?:\.(\d+))?", cell)
    assert match, cell
    return float(match.group(0).replace(",", "")), len(match.group(2) or "")


@pytest.mark.parametrize("row", NETWORKS)
def test_network_table_params_and_gmacs(row):
    """Columns 'params (2D, 3 in, 1 out)' and 'GMACs @1x3x256x256': FlopCounterMode (2 FLOPs per MAC), as stated."""
    cells = readme_network_rows()[row]
    network = NETWORKS[row]()
    params = sum(p.numel() for p in network.parameters())
    shown, decimals = leading_number(cells[2])
    if cells[2].rstrip().endswith("M"):  # '33.5 M'
        assert round(params / 1e6, decimals) == shown, (row, params)
    else:  # exact counts
        assert params == shown, (row, params)
    gmacs = count_flops(network.to("meta"), (1, 3, 256, 256)) / 2 / 1e9  # meta tensors: shapes only, no arithmetic
    shown, decimals = leading_number(cells[3])
    assert round(gmacs, decimals) == shown, f"{row}: README says {cells[3]!r}, FlopCounterMode gives {gmacs:.4f}"


def test_network_table_lists_every_network():
    assert set(readme_network_rows()) == set(NETWORKS)


def fresh_interpreter(site_dir: Path, find_trainer: bool = False) -> list[str]:
    """nnUNet_extTrainer as a new Python process of this environment sees it, with ``site_dir`` processed as a site
    directory (what Python does with site-packages at start-up); then the class nnU-Net finds for a trainer name."""
    code = f"import os, site; site.addsitedir({str(site_dir)!r}); print(os.environ.get('nnUNet_extTrainer', ''))"
    if find_trainer:
        code += (
            "\nfrom nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find"
            "\nprint(find('nnUNetTrainerLGMSNet').__module__)"
        )
    environ = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ).stdout
    lines = out.splitlines()
    return [lines[0], lines[-1]] if find_trainer else lines  # nnU-Net's search messages come in between


def test_install_and_uninstall_hook(tmp_path, monkeypatch, capsys):
    # the real location is this environment's site-packages, which Python processes at every start-up
    assert env.hook_path().parent == Path(sysconfig.get_paths()["purelib"])
    if fresh_interpreter(tmp_path) != [""]:
        pytest.skip("a startup hook is already installed in this environment")
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    monkeypatch.setattr(env, "hook_path", lambda: site_dir / env.HOOK_NAME)

    assert main(["env", "--install-hook"]) == 0 and main(["env", "--install-hook"]) == 0  # idempotent
    assert str(site_dir / env.HOOK_NAME) in capsys.readouterr().out
    assert [p.name for p in site_dir.iterdir()] == [env.HOOK_NAME]
    # nnU-Net finds the trainer in a new process
    assert fresh_interpreter(site_dir, find_trainer=True) == [
        str(SHIM_FOLDER),
        "nnunet_lite.trainers.nnUNetTrainerLGMSNet",
    ]

    assert main(["env", "--uninstall-hook"]) == 0
    assert f"removed {site_dir / env.HOOK_NAME}" in capsys.readouterr().out
    assert not any(site_dir.iterdir())
    assert fresh_interpreter(site_dir) == [""]
    assert main(["env", "--uninstall-hook"]) == 0
    assert "no hook at" in capsys.readouterr().out
