"""MedLiteNet trainers: nnU-Net's recipe (the fair comparison), the paper's recipe, epoch-length variants, the two
other members of the paper's three-variant ensemble, and ablations with either recipe."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..architectures.medlitenet import MedLiteNet
from ..trainer_base import epoch_variants, nnUNetTrainerLite
from ._ablations import Ablation, ablation_variants


class ClippedAdamW(torch.optim.AdamW):
    """AdamW that first clips the total gradient norm of all its parameters to ``max_grad_norm``.

    The clipping is a step pre-hook, so nnU-Net's ``train_step`` stays untouched (it clips at 12, then calls
    ``optimizer.step()``, or ``grad_scaler.step(optimizer)`` after ``grad_scaler.unscale_``: the hook then sees the
    unscaled gradients, and runs only when they are finite). ``state_dict`` is AdamW's, so nnU-Net checkpoints save and
    load unchanged. Closures are not supported (nnU-Net does not use them).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, *, max_grad_norm: float = 1.0, **kwargs) -> None:
        if kwargs.get("fused"):
            raise ValueError("ClippedAdamW does not support fused=True (GradScaler would pass scaled gradients)")
        super().__init__(params, lr=lr, **kwargs)
        self.max_grad_norm = max_grad_norm
        self.register_step_pre_hook(_clip_gradients)


def _clip_gradients(optimizer: ClippedAdamW, args: tuple, kwargs: dict) -> None:
    if args[1:] or kwargs.get("closure") is not None:
        raise ValueError("ClippedAdamW.step does not support closures")
    grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if grads:
        torch.nn.utils.clip_grad_norm_(grads, optimizer.max_grad_norm)


class WarmupCosineLRScheduler(LRScheduler):
    """Linear warm-up to ``initial_lr``, then cosine decay to ``min_lr`` at the last epoch.

    Epoch ``e < warmup_steps``: ``initial_lr * (e + 1) / warmup_steps``; afterwards
    ``min_lr + (initial_lr - min_lr) * (1 + cos(pi * (e - warmup_steps) / (max_steps - 1 - warmup_steps))) / 2``.
    Like nnU-Net's ``PolyLRScheduler`` the learning rate is a function of the epoch index that nnU-Net passes to
    ``step`` (``on_train_epoch_start``), so resuming with ``--c`` gives the right value without scheduler state.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        initial_lr: float,
        max_steps: int,
        warmup_steps: int = 0,
        min_lr: float = 0.0,
        current_step: int | None = None,
    ) -> None:
        if not 0 <= warmup_steps < max_steps:
            raise ValueError(f"need 0 <= warmup_steps < max_steps, got {warmup_steps} and {max_steps}")
        self.optimizer = optimizer
        self.initial_lr, self.min_lr = initial_lr, min_lr
        self.max_steps, self.warmup_steps = max_steps, warmup_steps
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.max_steps - 1 - self.warmup_steps, 1), 1.0)
        return self.min_lr + (self.initial_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        new_lr = self.lr_at(current_step)
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr


class nnUNetTrainerMedLiteNet(nnUNetTrainerLite):
    """MedLiteNet with nnU-Net's full recipe (SGD 0.99 Nesterov, poly, Dice+CE, 1000 epochs); only the network differs.

    Also the base member of the three-variant ensemble (with ``_wideASPP`` and ``_wideTokens``).
    """

    architecture = MedLiteNet


class nnUNetTrainerMedLiteNet_paper(nnUNetTrainerMedLiteNet):
    """The MedLiteNet paper's recipe where nnU-Net allows it.

    From the paper: AdamW, cosine schedule with warm-up, 300 epochs, 0.5 * BCE + 0.5 * Dice, gradient clipping, AMP.
    Values the paper does not give (this project's choices): lr 1e-3, weight decay 1e-4 (on all parameters),
    linear warm-up over 10 epochs (at most a tenth of the run), cosine to 1e-6 at the last epoch, stepped per epoch as
    in nnU-Net, clipping at total norm 1.0. Deviations: with labels, softmax CE replaces BCE over a sigmoid (identical
    for two classes; with regions nnU-Net's BCE is used); batch size, patch size and augmentation are nnU-Net's (the
    paper's batch 16 and progressive input sizes 192 -> 256 are not reproduced); an epoch is 250 iterations.
    """

    hyperparameters = {"num_epochs": 300, "initial_lr": 1e-3, "weight_decay": 1e-4}
    loss_weights = (0.5, 0.5)
    warmup_epochs = 10
    min_lr = 1e-6
    max_grad_norm = 1.0

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupCosineLRScheduler]:
        optimizer = ClippedAdamW(
            self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm
        )
        warmup = min(self.warmup_epochs, self.num_epochs // 10)
        scheduler = WarmupCosineLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup, self.min_lr)
        return optimizer, scheduler


class nnUNetTrainerMedLiteNet_wideASPP(nnUNetTrainerMedLiteNet):
    """Ensemble member 2 (the paper's members are unspecified): wider ASPP (128) and decoder (96, 48, 24, 16)."""

    arch_kwargs = {"aspp_channels": 128, "decoder_channels": (96, 48, 24, 16)}


class nnUNetTrainerMedLiteNet_wideTokens(nnUNetTrainerMedLiteNet):
    """Ensemble member 3: a shallower, wider Transformer (1 layer, token width 192, 4 heads of 48)."""

    arch_kwargs = {"token_dim": 192, "transformer_depth": 1}


# The paper's three-variant ensemble (< 10 M parameters together); combine with nnUNetv2_find_best_configuration or
# nnUNetv2_ensemble.
ENSEMBLE = (nnUNetTrainerMedLiteNet, nnUNetTrainerMedLiteNet_wideASPP, nnUNetTrainerMedLiteNet_wideTokens)

# The checks the paper's claims rest on (its own ablations are not published in detail).
ABLATIONS = {
    "noBAA": Ablation({"use_boundary_attention": False}, "both Boundary-Aware Attention modules removed (identity)"),
    "noTransformer": Ablation(
        {"use_transformer": False}, "the Local-Global block keeps only its local MBConv branch (no tokens, no fusion)"
    ),
    "ResNet18": Ablation({"backbone": "resnet18"}, "a ResNet-18 encoder with the same five stage resolutions"),
}

globals().update(epoch_variants(nnUNetTrainerMedLiteNet))
globals().update(ablation_variants(nnUNetTrainerMedLiteNet, ABLATIONS))
globals().update(ablation_variants(nnUNetTrainerMedLiteNet_paper, ABLATIONS))
