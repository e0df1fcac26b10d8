"""AULUNet trainers: nnU-Net's recipe (the fair comparison), the paper's recipe, and epoch-length variants."""

import math

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

from ..architectures.aulunet import AULUNet
from ..trainer_base import epoch_variants, nnUNetTrainerLite


class EpochCosineAnnealingLR(CosineAnnealingLR):
    """torch's ``CosineAnnealingLR`` whose ``step(epoch)`` sets the learning rate of that epoch directly.

    nnU-Net calls ``lr_scheduler.step(current_epoch)`` at the start of every epoch and does not checkpoint the
    scheduler. The closed form ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` makes the learning
    rate a function of the epoch alone, so a run resumed with ``--c`` continues with the right value. It equals torch's
    chained form stepped once per epoch, also past ``T_max`` (a cosine with period ``2 * T_max``), and avoids torch's
    deprecated ``step(epoch)`` path.
    """

    def step(self, epoch: int | None = None) -> None:
        if epoch is None:
            super().step()
            return
        self.last_epoch = epoch
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        self._last_lr = [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr


class nnUNetTrainerAULUNet(nnUNetTrainerLite):
    """AULUNet with nnU-Net's full recipe (SGD 0.99 Nesterov, poly, Dice+CE, 1000 epochs); only the network differs."""

    architecture = AULUNet


class nnUNetTrainerAULUNet_paper(nnUNetTrainerAULUNet):
    """The official AULUNet recipe where nnU-Net's label handling allows it.

    AdamW (lr 1e-3, betas 0.9/0.999, weight decay 1e-2), ``CosineAnnealingLR(T_max=50, eta_min=1e-5)`` stepped once
    per epoch (the learning rate oscillates with a 100-epoch period, as in the code), 400 epochs, loss
    1.0 * CE + 1.0 * Dice. Deviations: an epoch is nnU-Net's 250 iterations of the plans' batch size (the official
    epoch is one pass over the training images at batch 8); with labels, CE over softmax replaces BCE over a sigmoid
    (the same model for two classes), with regions nnU-Net's BCE is used; nnU-Net's Dice (batch Dice in 2D), patch
    sampling, augmentation, normalisation (chosen by the dataset's channel names), mixed precision on GPU and
    final/EMA-best checkpoints
    replace the official per-sample soft Dice (smooth 1), rot90/flip/rotate augmentation of 256x256 resized images,
    dataset-level z-score plus per-image min-max rescaling to [0, 255], fp32 training and lowest-validation-loss
    checkpoint.
    """

    hyperparameters = {"num_epochs": 400, "initial_lr": 1e-3, "weight_decay": 1e-2}
    loss_weights = (1.0, 1.0)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, EpochCosineAnnealingLR]:
        optimizer = torch.optim.AdamW(
            self.network.parameters(), self.initial_lr, betas=(0.9, 0.999), weight_decay=self.weight_decay
        )
        return optimizer, EpochCosineAnnealingLR(optimizer, T_max=50, eta_min=1e-5)


globals().update(epoch_variants(nnUNetTrainerAULUNet))
