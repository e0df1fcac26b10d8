"""Inference forms of the blocks that own them (``reparameterize`` / ``fold_batchnorm``) and the attention path.

Each fused block must compute what the block computes; the whole-network check is in test_deploy.py.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_lite.architectures.aulunet import AKF, FusedAKF, ProjectThenUpsample, UpProj
from nnunet_lite.architectures.blocks import MultiHeadSelfAttention
from nnunet_lite.architectures.lgmsnet import LMS, FusedLMS
from nnunet_lite.architectures.medlitenet import BoundaryAwareAttention
from nnunet_lite.deploy.optimize import fuse_batchnorm

from .test_deploy import assert_close, randomize_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("conv_op, spatial", [(nn.Conv2d, (24, 20)), (nn.Conv3d, (8, 10, 12))])
def test_fused_akf_equals_dense_plus_dilated_depthwise(conv_op, spatial, batch):
    torch.manual_seed(0)
    akf = randomize_batchnorm(AKF(conv_op, 6))
    x = torch.randn(batch, 6, *spatial)
    with torch.no_grad():
        fused = akf.reparameterize()
        assert isinstance(fused, FusedAKF)
        assert_close(fused(x), akf(x), rtol=1e-5)
    assert akf.reparameterize(for_export=True) is akf, "per-sample kernels cannot be exported with a dynamic batch"


@pytest.mark.parametrize("conv_op, spatial", [(nn.Conv2d, (32, 24)), (nn.Conv3d, (8, 12, 16))])
def test_fused_lms_equals_four_depthwise_kernels(conv_op, spatial):
    torch.manual_seed(0)
    norm = nn.BatchNorm2d if conv_op is nn.Conv2d else nn.BatchNorm3d
    lms = randomize_batchnorm(LMS(conv_op, 16, norm))
    x = torch.randn(2, 16, *spatial)
    with torch.no_grad():
        fused = lms.reparameterize(for_export=True)
        assert isinstance(fused, FusedLMS) and fused.dw.kernel_size[0] == 9 and fused.dw.groups == 16
        assert_close(fused(x), lms(x), rtol=1e-5)


@pytest.mark.parametrize("conv_op, low, high", [(nn.Conv2d, (8, 6), (16, 12)), (nn.Conv3d, (4, 4, 6), (8, 8, 12))])
def test_projection_before_upsampling_equals_upsampling_first(conv_op, low, high):
    torch.manual_seed(0)
    up = randomize_batchnorm(UpProj(conv_op, 10, 5))
    x = torch.randn(2, 10, *low)
    with torch.no_grad():
        fused = up.reparameterize(for_export=True)
        assert isinstance(fused, ProjectThenUpsample)
        assert_close(fused(x, high), up(x, high), rtol=1e-5)


def test_boundary_attention_folds_its_batchnorm():
    module = randomize_batchnorm(BoundaryAwareAttention(nn.Conv2d))
    with torch.no_grad():
        module.conv.weight.normal_()
        x = torch.randn(2, 8, 16, 16)
        reference = module(x)
        fused = fuse_batchnorm(copy.deepcopy(module))
        assert isinstance(fused.norm, nn.Identity)
        assert_close(fused(x), reference, rtol=1e-5)
        fused.fold_batchnorm()  # idempotent
        assert_close(fused(x), reference, rtol=1e-5)


def _grouped_attention(attention: MultiHeadSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The former ``MultiHeadSelfAttention.forward``: one ``scaled_dot_product_attention`` call over all leading axes
    (5D for LGMSNet's token groups), kept here as the reference the batched path must equal."""
    *lead, n, _ = x.shape
    qkv = attention.qkv(x).reshape(*lead, n, 3, attention.heads, attention.dim_head).movedim(-3, 0).transpose(-2, -3)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return attention.proj(out.transpose(-2, -3).reshape(*lead, n, attention.heads * attention.dim_head))


@pytest.mark.parametrize("shape", [(2, 4, 50, 24), (3, 17, 24), (2, 2, 2, 9, 24)])
def test_attention_equals_grouped_attention_forward_and_backward(shape):
    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(24, heads=4, dim_head=8, qkv_bias=True)
    x = torch.randn(shape, requires_grad=True)
    target = torch.randn(shape)
    grads = []
    for forward in (attention, lambda t: _grouped_attention(attention, t)):
        attention.zero_grad()
        x.grad = None
        out = forward(x)
        ((out - target) ** 2).mean().backward()
        grads.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in attention.parameters()]))
    (out, gx, gp), (ref, rgx, rgp) = grads
    assert_close(out, ref, rtol=1e-5)
    assert gx.abs().max() > 0 and all(g.abs().max() > 0 for g in gp), "no gradient reached the input or a weight"
    assert_close(gx, rgx, rtol=1e-5)
    for g, r in zip(gp, rgp, strict=True):
        assert_close(g, r, rtol=1e-5)
