"""What every nnunet_lite network promises nnU-Net, checked for all three architectures at once.

Architecture-specific behaviour (parameter counts, blocks, recipes) lives in test_<architecture>.py.
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nnunet_lite.architectures import AULUNet, LGMSNet, MedLiteNet
from nnunet_lite.architectures.contract import LiteNetwork
from nnunet_lite.trainers import TRAINERS

ARCHITECTURES = (LGMSNet, AULUNet, MedLiteNet)
# nnU-Net 3d_fullres-like anisotropic plan: no pooling through-plane in the first two pools
ANISOTROPIC_PLAN = ([16, 64, 96], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]])


pytestmark = pytest.mark.usefixtures("one_thread")


def trainer_for(architecture: type) -> type:
    return TRAINERS[f"nnUNetTrainer{architecture.__name__}"]


def configuration(patch_size: list[int], pools: list[list[int]]) -> SimpleNamespace:
    return SimpleNamespace(patch_size=patch_size, pool_op_kernel_sizes=pools, data_identifier="stub_3d_fullres")


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.__name__)
def test_impossible_input_size_fails_early_with_actionable_message(architecture):
    net = architecture(3, 2)
    assert net.required_divisor() == (32, 32)  # five 2x2 poolings, or four plus LGMSNet's 2x2 token patches
    with pytest.raises(ValueError, match=r"axis 1: 48 is not divisible by 32.*multiple of \(32, 32\)"):
        net(torch.randn(1, 3, 64, 48))


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.__name__)
def test_deep_supervision_is_refused(architecture):
    with pytest.raises(ValueError, match="no deep supervision"):
        architecture(3, 2, deep_supervision=True)


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.__name__)
def test_logits_not_probabilities(architecture):
    torch.manual_seed(0)
    out = architecture(3, 2).eval()(torch.randn(1, 3, 64, 64) * 5)
    assert out.min() < 0 or out.max() > 1


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.__name__)
def test_trainer_builds_network_from_anisotropic_plans_and_rejects_bad_patch(architecture):
    trainer = trainer_for(architecture)
    net = trainer.build_network_architecture(None, configuration(*ANISOTROPIC_PLAN), 1, 2)
    assert isinstance(net, architecture) and net.strides[0] == (1, 2, 2)
    bad_patch = [12, 64, 96] if architecture is not LGMSNet else [16, 60, 96]
    with pytest.raises(ValueError, match=rf"{trainer.__name__} cannot be built.*patch_size=.*Edit patch_size"):
        trainer.build_network_architecture(None, configuration(bad_patch, ANISOTROPIC_PLAN[1]), 1, 2)


@pytest.mark.parametrize(
    ("conv_op", "shape", "plan"),
    [
        (nn.Conv2d, (2, 3, 64, 96), None),
        (nn.Conv2d, (1, 1, 32, 160), None),
        (nn.Conv3d, (1, 1, 32, 32, 64), None),
        (nn.Conv3d, (1, 2, *ANISOTROPIC_PLAN[0]), ANISOTROPIC_PLAN),
    ],
    ids=["2d", "2d-wide", "3d", "3d-anisotropic-plan"],
)
@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.__name__)
def test_forward_shape_and_gradients(architecture, conv_op, shape, plan):
    kwargs = architecture.kwargs_from_plans(*plan) if plan else {}
    net = architecture(shape[1], 3, conv_op=conv_op, **kwargs)
    assert isinstance(net, LiteNetwork)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 3, *shape[2:])
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.__name__)
def test_strides_are_the_plans_first_pools_padded_with_one(architecture):
    n = architecture.num_pools
    kwargs = architecture.kwargs_from_plans(*ANISOTROPIC_PLAN)
    assert kwargs["strides"] == [tuple(p) for p in ANISOTROPIC_PLAN[1][1 : n + 1]]  # the stem's [1, 1, 1] is skipped
    short = architecture.kwargs_from_plans([16, 16], [[1, 1], [2, 2], [2, 2]])
    assert short["strides"] == [(2, 2), (2, 2)] + [(1, 1)] * (n - 2)
    assert architecture(1, 2, **short)(torch.randn(2, 1, 16, 16)).shape == (2, 2, 16, 16)
