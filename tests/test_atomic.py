import os

import pytest

from nnunet_lite.atomic import atomic_folder, atomic_write_text
from nnunet_lite.nnunet_env import SHIM_FOLDER, make_trainers_discoverable, trainers_discoverable


def test_atomic_write_text_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "plans.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["plans.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not tempfile's 0600


def test_atomic_folder_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_folder(target):
            pass
    with pytest.raises(RuntimeError), atomic_folder(target, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("broken")
        raise RuntimeError("fails half-way")
    assert (target / "a.txt").read_text() == "first", "a failure must keep the previous folder"
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "temporary or backup folder left behind"


def test_make_trainers_discoverable_appends_once():
    environ = {"nnUNet_extTrainer": "/mine"}
    assert not trainers_discoverable(environ)
    make_trainers_discoverable(environ)
    make_trainers_discoverable(environ)
    assert environ["nnUNet_extTrainer"] == f"/mine{os.pathsep}{SHIM_FOLDER}"
    assert trainers_discoverable(environ)
    empty: dict[str, str] = {}
    make_trainers_discoverable(empty)
    assert empty == {"nnUNet_extTrainer": str(SHIM_FOLDER)}
