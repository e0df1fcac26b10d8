# The only module nnUNet_extTrainer sees. nnU-Net imports it as a top-level module and pops it afterwards; the
# classes keep their real module (nnunet_lite.trainers.*), so they stay picklable. Re-exports only, absolute import.
from nnunet_lite.trainers import *  # noqa: F403
