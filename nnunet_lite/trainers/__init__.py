"""All selectable nnunet_lite trainers (``nnUNetv2_train ... -tr <name>``).

Defined here with real dotted module names; nnU-Net finds them through the re-export shim in
``nnunet_lite/nnunet_ext`` (see ``nnunet_lite env``). Nothing here may import optional dependencies or do work at
import time: an import error would abort nnU-Net's trainer lookup.
"""

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..trainer_base import nnUNetTrainerLite
from . import nnUNetTrainerAULUNet as _aulunet
from . import nnUNetTrainerLGMSNet as _lgmsnet
from . import nnUNetTrainerMedLiteNet as _medlitenet
from .precision import BF16_TRAINERS

# the lite trainers, then the _bf16 variants (of nnU-Net's nnUNetTrainer too)
TRAINERS: dict[str, type[nnUNetTrainer]] = {
    **{
        name: obj
        for module in (_aulunet, _lgmsnet, _medlitenet)
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, nnUNetTrainerLite) and obj.__module__ == module.__name__
    },
    **BF16_TRAINERS,
}
globals().update(TRAINERS)
__all__ = sorted(TRAINERS)
