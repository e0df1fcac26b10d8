"""AULUNet trainers: nnU-Net's recipe (the fair comparison), the paper's recipe, epoch-length variants, and the
paper's ablations (Tables 2 and 3) with either recipe."""

import math

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

from ..architectures.aulunet import AULUNet
from ..trainer_base import epoch_variants, nnUNetTrainerLite
from ._ablations import Ablation, ablation_variants


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
    # NHWC measured no faster for this network's training step (median 689 against 628 ms, docs/training-speed.md)
    memory_format_2d = torch.contiguous_format


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


_NO_AKF = {"akf_dilations": (1,)}
# Table 2 (modules individually and combined) and Table 3 (AKF dilations and gating) of the paper.
ABLATIONS = {
    "noAKF": Ablation(
        _NO_AKF, "every AKF is one depthwise 3x3 (dilation 1) and its PointConv (no dilated branch, no gate)"
    ),
    "noRGF": Ablation({"use_rgf": False}, "the bottleneck's RGF is removed (identity)"),
    "noLSG": Ablation({"use_lsg": False}, "every LSG skip gate is a plain sum S = D + E"),
    "onlyAKF": Ablation({"use_rgf": False, "use_lsg": False}, "AKF only: no RGF, no LSG"),
    "onlyRGF": Ablation({**_NO_AKF, "use_lsg": False}, "RGF only: no AKF, no LSG"),
    "onlyLSG": Ablation({**_NO_AKF, "use_rgf": False}, "LSG only: no AKF, no RGF"),
    "plain": Ablation({**_NO_AKF, "use_rgf": False, "use_lsg": False}, "none of AKF, RGF and LSG"),
    **{
        f"d{a}{b}": Ablation({"akf_dilations": (a, b)}, f"AKF branches with dilations {a} and {b} (paper: 1 and 2)")
        for a, b in ((1, 3), (2, 4), (1, 5), (1, 7), (3, 5))
    },
    **{
        "d" + "".join(map(str, d)): Ablation(
            {"akf_dilations": d}, f"three AKF branches (dilations {d[0]}, {d[1]}, {d[2]}) with softmax gating"
        )
        for d in ((1, 3, 5), (3, 5, 7))
    },
}

globals().update(epoch_variants(nnUNetTrainerAULUNet))
globals().update(ablation_variants(nnUNetTrainerAULUNet, ABLATIONS))
globals().update(ablation_variants(nnUNetTrainerAULUNet_paper, ABLATIONS))
