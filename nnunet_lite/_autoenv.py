"""Opt-in startup hook (installed by ``nnunet_lite env --install-hook``): adds the trainer shim folder to
``nnUNet_extTrainer`` in every Python process of this environment. Never raises; idempotent; appends."""

try:
    from nnunet_lite.nnunet_env import make_trainers_discoverable

    make_trainers_discoverable()
except Exception:  # site would print "Error processing line 1 of ...pth" at every interpreter start
    pass
