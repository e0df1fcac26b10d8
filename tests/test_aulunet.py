import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from nnunet_lite.architectures import AULUNet
from nnunet_lite.architectures.aulunet import AKF, LSG, RGF, PointConv
from nnunet_lite.trainers.nnUNetTrainerAULUNet import (
    EpochCosineAnnealingLR,
    nnUNetTrainerAULUNet_paper,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("conv_op", "in_ch", "classes", "expected"),
    # 2D: the official code, github.com/maklachur/AULUNet models/MainPipeline.py at commit b0e483c (MainPipeline,
    # c_list [5, 10, 15, 25, 35, 60]), counted with sum(p.numel()); the paper (BMVC 2025) reports 0.029 M. 3D (not in
    # the paper): the same construction with 3x3x3 depthwise kernels, i.e. 18 more weights per channel in each of the
    # 11 AKF blocks (185 channels in all) and 18 more per input channel in the stem.
    [(nn.Conv2d, 3, 1, 28_636), (nn.Conv2d, 1, 2, 28_552), (nn.Conv3d, 1, 1, 35_296)],
)
def test_parameter_counts_match_official_code(conv_op, in_ch, classes, expected):
    assert num_params(AULUNet(in_ch, classes, conv_op=conv_op)) == expected


@pytest.mark.parametrize(("conv_op", "spatial"), [(nn.Conv2d, (8, 6)), (nn.Conv3d, (4, 6, 5))])
def test_blocks_in_2d_and_3d(conv_op, spatial):
    x = torch.randn(2, 6, *spatial)
    assert AKF(conv_op, 6)(x).shape == x.shape
    assert RGF(conv_op, 6)(x).shape == x.shape
    assert LSG(conv_op, 6)(x, torch.randn_like(x)).shape == x.shape
    out = PointConv(conv_op, 6, 4)(x)
    assert out.shape == (2, 4, *spatial) and (out >= 0).all()


@pytest.mark.parametrize(("conv_op", "spatial"), [(nn.Conv2d, (8, 8)), (nn.Conv3d, (6, 8, 8))])
def test_akf_gate_blends_dense_and_dilated_branches(conv_op, spatial):
    torch.manual_seed(0)
    akf = AKF(conv_op, 4).eval()
    x = torch.randn(2, 4, *spatial)
    alpha = akf.gate(x)
    assert alpha.shape == (2, 4, *[1] * (x.ndim - 2))  # one gate value per sample and channel
    assert ((alpha > 0) & (alpha < 1)).all()
    gate_conv = akf.gate_conv
    with torch.no_grad():
        gate_conv.weight.zero_()
        gate_conv.bias.fill_(100.0)  # alpha == 1: only the dense 3x3 branch F1
        torch.testing.assert_close(akf(x), akf.project(akf.dw_local(x)))
        gate_conv.bias.fill_(-100.0)  # alpha ~ 0: only the dilated branch F2
        torch.testing.assert_close(akf(x), akf.project(akf.dw_dilated(x)))
        gate_conv.bias.zero_()  # alpha == 0.5: the mean of both
        torch.testing.assert_close(akf(x), akf.project((akf.dw_local(x) + akf.dw_dilated(x)) / 2))
    assert akf.dw_dilated.dilation == (2,) * (x.ndim - 2) and akf.dw_local.groups == 4


def test_rgf_and_lsg_formulas():
    torch.manual_seed(0)
    x, skip = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    rgf = RGF(nn.Conv2d, 4)
    g = torch.tanh(rgf.gate_conv(x.mean(dim=(2, 3), keepdim=True)))
    torch.testing.assert_close(rgf(x), x + x * g)
    lsg = LSG(nn.Conv2d, 4).eval()
    with torch.no_grad():
        lsg.gate[0].weight.zero_()  # BN (eval, fresh statistics) of 0 is 0, so beta == 0.5
    torch.testing.assert_close(lsg(x, skip), x + 0.5 * skip)


def _adamw_and_scheduler(scheduler_cls=EpochCosineAnnealingLR):
    stub = SimpleNamespace(network=nn.Linear(2, 1), initial_lr=1e-3, weight_decay=1e-2)
    if scheduler_cls is EpochCosineAnnealingLR:
        return nnUNetTrainerAULUNet_paper.configure_optimizers(stub)
    optimizer = torch.optim.AdamW(stub.network.parameters(), 1e-3, weight_decay=1e-2)
    return optimizer, scheduler_cls(optimizer, T_max=50, eta_min=1e-5)


def test_paper_recipe_hyperparameters():
    assert nnUNetTrainerAULUNet_paper.hyperparameters == {"num_epochs": 400, "initial_lr": 1e-3, "weight_decay": 1e-2}
    assert nnUNetTrainerAULUNet_paper.loss_weights == (1.0, 1.0)
    optimizer, scheduler = _adamw_and_scheduler()
    assert isinstance(optimizer, torch.optim.AdamW) and isinstance(scheduler, CosineAnnealingLR)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["weight_decay"] == 1e-2


def test_paper_schedule_matches_torch_cosine_stepped_per_epoch_and_survives_resume():
    optimizer, scheduler = _adamw_and_scheduler()
    ref_optimizer, reference = _adamw_and_scheduler(CosineAnnealingLR)
    lrs = []
    for epoch in range(400):  # nnU-Net: lr_scheduler.step(current_epoch) at every epoch start
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
        assert math.isclose(lrs[-1], ref_optimizer.param_groups[0]["lr"], rel_tol=1e-9)
        ref_optimizer.step()
        reference.step()  # the official code: scheduler.step() after each epoch
    assert math.isclose(lrs[0], 1e-3) and math.isclose(lrs[50], 1e-5) and math.isclose(lrs[100], 1e-3)
    # nnU-Net's --c: a fresh optimizer and scheduler, the optimizer state from the checkpoint, then step(epoch)
    state = optimizer.state_dict()
    optimizer, scheduler = _adamw_and_scheduler()
    optimizer.load_state_dict(state)
    scheduler.step(137)
    assert math.isclose(optimizer.param_groups[0]["lr"], lrs[137])
