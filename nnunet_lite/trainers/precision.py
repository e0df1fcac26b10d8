"""``_bf16`` variants: a trainer's recipe with its training and validation steps under bfloat16 autocast.

Lower precision is a different numerical recipe, so it is never the default of a fair-comparison trainer; it is offered
to every main trainer alike, nnU-Net's own ``nnUNetTrainer`` included, so a comparison can use it for all of them
(``nnUNetTrainer_bf16``, ``nnUNetTrainerAULUNet_bf16``, ``nnUNetTrainerLGMSNet_paper_bf16``, ...). On CPUs with
AVX512-BF16 or AMX the matrix products run natively in bf16; elsewhere PyTorch emulates them and the variant is slower
than fp32 (the log says so). On CUDA the variant trains in bf16 instead of nnU-Net's fp16 autocast (an enclosing
autocast's dtype is what nnU-Net's own ``autocast("cuda")`` inherits). Final validation and prediction stay nnU-Net's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from . import nnUNetTrainerAULUNet as _aulunet
from . import nnUNetTrainerLGMSNet as _lgmsnet
from . import nnUNetTrainerMedLiteNet as _medlitenet


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Bf16Training:
    """Mixin: ``train_step`` and ``validation_step`` of the base trainer under ``torch.autocast(dtype=bfloat16)``."""

    precision = "bf16"

    def training_autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.device.type == "cpu" and not cpu_has_native_bf16():
            self.print_to_log_file(
                f"WARNING: {type(self).__name__} trains in bf16, but this CPU has no AVX512-BF16 or AMX: bf16 is "
                f"emulated here and slower than fp32 (torch reports {torch.backends.cpu.get_cpu_capability()})"
            )

    def train_step(self, batch: dict) -> dict:
        with self.training_autocast():
            return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        with self.training_autocast():
            return super().validation_step(batch)


BF16_BASES: tuple[type, ...] = (
    nnUNetTrainer,
    _aulunet.nnUNetTrainerAULUNet,
    _aulunet.nnUNetTrainerAULUNet_paper,
    _lgmsnet.nnUNetTrainerLGMSNet,
    _lgmsnet.nnUNetTrainerLGMSNet_paper,
    _medlitenet.nnUNetTrainerMedLiteNet,
    _medlitenet.nnUNetTrainerMedLiteNet_paper,
)


def bf16_variants(bases: tuple[type, ...] = BF16_BASES) -> dict[str, type]:
    """``{f"{base}_bf16": subclass}``, defined in this module (importable dotted path, picklable)."""
    out = {}
    for base in bases:
        name = f"{base.__name__}_bf16"
        out[name] = type(
            name,
            (Bf16Training, base),
            {"__module__": __name__, "__qualname__": name, "__doc__": f"{base.__name__} trained under bf16 autocast."},
        )
    return out


BF16_TRAINERS = bf16_variants()
globals().update(BF16_TRAINERS)
