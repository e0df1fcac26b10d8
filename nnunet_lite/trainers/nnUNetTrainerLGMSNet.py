"""LGMSNet trainers: nnU-Net's recipe (the fair comparison), the paper's recipe, epoch-length variants, and the
paper's ablations (LMS kernel scales, GMS Transformer:convolution split) with either recipe."""

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from ..architectures.lgmsnet import LGMSNet
from ..trainer_base import epoch_variants, nnUNetTrainerLite
from ._ablations import Ablation, ablation_variants


class nnUNetTrainerLGMSNet(nnUNetTrainerLite):
    """LGMSNet with nnU-Net's full recipe (SGD 0.99 Nesterov, poly, Dice+CE, 1000 epochs); only the network differs."""

    architecture = LGMSNet


class nnUNetTrainerLGMSNet_paper(nnUNetTrainerLGMSNet):
    """The official LGMSNet recipe where nnU-Net's label handling allows it.

    SGD (momentum 0.9, no Nesterov, weight decay 1e-4), lr 0.02, poly decay (exponent 0.9), 500 epochs, loss
    0.5 * CE + 1.0 * Dice. Deviations: the poly schedule is stepped per epoch (nnU-Net) rather than per iteration; an
    epoch is nnU-Net's 250 iterations of its batch size; with labels, CE over softmax replaces BCE over a sigmoid
    (identical for two classes), with regions nnU-Net's BCE is used; nnU-Net's Dice (batch Dice in 2D) and
    augmentation replace the paper's per-sample Dice and albumentations pipeline.
    """

    hyperparameters = {"num_epochs": 500, "initial_lr": 0.02, "weight_decay": 1e-4}
    loss_weights = (0.5, 1.0)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, PolyLRScheduler]:
        optimizer = torch.optim.SGD(
            self.network.parameters(), self.initial_lr, momentum=0.9, weight_decay=self.weight_decay
        )
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


ABLATIONS = {
    **{
        f"LMS{k}{k}{k}{k}": Ablation(
            {"lms_kernels": (k,) * 4}, f"every LMS group uses {k}x{k} kernels (paper: 3, 5, 7, 9)"
        )
        for k in (3, 5)
    },
    "GMS1to1": Ablation({"gms_ratio": (1, 1)}, "GMS split 1:1 between Transformer and convolution (paper: 3:1)"),
    "GMS1to3": Ablation({"gms_ratio": (1, 3)}, "GMS split 1:3 between Transformer and convolution (paper: 3:1)"),
    "GMSconv": Ablation({"gms_ratio": (0, 1)}, "GMS blocks without Transformer branch (all channels convolution)"),
    "GMSattn": Ablation({"gms_ratio": (1, 0)}, "GMS blocks without convolution branch (all channels Transformer)"),
}

globals().update(epoch_variants(nnUNetTrainerLGMSNet))
globals().update(ablation_variants(nnUNetTrainerLGMSNet, ABLATIONS))
globals().update(ablation_variants(nnUNetTrainerLGMSNet_paper, ABLATIONS))
