import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nnunet_lite.architectures import MedLiteNet
from nnunet_lite.architectures.medlitenet import (
    ASPP,
    SCSE,
    BoundaryAwareAttention,
    InvertedResidual,
    LocalGlobalBlock,
    sobel_kernels,
)
from nnunet_lite.trainers.nnUNetTrainerMedLiteNet import (
    ENSEMBLE,
    ClippedAdamW,
    WarmupCosineLRScheduler,
    nnUNetTrainerMedLiteNet_paper,
)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_spec():
    net = MedLiteNet(3, 1)
    # No official code exists: the widths are this project's choice (see nnunet_lite/architectures/medlitenet.py),
    # so 3,214,335 pins that choice; what is checked against the paper (arXiv 2509.03041) is its 3.2 M parameters
    assert num_params(net) == 3_214_335
    assert abs(num_params(net) / 3.2e6 - 1) < 0.02
    assert num_params(net.encoder) == 1_811_712  # torchvision mobilenet_v2().features[0:18], see the test below


def test_encoder_matches_torchvision_mobilenet_v2():
    import torchvision

    reference = torchvision.models.mobilenet_v2().features[:18]
    assert [p.shape for p in MedLiteNet(3, 1).encoder.parameters()] == [p.shape for p in reference.parameters()]


def test_ensemble_stays_under_10m():
    counts = [num_params(MedLiteNet(3, 1, **trainer.arch_kwargs)) for trainer in ENSEMBLE]
    assert counts == [3_214_335, 3_474_401, 3_291_519]
    assert sum(counts) < 10_000_000


def test_stem_follows_input_channels_and_strides():
    net = MedLiteNet(5, 2, conv_op=nn.Conv3d, strides=[(1, 2, 2)] + [2] * 4)
    stem = net.encoder.stages[0][0][0]
    assert stem.in_channels == 5 and stem.stride == (1, 2, 2)


@pytest.mark.parametrize(("conv_op", "spatial"), [(nn.Conv2d, (8, 8)), (nn.Conv3d, (4, 6, 4))])
def test_blocks_in_2d_and_3d(conv_op, spatial):
    norm = nn.BatchNorm2d if conv_op is nn.Conv2d else nn.BatchNorm3d
    x = torch.randn(2, 16, *spatial)
    assert InvertedResidual(conv_op, 16, 16, (1,) * len(spatial), 6, norm)(x).shape == x.shape
    assert InvertedResidual(conv_op, 16, 8, (2,) * len(spatial), 6, norm)(x).shape[2:] == tuple(s // 2 for s in spatial)
    assert ASPP(conv_op, 16, 8, (2, 4, 6), norm)(x).shape == (2, 8, *spatial)
    assert SCSE(conv_op, 16)(x).shape == x.shape
    assert BoundaryAwareAttention(conv_op)(x).shape == x.shape


def test_sobel_kernels_are_fixed_buffers_for_2d_and_3d():
    classic = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    assert torch.equal(sobel_kernels(2)[1, 0], classic) and torch.equal(sobel_kernels(2)[0, 0], classic.T)
    k3 = sobel_kernels(3)
    assert k3.shape == (3, 1, 3, 3, 3) and torch.allclose(k3.sum(dim=(1, 2, 3, 4)), torch.zeros(3))
    baa = BoundaryAwareAttention(nn.Conv3d)
    assert "sobel" not in baa.state_dict() and all(p.shape != k3.shape for p in baa.parameters())


@pytest.mark.parametrize(("conv_op", "spatial"), [(nn.Conv2d, (24, 32)), (nn.Conv3d, (6, 12, 16))])
def test_boundary_attention_is_highest_on_the_edge(conv_op, spatial):
    # a step edge between the last two axes' columns 7 and 8, everything else constant
    x = torch.zeros(2, 4, *spatial)
    x[..., 8:] = 1.0
    baa = BoundaryAwareAttention(conv_op).eval()
    m = baa.attention_map(x)
    assert m.shape == (2, 1, *spatial)
    profile = m.flatten(0, -2).mean(0)  # mean over everything but the edge-normal axis
    assert set(profile.topk(2).indices.tolist()) == {7, 8}
    assert torch.allclose(m.amax(dim=-1), m[..., 7]) and (m[..., 7] > m[..., 0] + 0.1).all()
    assert torch.allclose(m[..., 0], m[..., -1])  # replicate padding: no spurious edge at the borders
    assert torch.allclose(baa(x), x * (1 + m))


@pytest.mark.parametrize(("conv_op", "grid"), [(nn.Conv2d, (8, 8)), (nn.Conv2d, (2, 8)), (nn.Conv3d, (1, 3, 5))])
def test_position_embedding_adapts_to_any_bottleneck_grid(conv_op, grid):
    block = LocalGlobalBlock(
        conv_op, 16, 8, depth=1, heads=2, norm_op=nn.BatchNorm2d if len(grid) == 2 else nn.BatchNorm3d
    ).eval()
    assert block.pos_embed.shape[2:] == ((8, 8) if len(grid) == 2 else (4, 4, 4))
    assert block.position_embedding(grid).shape == (1, 8, *grid)
    x = torch.randn(1, 16, *grid)
    y = block(x)
    assert y.shape == x.shape
    # attention is global: a change at the first position reaches the last, beyond the 3x3 local branch
    x2 = x.clone()
    x2[(0, slice(None), *(0,) * len(grid))] += 10
    corner = (0, slice(None), *(g - 1 for g in grid))
    assert not torch.allclose(block(x2)[corner], y[corner])


def test_flops_include_attention_products():
    block = LocalGlobalBlock(nn.Conv2d, 32, 16, depth=2, heads=4, norm_op=nn.BatchNorm2d)
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        block(torch.randn(1, 32, 4, 6))
    bmm = counter.get_flop_counts()["Global"][torch.ops.aten.bmm]
    assert bmm == 2 * 2 * (2 * 4 * 24 * 4 * 24)  # 2 layers x (QK^T, AV) x 2 flops per MAC x (heads N d N)


def _paper_optimizer(network=None, num_epochs=300):
    fields = {**nnUNetTrainerMedLiteNet_paper.hyperparameters, "num_epochs": num_epochs}
    stub = SimpleNamespace(network=network or nn.Linear(4, 3), **fields)
    for name in ("warmup_epochs", "min_lr", "max_grad_norm"):
        setattr(stub, name, getattr(nnUNetTrainerMedLiteNet_paper, name))
    return nnUNetTrainerMedLiteNet_paper.configure_optimizers(stub)


def test_paper_recipe_hyperparameters():
    assert nnUNetTrainerMedLiteNet_paper.hyperparameters == {
        "num_epochs": 300,
        "initial_lr": 1e-3,
        "weight_decay": 1e-4,
    }
    assert nnUNetTrainerMedLiteNet_paper.loss_weights == (0.5, 0.5)
    optimizer, scheduler = _paper_optimizer()
    assert isinstance(optimizer, ClippedAdamW) and isinstance(scheduler, WarmupCosineLRScheduler)
    assert optimizer.defaults["weight_decay"] == 1e-4 and optimizer.max_grad_norm == 1.0
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 1e-3
    assert optimizer.defaults["betas"] == (0.9, 0.999)  # AdamW's defaults: the paper gives no betas


def test_optimizer_clips_total_gradient_norm_to_one():
    net = nn.Linear(4, 3)
    optimizer, _ = _paper_optimizer(net)
    for p, g in zip(net.parameters(), (torch.full((3, 4), 3.0), torch.full((3,), 4.0)), strict=True):
        p.grad = g.clone()
    optimizer.step()
    assert math.isclose(torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item(), 1.0, rel_tol=1e-5)
    small = [torch.full((3, 4), 0.01), torch.full((3,), 0.01)]
    for p, g in zip(net.parameters(), small, strict=True):
        p.grad = g.clone()
    optimizer.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), small, strict=True))
    # nnU-Net's checkpoints: AdamW's state_dict round-trips into a fresh optimizer
    fresh, _ = _paper_optimizer(nn.Linear(4, 3))
    fresh.load_state_dict(optimizer.state_dict())
    assert fresh.state_dict()["state"][0]["step"] == 2


def test_optimizer_clips_unscaled_gradients_with_grad_scaler():
    net = nn.Linear(4, 1)
    optimizer, _ = _paper_optimizer(net)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(net(torch.full((8, 4), 100.0)).sum()).backward()
    scaler.unscale_(optimizer)  # as nnU-Net's train_step does before grad_scaler.step
    before = net.weight.detach().clone()
    scaler.step(optimizer)
    scaler.update()
    assert math.isclose(torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item(), 1.0, rel_tol=1e-5)
    assert not torch.equal(before, net.weight)


def test_warmup_cosine_schedule_and_resume():
    optimizer, scheduler = _paper_optimizer()
    lrs = []
    for epoch in range(300):  # nnU-Net: lr_scheduler.step(current_epoch) at every epoch start
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    warmup, cosine = lrs[:10], lrs[9:]
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False)) and math.isclose(lrs[0], 1e-4)
    assert math.isclose(max(lrs), 1e-3) and math.isclose(lrs[9], 1e-3) and math.isclose(lrs[10], 1e-3)
    assert all(a > b for a, b in zip(cosine[1:], cosine[2:], strict=False))
    assert math.isclose(lrs[-1], 1e-6) and min(lrs) == lrs[-1]
    # nnU-Net's --c: fresh optimizer and scheduler, then step(epoch)
    optimizer, scheduler = _paper_optimizer()
    scheduler.step(137)
    assert math.isclose(optimizer.param_groups[0]["lr"], lrs[137])
    # short runs keep a warm-up of at most a tenth of the epochs
    optimizer, scheduler = _paper_optimizer(num_epochs=5)
    scheduler.step(0)
    assert math.isclose(optimizer.param_groups[0]["lr"], 1e-3)
