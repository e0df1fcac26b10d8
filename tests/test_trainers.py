import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

import nnunet_lite.nnunet_ext.nnunet_lite_trainers as shim
from nnunet_lite.commands.env import HOOK_LINE
from nnunet_lite.nnunet_env import SHIM_FOLDER, export_line
from nnunet_lite.trainer_base import nnUNetTrainerLite
from nnunet_lite.trainers import TRAINERS


def test_shim_reexports_every_trainer_and_defines_nothing():
    exported = {n: getattr(shim, n) for n in dir(shim) if isinstance(getattr(shim, n), type)}
    assert set(exported) == set(TRAINERS)
    assert all(cls.__module__.startswith("nnunet_lite.trainers.") for cls in exported.values())
    assert sorted(p.name for p in SHIM_FOLDER.glob("*.py")) == ["__init__.py", "nnunet_lite_trainers.py"]


def test_expected_trainer_names_exist():
    for arch in ("LGMSNet", "AULUNet", "MedLiteNet"):
        for suffix in ("", "_paper", "_1epoch", "_5epochs", "_10epochs", "_50epochs", "_100epochs", "_250epochs"):
            assert f"nnUNetTrainer{arch}{suffix}" in TRAINERS
    assert {"nnUNetTrainerMedLiteNet_wideASPP", "nnUNetTrainerMedLiteNet_wideTokens"} <= set(TRAINERS)


def test_no_trainer_shadows_an_nnunet_builtin(monkeypatch):
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    for name in TRAINERS:
        with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
            recursive_find_trainer_class_by_name(name)


def test_nnunet_finds_every_trainer_through_the_shim(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", str(SHIM_FOLDER))
    for name, cls in TRAINERS.items():
        found = recursive_find_trainer_class_by_name(name)
        assert found is cls, f"{name}: nnU-Net found {found}, not the nnunet_lite class"
        assert pickle.loads(pickle.dumps(found)) is cls  # spawn/forkserver workers need this
    assert "nnunet_lite_trainers" not in sys.modules  # nnU-Net popped the shim, the classes survive


def test_epoch_variants_and_paper_hyperparameters():
    from nnunet_lite.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLGMSNet_5epochs, nnUNetTrainerLGMSNet_paper

    assert issubclass(nnUNetTrainerLGMSNet_5epochs, nnUNetTrainerLGMSNet)
    assert nnUNetTrainerLGMSNet_5epochs.hyperparameters == {"num_epochs": 5}
    assert nnUNetTrainerLGMSNet_5epochs.__qualname__ == "nnUNetTrainerLGMSNet_5epochs"
    assert nnUNetTrainerLGMSNet_paper.hyperparameters["initial_lr"] == 0.02
    assert nnUNetTrainerLGMSNet_paper.loss_weights == (0.5, 1.0)


def _configuration(patch_size, strides):
    return SimpleNamespace(patch_size=patch_size, pool_op_kernel_sizes=strides, data_identifier="nnUNetPlans_test")


@pytest.mark.parametrize(
    ("patch_size", "strides", "in_shape"),
    [
        ([64, 96], [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [1, 2]], (2, 3, 64, 96)),
        ([20, 64, 48], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 1]], (1, 1, 20, 64, 48)),
    ],
)
def test_build_network_architecture_from_plans(patch_size, strides, in_shape):
    for cls in (TRAINERS[f"nnUNetTrainer{arch}"] for arch in ("AULUNet", "LGMSNet", "MedLiteNet")):
        net = cls.build_network_architecture(None, _configuration(patch_size, strides), in_shape[1], 3, True)
        assert net(torch.randn(in_shape)).shape == (in_shape[0], 3, *in_shape[2:])


def test_impossible_plans_fail_before_training_with_the_plans_values():
    cls = TRAINERS["nnUNetTrainerLGMSNet"]
    with pytest.raises(ValueError, match=r"patch_size=\[64, 72\].*pool_op_kernel_sizes=.*not divisible"):
        cls.build_network_architecture(None, _configuration([64, 72], [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]), 3, 2)


def test_hyperparameters_merge_along_the_hierarchy_and_typos_are_rejected():
    from nnunet_lite.trainers import nnUNetTrainerLGMSNet_paper

    class PaperShort(nnUNetTrainerLGMSNet_paper):
        hyperparameters = {"num_epochs": 3}

    class Broken(nnUNetTrainerLite):
        hyperparameters = {"num_epoch": 3}  # typo

    trainer = PaperShort.__new__(PaperShort)
    trainer.num_epochs, trainer.initial_lr, trainer.weight_decay = 1000, 1e-2, 3e-5  # nnU-Net's defaults
    trainer.apply_hyperparameters()
    assert (trainer.num_epochs, trainer.initial_lr, trainer.weight_decay) == (3, 0.02, 1e-4)
    broken = Broken.__new__(Broken)
    broken.num_epochs = 1000
    with pytest.raises(AttributeError, match="num_epoch"):
        broken.apply_hyperparameters()


def test_env_prints_an_appending_export_line():
    line = export_line()
    assert line.startswith('export nnUNet_extTrainer="${nnUNet_extTrainer:+$nnUNet_extTrainer:}')
    assert line.endswith(f'{SHIM_FOLDER}"')
    out = subprocess.run(
        ["bash", "-c", f"nnUNet_extTrainer=/other; {line}; echo $nnUNet_extTrainer"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == f"/other:{SHIM_FOLDER}"


def test_startup_hook_sets_the_variable_in_a_fresh_interpreter(tmp_path):
    (tmp_path / "nnunet_lite_autoenv.pth").write_text(HOOK_LINE)
    code = (
        f"import site, os; site.addsitedir({str(tmp_path)!r}); site.addsitedir({str(tmp_path)!r}); "
        "print(os.environ.get('nnUNet_extTrainer'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin", "nnUNet_extTrainer": "/mine"},
    )
    assert out.stdout.strip() == f"/mine:{SHIM_FOLDER}"  # appended once (idempotent), user's entry kept
    assert out.stderr == ""


def test_stale_startup_hook_is_silent(tmp_path):
    (tmp_path / "stale.pth").write_text(HOOK_LINE.replace("nnunet_lite._autoenv", "nnunet_lite_gone._autoenv"))
    code = f"import site; site.addsitedir({str(tmp_path)!r}); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok" and "Error processing" not in out.stderr


def test_cli_env_and_help(capsys):
    from nnunet_lite.cli import main

    assert main(["env", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == export_line()
    assert main([]) == 2
    assert Path(SHIM_FOLDER).is_dir()


def test_trainer_classes_reach_spawned_workers(monkeypatch):
    """Data-loader workers on macOS/Windows (spawn) and Linux with Python >= 3.14 (forkserver) unpickle classes."""
    import multiprocessing

    monkeypatch.setenv("nnUNet_extTrainer", str(SHIM_FOLDER))
    cls = recursive_find_trainer_class_by_name("nnUNetTrainerLGMSNet_5epochs")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        # repr runs in the child on the unpickled class (a builtin, so the child does not import this test module)
        shown = pool.apply(repr, (cls,))
    assert shown == "<class 'nnunet_lite.trainers.nnUNetTrainerLGMSNet.nnUNetTrainerLGMSNet_5epochs'>"
