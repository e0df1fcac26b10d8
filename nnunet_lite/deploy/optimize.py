"""Inference-only rewrites that make the lite networks fast on a CPU without changing what they compute.

Each rewrite returns the same function up to float rounding (tests compare every one against the original):

- :func:`fuse_batchnorm`: eval-mode BatchNorm folded into the convolution before it (``Conv -> BN``), or into a
  following unpadded convolution (``BN -> Conv``, e.g. LGMSNet's fusion blocks ``conv -> GELU -> BN -> conv1x1``);
- :func:`rewrite_akf`: AULUNet's Adaptive Kernel Fusion ``alpha * DW3x3(x) + (1 - alpha) * DW3x3_dil2(x)`` computed
  as one depthwise 5x5 convolution with the per-sample kernel ``W_dil + alpha * (W - W_dil)`` (both kernels are
  linear, so the blend moves into the weights): one dense kernel instead of a dilated one, a dense one and three
  full-resolution element-wise passes;
- :func:`rewrite_upsample_projection`: AULUNet's decoder ``ReLU(BN(Conv1x1(upsample(x))))`` as
  ``ReLU(upsample(BN(Conv1x1(x))))``: a pointwise affine map commutes with linear interpolation (its weights sum to
  one), so the projection runs at the coarse resolution and fewer channels are upsampled;
- :func:`rewrite_multiscale_depthwise`: LGMSNet's LMS block (four depthwise convolutions with kernels 3, 5, 7, 9 on
  four channel groups, then a concatenation) as one depthwise convolution with zero-padded 9x9 kernels;
- :func:`rewrite_attention`: attention on ``(B, 4, N, C)`` token groups (LGMSNet) reshaped to the 4D
  ``(B * 4, heads, N, d)`` layout that ``scaled_dot_product_attention``'s fused CPU kernel (and ONNX export) needs;
  the 5D call falls back to the unfused "math" path that materialises every attention matrix;
- ``channels_last`` memory format for networks with depthwise convolutions: oneDNN's depthwise kernels are several
  times faster in NHWC.

:func:`optimize_for_cpu_inference` applies them to a copy of the model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..architectures.aulunet import AKF, UpProj
from ..architectures.blocks import MultiHeadSelfAttention
from ..architectures.lgmsnet import LMS
from ..architectures.medlitenet import BoundaryAwareAttention

__all__ = [
    "FusedAKF",
    "FusedLMS",
    "ProjectThenUpsample",
    "TokenBatchedAttention",
    "count_rewrites",
    "fuse_batchnorm",
    "has_depthwise_convolutions",
    "optimize_for_cpu_inference",
    "rewrite_akf",
    "rewrite_attention",
    "rewrite_multiscale_depthwise",
    "rewrite_upsample_projection",
    "to_channels_last",
]

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _is_plain_conv(module: nn.Module) -> bool:
    return isinstance(module, _ConvNd) and not module.transposed and module.padding_mode == "zeros"


def _foldable_bn(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm) and module.track_running_stats and module.running_var is not None


def _fold_bn_into_next_conv(bn: _BatchNorm, conv: _ConvNd) -> _ConvNd:
    """``conv(BN(x))`` as one convolution; exact only if ``conv`` does not pad (padding would see BN(0) != 0)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    fused = copy.deepcopy(conv)
    shape = (1, -1) + (1,) * (conv.weight.ndim - 2)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(shape))
        extra = (conv.weight * shift.reshape(shape)).sum(dim=tuple(range(1, conv.weight.ndim)))
        if fused.bias is None:
            fused.bias = nn.Parameter(extra.detach().clone())
        else:
            fused.bias.copy_(conv.bias + extra)
    return fused


def _sequentials(model: nn.Module) -> Iterator[nn.Sequential]:
    yield from (m for m in model.modules() if isinstance(m, nn.Sequential))


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Folds eval-mode BatchNorm layers into neighbouring convolutions, in place; returns ``model``.

    Handles ``Conv -> BN`` pairs inside ``nn.Sequential`` containers (nnunet_lite's ``ConvNormAct``, MobileNetV2
    blocks, ...), ``BN -> Conv`` pairs where the convolution has no padding and ``groups == 1``, and MedLiteNet's
    boundary attention (``norm(conv(x))``). A folded BatchNorm becomes ``nn.Identity``. The model must be in eval mode:
    training-mode BatchNorm normalises with batch statistics, which cannot be folded.
    """
    if model.training:
        raise ValueError("fuse_batchnorm needs a model in eval mode (call model.eval() first)")
    for seq in _sequentials(model):
        names = list(seq._modules)
        for first, second in zip(names, names[1:], strict=False):
            a, b = seq._modules[first], seq._modules[second]
            if _is_plain_conv(a) and _foldable_bn(b) and b.num_features == a.out_channels:
                seq._modules[first] = fuse_conv_bn_eval(a, b)
                seq._modules[second] = nn.Identity()
            elif (
                _foldable_bn(a)
                and _is_plain_conv(b)
                and b.groups == 1
                and not isinstance(b.padding, str)
                and all(p == 0 for p in b.padding)
                and b.in_channels == a.num_features
            ):
                seq._modules[second] = _fold_bn_into_next_conv(a, b)
                seq._modules[first] = nn.Identity()
    for module in model.modules():
        if isinstance(module, BoundaryAwareAttention) and _foldable_bn(module.norm):
            module.conv = fuse_conv_bn_eval(module.conv, module.norm)
            module.norm = nn.Identity()
    return model


class FusedAKF(nn.Module):
    """AULUNet's :class:`~nnunet_lite.architectures.aulunet.AKF` as one depthwise 5x5 convolution per sample.

    ``alpha * DW3x3(x) + (1 - alpha) * DW3x3_dil2(x) = DW5x5(x; W_dil + alpha * (W - W_dil))`` with both kernels
    embedded in 5x5 (the dense one in the centre, the dilated one on the even taps). ``alpha`` is per sample and
    channel, so a batch is convolved as one ``(1, B * C, ...)`` grouped convolution.
    """

    def __init__(self, akf: AKF) -> None:
        super().__init__()
        if akf.dw_local.bias is not None or akf.dw_dilated.bias is not None:
            raise ValueError("FusedAKF expects AKF's depthwise convolutions without bias (as in AULUNet)")
        local, dilated = akf.dw_local.weight.detach(), akf.dw_dilated.weight.detach()
        dim = local.ndim - 2
        channels = local.shape[0]
        w_local = local.new_zeros(channels, 1, *(5,) * dim)
        w_dilated = torch.zeros_like(w_local)
        w_local[(slice(None), slice(None), *(slice(1, 4),) * dim)] = local
        w_dilated[(slice(None), slice(None), *(slice(0, 5, 2),) * dim)] = dilated
        self.register_buffer("w_dilated", w_dilated)
        self.register_buffer("w_delta", w_local - w_dilated)
        self.gate_conv = akf.gate_conv
        self.project = akf.project
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        alpha = torch.sigmoid(self.gate_conv(x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)))
        weight = self.w_dilated + alpha.reshape(b, c, 1, *(1,) * self.dim) * self.w_delta  # (B, C, 1, 5, ...)
        conv = _CONV_FN[self.dim]
        if b == 1:
            y = conv(x, weight[0], padding=2, groups=c)
        else:
            y = conv(
                x.reshape(1, b * c, *spatial), weight.reshape(b * c, 1, *weight.shape[3:]), padding=2, groups=b * c
            )
            y = y.reshape(b, c, *spatial)
        return self.project(y)


class ProjectThenUpsample(nn.Module):
    """AULUNet's :class:`~nnunet_lite.architectures.aulunet.UpProj` with the pointwise convolution (and its
    BatchNorm) applied before the interpolation; the activation stays after it."""

    def __init__(self, up: UpProj) -> None:
        super().__init__()
        layers = list(up.project)
        if not (_is_plain_conv(layers[0]) and all(k == 1 for k in layers[0].kernel_size)):
            raise ValueError("ProjectThenUpsample needs a pointwise convolution first")
        if any(s != 1 for s in layers[0].stride) or any(p != 0 for p in layers[0].padding):
            raise ValueError("ProjectThenUpsample needs an unstrided, unpadded pointwise convolution")
        affine = [layers.pop(0)]
        while layers and isinstance(layers[0], (_BatchNorm, nn.Identity)):
            affine.append(layers.pop(0))
        self.affine = nn.Sequential(*affine)
        self.act = nn.Sequential(*layers)
        self.mode = up.mode

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        y = F.interpolate(self.affine(x), size=tuple(size), mode=self.mode, align_corners=True)
        return self.act(y)


class FusedLMS(nn.Module):
    """LGMSNet's :class:`~nnunet_lite.architectures.lgmsnet.LMS` with its four depthwise convolutions (kernels 3, 5,
    7, 9 on four channel groups) as one depthwise convolution whose kernels are zero-padded to the largest size."""

    def __init__(self, lms: LMS) -> None:
        super().__init__()
        convs = list(lms.dw)
        k_max = max(c.kernel_size[0] for c in convs)
        dim = convs[0].weight.ndim - 2
        channels = sum(c.out_channels for c in convs)
        conv_op = type(convs[0])
        self.dw = conv_op(channels, channels, k_max, padding=k_max // 2, groups=channels)
        with torch.no_grad():
            self.dw.weight.zero_()
            start = 0
            for conv in convs:
                k, n = conv.kernel_size[0], conv.out_channels
                offset = (k_max - k) // 2
                self.dw.weight[(slice(start, start + n), slice(None), *(slice(offset, offset + k),) * dim)] = (
                    conv.weight
                )
                self.dw.bias[start : start + n] = conv.bias if conv.bias is not None else 0
                start += n
        self.dw.to(convs[0].weight.device)
        self.norm, self.act, self.bottleneck = lms.norm, lms.act, lms.bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm(self.dw(x) + x))
        return self.bottleneck(y) + x


class TokenBatchedAttention(nn.Module):
    """:class:`~nnunet_lite.architectures.blocks.MultiHeadSelfAttention` for any number of leading token-group axes,
    computed with the group axes folded into the batch so that ``scaled_dot_product_attention`` gets 4D inputs
    (its fused CPU kernel; the 5D call materialises every attention matrix). Shares the original's weights."""

    def __init__(self, attention: MultiHeadSelfAttention) -> None:
        super().__init__()
        self.heads, self.dim_head = attention.heads, attention.dim_head
        self.qkv, self.proj = attention.qkv, attention.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[-2], x.shape[-1]
        tokens = x.reshape(-1, n, c)
        qkv = self.qkv(tokens).reshape(tokens.shape[0], n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B', heads, N, dim_head)
        out = self.proj(out.transpose(1, 2).reshape(tokens.shape[0], n, self.heads * self.dim_head))
        return out.reshape(x.shape[:-1] + (out.shape[-1],))


def _replace(model: nn.Module, kind: type[nn.Module], factory) -> nn.Module:
    if isinstance(model, kind):
        return factory(model)
    for name, child in list(model.named_children()):
        model._modules[name] = _replace(child, kind, factory)
    return model


def rewrite_akf(model: nn.Module) -> nn.Module:
    """Replaces every AULUNet ``AKF`` block by :class:`FusedAKF` (in place where possible); returns the model."""
    return _replace(model, AKF, FusedAKF)


def rewrite_upsample_projection(model: nn.Module) -> nn.Module:
    """Replaces every AULUNet ``UpProj`` by :class:`ProjectThenUpsample`; returns the model."""
    return _replace(model, UpProj, ProjectThenUpsample)


def rewrite_multiscale_depthwise(model: nn.Module) -> nn.Module:
    """Replaces every LGMSNet ``LMS`` block by :class:`FusedLMS`; returns the model."""
    return _replace(model, LMS, FusedLMS)


def rewrite_attention(model: nn.Module) -> nn.Module:
    """Replaces every ``MultiHeadSelfAttention`` by :class:`TokenBatchedAttention`; returns the model."""
    return _replace(model, MultiHeadSelfAttention, TokenBatchedAttention)


def optimize_for_cpu_inference(
    model: nn.Module,
    *,
    fuse_bn: bool = True,
    akf: bool = True,
    upsample: bool = True,
    lms: bool = True,
    attention: bool = True,
    channels_last: bool | None = None,
    for_export: bool = False,
) -> nn.Module:
    """An inference-only copy of ``model`` with the CPU rewrites of this module applied; ``model`` is unchanged.

    Outputs equal the original's up to float rounding. Works on any network: rewrites apply where their pattern
    occurs (nnU-Net's own ``PlainConvUNet`` has InstanceNorm, so only ``channels_last`` applies to it).

    Args:
        model: the network (its mode does not matter; the copy is put in eval mode).
        fuse_bn: fold BatchNorm into convolutions (:func:`fuse_batchnorm`).
        akf: AULUNet's AKF as one per-sample depthwise 5x5 convolution (:class:`FusedAKF`).
        upsample: AULUNet's decoder projections before the upsampling (:class:`ProjectThenUpsample`).
        lms: LGMSNet's multi-kernel depthwise block as one depthwise convolution (:class:`FusedLMS`).
        attention: 4D attention for token groups (:class:`TokenBatchedAttention`).
        channels_last: convert the weights to NHWC (NDHWC in 3D); feed inputs in the same format for full speed
            (:func:`to_channels_last`). None: only networks with depthwise convolutions, whose oneDNN kernels are
            several times faster in NHWC (for nnU-Net's plain U-Net with InstanceNorm, NHWC was measured slower).
            Ignored with ``for_export``.
        for_export: only rewrites that keep a batch-size-independent graph (no per-sample AKF kernel), contiguous
            layout: the variant that is exported to ONNX.

    Returns:
        The optimised copy, in eval mode, without gradients.
    """
    optimized = copy.deepcopy(model).eval()
    for p in optimized.parameters():
        p.requires_grad_(False)
    if fuse_bn:
        fuse_batchnorm(optimized)
    if akf and not for_export:
        optimized = rewrite_akf(optimized)
    if upsample:
        optimized = rewrite_upsample_projection(optimized)
    if lms:
        optimized = rewrite_multiscale_depthwise(optimized)
    if attention:
        optimized = rewrite_attention(optimized)
    if channels_last is None:
        channels_last = has_depthwise_convolutions(optimized)
    if channels_last and not for_export:
        optimized = optimized.to(memory_format=_channels_last_format(optimized))
    return optimized


def count_rewrites(original: nn.Module, optimized: nn.Module) -> dict[str, int]:
    """How many times each rewrite was applied in ``optimized`` (a result of :func:`optimize_for_cpu_inference`)."""
    batchnorms = sum(isinstance(m, _BatchNorm) for m in original.modules())
    counts = {
        "fuse_batchnorm": batchnorms - sum(isinstance(m, _BatchNorm) for m in optimized.modules()),
        "fused_akf": sum(isinstance(m, FusedAKF) for m in optimized.modules()),
        "project_then_upsample": sum(isinstance(m, ProjectThenUpsample) for m in optimized.modules()),
        "fused_lms": sum(isinstance(m, FusedLMS) for m in optimized.modules()),
        "token_batched_attention": sum(isinstance(m, TokenBatchedAttention) for m in optimized.modules()),
    }
    return {k: v for k, v in counts.items() if v}


def has_depthwise_convolutions(model: nn.Module) -> bool:
    """True if ``model`` has a depthwise convolution (``groups == in_channels > 1``)."""
    return any(isinstance(m, _ConvNd) and m.groups > 1 and m.groups == m.in_channels for m in model.modules())


def _channels_last_format(model: nn.Module) -> torch.memory_format:
    convs = [m for m in model.modules() if isinstance(m, _ConvNd)]
    return torch.channels_last_3d if convs and convs[0].weight.ndim == 5 else torch.channels_last


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in NHWC (4D) or NDHWC (5D) memory format; other tensors are returned unchanged."""
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
