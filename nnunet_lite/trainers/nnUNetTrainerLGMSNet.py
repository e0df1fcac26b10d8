"""LGMSNet trainers: nnU-Net's recipe (the fair comparison), the paper's recipe, and epoch-length variants."""

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from ..architectures.lgmsnet import LGMSNet
from ..trainer_base import epoch_variants, nnUNetTrainerLite


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


globals().update(epoch_variants(nnUNetTrainerLGMSNet))
