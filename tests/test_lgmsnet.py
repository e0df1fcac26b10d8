import pytest
import torch
from torch import nn

from nnunet_lite.architectures import LGMSNet
from nnunet_lite.architectures.lgmsnet import GMS, LMS, _from_tokens, _to_tokens


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# The official code, github.com/cq-dong/LGMSNet at commit 503ff86: 2D MKtinyvit4_CT in network/CMUNeXt_new.py
# (registered as SegmsNet in main.py; the paper, ECAI 2025, reports 2.32 M), 3D MKtinyvit4_CT3D in
# network_3d/CMUNeXtNew3d.py (BTCV: 14 classes, KiTS23: 4), counted with sum(p.numel()).
@pytest.mark.parametrize(
    ("conv_op", "in_ch", "classes", "expected"),
    [(nn.Conv2d, 3, 1, 2_321_393), (nn.Conv3d, 1, 14, 6_193_742), (nn.Conv3d, 1, 4, 6_193_572)],
)
def test_parameter_counts_match_official_code(conv_op, in_ch, classes, expected):
    assert num_params(LGMSNet(in_ch, classes, conv_op=conv_op)) == expected


def test_odd_feature_sizes_at_token_levels_run_with_patch_one():
    """Anisotropic 3D plan: no pooling along the first axis in the first two pools, odd sizes at low resolution (the
    shapes and gradients of every network are checked in test_network_contract.py)."""
    plan = ([12, 48, 64], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 2]])
    net = LGMSNet(2, 3, conv_op=nn.Conv3d, **LGMSNet.kwargs_from_plans(*plan))
    assert net.token_patches == [(2, 2, 2), (2, 2, 2), (1, 1, 2)]  # feature size (3, 3, 4) at H/16
    out = net(torch.randn(1, 2, *plan[0]))
    assert out.shape == (1, 3, *plan[0]) and torch.isfinite(out).all()


def test_kwargs_from_plans_uses_plan_strides_and_odd_axes_get_patch_one():
    kw = LGMSNet.kwargs_from_plans([24, 64, 64], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]])
    assert kw["strides"] == [(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    # feature sizes: H/4 -> (12, 16, 16), H/8 -> (6, 8, 8), H/16 -> (3, 4, 4)
    assert kw["token_patches"] == [(2, 2, 2), (2, 2, 2), (1, 2, 2)]


@pytest.mark.parametrize("patch", [(2, 2), (1, 2)])
def test_token_grouping_roundtrip_and_sparsity(patch):
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tokens = _to_tokens(x, patch)
    assert tokens.shape == (2, patch[0] * patch[1], (4 // patch[0]) * (6 // patch[1]), 3)
    assert torch.equal(_from_tokens(tokens, patch, (4, 6)), x)
    # group 0 holds the pixels at even offsets along every grouped axis (a dilated, sparse sequence)
    assert torch.equal(tokens[0, 0, :, 0], x[0, 0, :: patch[0], :: patch[1]].flatten())


def test_blocks_in_2d_and_3d():
    for conv_op, shape in [(nn.Conv2d, (1, 16, 8, 8)), (nn.Conv3d, (1, 16, 4, 4, 4))]:
        norm = nn.BatchNorm2d if conv_op is nn.Conv2d else nn.InstanceNorm3d
        assert LMS(conv_op, 16, norm)(torch.randn(shape)).shape == shape
        assert GMS(conv_op, 16, 32, norm)(torch.randn(shape)).shape == (shape[0], 32, *shape[2:])


def test_paper_recipe_optimizer_and_poly_schedule():
    """README: SGD momentum 0.9 (no Nesterov), weight decay 1e-4, lr 0.02, poly (exponent 0.9), 500 epochs."""
    from types import SimpleNamespace

    from nnunet_lite.trainers import nnUNetTrainerLGMSNet_paper

    fields = nnUNetTrainerLGMSNet_paper.hyperparameters
    assert fields == {"num_epochs": 500, "initial_lr": 0.02, "weight_decay": 1e-4}
    stub = SimpleNamespace(network=nn.Linear(2, 1), **fields)
    optimizer, scheduler = nnUNetTrainerLGMSNet_paper.configure_optimizers(stub)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"], group["dampening"]) == (0.9, False, 1e-4, 0)
    for epoch in (0, 1, 250, 499):  # nnU-Net: lr_scheduler.step(current_epoch) at every epoch start
        scheduler.step(epoch)
        assert group["lr"] == pytest.approx(0.02 * (1 - epoch / 500) ** 0.9, rel=1e-12)
