"""Opt-in startup hook (installed by ``nnunet_lite env --install-hook``): adds the trainer shim folder to
``nnUNet_extTrainer`` in every Python process of this environment. Never raises; idempotent; appends."""

import os

try:
    _shim = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_ext")
    _current = os.environ.get("nnUNet_extTrainer", "")
    if _shim not in _current.split(os.pathsep):
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(p for p in (_current, _shim) if p)
except Exception:  # site would print "Error processing line 1 of ...pth" at every interpreter start
    pass
