"""LGMSNet: local multiscale + sparse global multiscale blocks (Dong et al., ECAI 2025).

Reproduces the official code (``cq-dong/LGMSNet``: ``MKtinyvit4_CT`` in 2D, ``MKtinyvit4_CT3D`` in 3D) from one
dimension-agnostic implementation: 2,321,393 parameters in 2D (3 inputs, 1 output), 6,193,742 in 3D (1 input,
14 outputs). Differences from the official code, all needed to run inside nnU-Net:

- downsampling strides come from the nnU-Net plans (anisotropic ``[1, 2, 2]`` pools are allowed) instead of a fixed 2;
- the 2x2(x2) token grouping of the GMS blocks uses a patch of 1 along axes whose feature map is odd at that level
  (e.g. the through-plane axis of anisotropic 3D plans), see :meth:`LGMSNet.kwargs_from_plans`;
- decoder upsampling interpolates to the skip connection's size, so any stride layout lines up;
- the network returns logits (no sigmoid) and has no deep supervision, as in the paper.

The constructor options ``lms_kernels`` and ``gms_ratio`` build the paper's ablations (LMS kernel scales, GMS
Transformer:convolution split) from this same code; their defaults are the published network.
"""

from __future__ import annotations

import math
import pydoc
from collections.abc import Sequence

import torch
from dynamic_network_architectures.building_blocks.helper import (
    convert_conv_op_to_dim,
    get_matching_batchnorm,
    get_matching_instancenorm,
    get_matching_pool_op,
)
from torch import nn
from torch.nn import functional as F

from .blocks import (
    CONV_FN,
    ConvNormAct,
    ConvOp,
    TransformerLayer,
    embed_kernel,
    init_weights,
    interp_mode,
    normalize_strides,
    training_forms_enabled,
)
from .contract import LiteNetwork

__all__ = ["LGMSNet"]

NUM_POOLS = 4
# Resolution levels (0 = full resolution) of the GMS blocks: encoder4 and decoder5 at H/8, encoder5 at H/16,
# decoder4 at H/4.
GMS_LEVELS = (2, 3, 4)


def _norm_for(conv_op: ConvOp) -> type[nn.Module]:
    """The official 2D code uses BatchNorm; the 3D code uses InstanceNorm (affine=False) in the same places."""
    if convert_conv_op_to_dim(conv_op) == 2:
        return get_matching_batchnorm(conv_op)
    return get_matching_instancenorm(conv_op)


class LMS(nn.Module):
    """Local Multiscale block (``CMUNeXtBlock_MK_resiual2``).

    The C channels are split into 4 groups convolved depthwise with kernels 3, 5, 7, 9 ("multiscale"), then
    ``Y = GELU(GN(concat + X))``, ``Z = SiLU(N(Conv3x3_{C/4->C}(SiLU(N(Conv1x1_{C->C/4}(Y))))))`` and
    ``out = Z + X``, where N is the network's norm (BatchNorm in 2D, InstanceNorm in 3D, as in the official code).
    ``kernels`` gives the four groups' (odd) kernel sizes; e.g. ``(3, 3, 3, 3)`` is the homogeneous ablation.

    Training form (default, see :func:`~nnunet_lite.architectures.blocks.reference_forms`): the four depthwise
    convolutions run as one, its weight built on each call from the four parameters zero-padded to the largest kernel.
    Same parameters and state_dict; the padded taps are zero by construction and get no gradient. Measured 1.25-1.5x
    faster for the block's forward + backward (channels-last, batch 15) despite the padded taps' extra work, because
    it saves the channel split, three convolution launches and the concatenation in both passes.
    """

    def __init__(
        self, conv_op: ConvOp, channels: int, norm_op: type[nn.Module], kernels: Sequence[int] = (3, 5, 7, 9)
    ) -> None:
        super().__init__()
        self.kernels = tuple(int(k) for k in kernels)
        if len(self.kernels) != 4 or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"LMS needs 4 odd kernel sizes (one per channel group), got {tuple(kernels)}")
        if channels % 4:
            raise ValueError(f"LMS needs channels divisible by 4, got {channels}")
        group = channels // 4
        self.dw = nn.ModuleList(conv_op(group, group, k, padding=k // 2, groups=group) for k in self.kernels)
        self.norm = nn.GroupNorm(4, channels)
        self.act = nn.GELU()
        self.bottleneck = nn.Sequential(
            ConvNormAct(conv_op, channels, group, 1, norm_op=norm_op, nonlin=nn.SiLU),
            ConvNormAct(conv_op, group, channels, 3, norm_op=norm_op, nonlin=nn.SiLU),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if training_forms_enabled():
            k = max(self.kernels)
            weight = torch.cat([embed_kernel(conv.weight, k) for conv in self.dw])
            bias = torch.cat([conv.bias for conv in self.dw])
            y = CONV_FN[x.ndim - 2](x, weight, bias, padding=k // 2, groups=x.shape[1])
        else:
            y = torch.cat([conv(part) for conv, part in zip(self.dw, x.chunk(4, dim=1), strict=True)], dim=1)
        y = self.act(self.norm(y + x))
        return self.bottleneck(y) + x

    def reparameterize(self, *, for_export: bool = False) -> nn.Module:
        """:class:`FusedLMS` for inference (exportable)."""
        return FusedLMS(self)


class FusedLMS(nn.Module):
    """:class:`LMS` for inference: its four depthwise convolutions (kernels 3, 5, 7, 9 on four channel groups) as one
    depthwise convolution whose kernels are zero-padded to the largest size (one kernel launch, no split or concat)."""

    def __init__(self, lms: LMS) -> None:
        super().__init__()
        convs = list(lms.dw)
        k_max = max(c.kernel_size[0] for c in convs)
        dim = convs[0].weight.ndim - 2
        channels = sum(c.out_channels for c in convs)
        self.dw = type(convs[0])(channels, channels, k_max, padding=k_max // 2, groups=channels)
        with torch.no_grad():
            self.dw.weight.zero_()
            start = 0
            for conv in convs:
                k, n = conv.kernel_size[0], conv.out_channels
                offset = (k_max - k) // 2
                self.dw.weight[(slice(start, start + n), slice(None), *(slice(offset, offset + k),) * dim)] = (
                    conv.weight
                )
                self.dw.bias[start : start + n] = conv.bias
                start += n
        self.dw.to(convs[0].weight.device)
        self.norm, self.act, self.bottleneck = lms.norm, lms.act, lms.bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm(self.dw(x) + x))
        return self.bottleneck(y) + x


def _to_tokens(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``b d (h ph) (w pw) -> b (ph pw) (h w) d`` for any number of spatial axes."""
    b, d, *spatial = x.shape
    dim = len(spatial)
    grid = [s // p for s, p in zip(spatial, patch, strict=True)]
    x = x.reshape(b, d, *[v for g, p in zip(grid, patch, strict=True) for v in (g, p)])
    perm = [0] + [3 + 2 * i for i in range(dim)] + [2 + 2 * i for i in range(dim)] + [1]
    return x.permute(perm).reshape(b, math.prod(patch), math.prod(grid), d)


def _from_tokens(t: torch.Tensor, patch: Sequence[int], spatial: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`_to_tokens`."""
    b, _, _, d = t.shape
    dim = len(spatial)
    grid = [s // p for s, p in zip(spatial, patch, strict=True)]
    t = t.reshape(b, *patch, *grid, d)
    perm = [0, 2 * dim + 1] + [v for i in range(dim) for v in (1 + dim + i, 1 + i)]
    return t.permute(perm).reshape(b, d, *spatial)


class GMS(nn.Module):
    """Sparse Global Multiscale block (``MobileViTBlocktem_CT``).

    ``y = x``; ``x = Conv1x1(Conv3x3_{dim->ch}(x))``; the channels are split 3:1 into a transformer part and a
    convolution part. The convolution part gets a residual depthwise-3x3 + per-channel-scale branch. The transformer
    part is grouped into 2x2 (2x2x2) patches: each of the 4 (8) intra-patch offsets forms its own token sequence
    (a dilated, sparse global attention) through one pre-norm ViT layer (4 heads x 8, MLP ``2 * ch``, SiLU).
    Finally ``out = Conv3x3_{dim+ch->ch}(concat[Conv1x1(concat[parts]), y])``.

    ``ratio`` is the Transformer:convolution channel split (paper: 3:1); a zero part drops that branch entirely
    (``(0, 1)``: convolution only, ``(1, 0)``: Transformer only). Attention width and MLP size do not depend on it.
    """

    def __init__(
        self,
        conv_op: ConvOp,
        in_channels: int,
        channels: int,
        norm_op: type[nn.Module],
        heads: int = 4,
        dim_head: int = 8,
        ratio: Sequence[int] = (3, 1),
    ) -> None:
        super().__init__()
        a, b = (int(r) for r in ratio) if len(ratio) == 2 else (-1, -1)
        if a < 0 or b < 0 or a + b == 0 or channels * a % (a + b):
            raise ValueError(
                f"GMS ratio {tuple(ratio)} must be two non-negative integers, not both 0, that split {channels} "
                f"channels evenly"
            )
        self.transformer_channels = channels * a // (a + b)
        conv_channels = channels - self.transformer_channels
        bn = get_matching_batchnorm(conv_op)
        self.local_rep = nn.Sequential(
            ConvNormAct(conv_op, in_channels, channels, 3, norm_op=norm_op, nonlin=nn.SiLU),
            ConvNormAct(conv_op, channels, channels, 1, norm_op=norm_op, nonlin=nn.SiLU),
        )
        self.conv_branch = (
            nn.Sequential(
                ConvNormAct(conv_op, conv_channels, conv_channels, 3, norm_op=bn, nonlin=nn.ReLU, groups=conv_channels),
                ConvNormAct(conv_op, conv_channels, conv_channels, 1, norm_op=bn, nonlin=None, groups=conv_channels),
            )
            if conv_channels
            else None
        )
        self.transformer = (
            TransformerLayer(
                self.transformer_channels, heads=heads, dim_head=dim_head, mlp_dim=2 * channels, nonlin=nn.SiLU
            )
            if self.transformer_channels
            else None
        )
        self.merge = ConvNormAct(conv_op, channels, channels, 1, norm_op=norm_op, nonlin=nn.SiLU)
        self.fuse = ConvNormAct(conv_op, in_channels + channels, channels, 3, norm_op=norm_op, nonlin=nn.SiLU)
        self.token_patch: tuple[int, ...] = (2,) * convert_conv_op_to_dim(conv_op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        x = self.local_rep(x)
        x_global, x_local = x.split([self.transformer_channels, x.shape[1] - self.transformer_channels], dim=1)
        parts = []
        if self.transformer is not None:
            tokens = self.transformer(_to_tokens(x_global, self.token_patch))
            parts.append(_from_tokens(tokens, self.token_patch, x_global.shape[2:]))
        if self.conv_branch is not None:
            parts.append(x_local + self.conv_branch(x_local))
        x = self.merge(torch.cat(parts, dim=1))
        return self.fuse(torch.cat([x, y], dim=1))


class FusionConv(nn.Sequential):
    """CMUNeXt fusion block: grouped 3x3 (2 groups), then 1x1 expand x4 and 1x1 project, each conv -> GELU -> norm."""

    def __init__(self, conv_op: ConvOp, in_channels: int, out_channels: int, norm_op: type[nn.Module]) -> None:
        super().__init__(
            conv_op(in_channels, in_channels, 3, padding=1, groups=2),
            nn.GELU(),
            norm_op(in_channels),
            conv_op(in_channels, out_channels * 4, 1),
            nn.GELU(),
            norm_op(out_channels * 4),
            conv_op(out_channels * 4, out_channels, 1),
            nn.GELU(),
            norm_op(out_channels),
        )


class UpConv(nn.Module):
    """Interpolate to the skip connection's size, then Conv3x3 (bias) -> norm -> ReLU."""

    def __init__(self, conv_op: ConvOp, in_channels: int, out_channels: int, norm_op: type[nn.Module]) -> None:
        super().__init__()
        self.mode = interp_mode(conv_op)
        self.conv = ConvNormAct(conv_op, in_channels, out_channels, 3, norm_op=norm_op, bias=True)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode=self.mode, align_corners=False))


class LGMSNet(LiteNetwork):
    """LGMSNet (ECAI 2025), 2D or 3D depending on ``conv_op``.

    Args:
        input_channels: image channels.
        num_classes: output logits (one per nnU-Net segmentation head); no softmax/sigmoid is applied.
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; norms, pooling and interpolation follow from it.
        strides: the 4 max-pooling strides, each an int or one int per axis (default 2 everywhere, as in the paper).
        token_patches: GMS token-grouping patch per axis at resolution levels H/4, H/8 and H/16 (default 2).
        dims: channels per resolution level, shallow to deep.
        norm_op: norm of the plain convolutions; default as in the official code (BatchNorm in 2D, InstanceNorm in
            3D). LMS blocks always use GroupNorm(4) and the GMS convolution branch BatchNorm, as in the code. A
            dotted name (``"torch.nn.InstanceNorm2d"``, as nnU-Net's plans write ops) is resolved.
        lms_kernels: depthwise kernel sizes of the four channel groups of every LMS block (paper: 3, 5, 7, 9).
        gms_ratio: Transformer:convolution channel split of every GMS block (paper: 3:1); a 0 drops that branch.
        deep_supervision: must be False; LGMSNet has no auxiliary heads.

    Every spatial size must be divisible by the product of the strides times the token patch at each GMS level
    (32 for the defaults); :meth:`check_input_size` says what to change. :attr:`architecture_options` records the
    options that define the variant.
    """

    num_pools = NUM_POOLS

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        *,
        conv_op: ConvOp = nn.Conv2d,
        strides: Sequence[int | Sequence[int]] | None = None,
        token_patches: Sequence[int | Sequence[int]] | None = None,
        dims: Sequence[int] = (16, 32, 64, 128, 128),
        norm_op: type[nn.Module] | str | None = None,
        lms_kernels: Sequence[int] = (3, 5, 7, 9),
        gms_ratio: Sequence[int] = (3, 1),
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if deep_supervision:
            raise ValueError("LGMSNet has no deep supervision heads; train it with enable_deep_supervision=False")
        dim = convert_conv_op_to_dim(conv_op)
        self.strides = normalize_strides(strides if strides is not None else [2] * NUM_POOLS, dim)
        self.token_patches = normalize_strides(token_patches if token_patches is not None else [2] * 3, dim)
        if len(self.strides) != NUM_POOLS or len(self.token_patches) != len(GMS_LEVELS):
            raise ValueError(
                f"LGMSNet needs {NUM_POOLS} strides and {len(GMS_LEVELS)} token patches, got "
                f"{self.strides} and {self.token_patches}"
            )
        if isinstance(norm_op, str):
            name, norm_op = norm_op, pydoc.locate(norm_op)
            if not (isinstance(norm_op, type) and issubclass(norm_op, nn.Module)):
                raise ValueError(f"norm_op {name!r} is not an importable torch.nn.Module class")
        self.architecture_options = {
            "dims": list(dims),
            "norm_op": None if norm_op is None else f"{norm_op.__module__}.{norm_op.__qualname__}",
            "lms_kernels": [int(k) for k in lms_kernels],
            "gms_ratio": [int(r) for r in gms_ratio],
        }
        norm_op = norm_op or _norm_for(conv_op)
        pool_op = get_matching_pool_op(conv_op, pool_type="max")
        c = dims

        self.stem = ConvNormAct(conv_op, input_channels, c[0], 3, norm_op=norm_op, bias=True)
        self.encoder1 = nn.Sequential(
            LMS(conv_op, c[0], norm_op, lms_kernels),
            ConvNormAct(conv_op, c[0], c[0], 1, norm_op=norm_op, nonlin=nn.SiLU),
        )
        self.encoder2 = nn.Sequential(
            LMS(conv_op, c[0], norm_op, lms_kernels),
            ConvNormAct(conv_op, c[0], c[1], 1, norm_op=norm_op, nonlin=nn.SiLU),
        )
        self.encoder3 = nn.Sequential(
            LMS(conv_op, c[1], norm_op, lms_kernels),
            ConvNormAct(conv_op, c[1], c[2], 1, norm_op=norm_op, nonlin=nn.SiLU),
        )
        self.encoder4 = GMS(conv_op, c[2], c[3], norm_op, ratio=gms_ratio)
        self.encoder5 = GMS(conv_op, c[3], c[4], norm_op, ratio=gms_ratio)
        self.pools = nn.ModuleList(pool_op(kernel_size=s, stride=s) for s in self.strides)

        self.up5 = UpConv(conv_op, c[4], c[3], norm_op)
        self.decoder5 = GMS(conv_op, 2 * c[3], c[3], norm_op, ratio=gms_ratio)
        self.up4 = UpConv(conv_op, c[3], c[2], norm_op)
        self.decoder4 = nn.Sequential(
            FusionConv(conv_op, 2 * c[2], c[2], norm_op), GMS(conv_op, c[2], c[2], norm_op, ratio=gms_ratio)
        )
        self.up3 = UpConv(conv_op, c[2], c[1], norm_op)
        self.decoder3 = FusionConv(conv_op, 2 * c[1], c[1], norm_op)
        self.up2 = UpConv(conv_op, c[1], c[0], norm_op)
        self.decoder2 = FusionConv(conv_op, 2 * c[0], c[0], norm_op)
        self.seg_layers = conv_op(c[0], num_classes, 1)

        patch_at_level = dict(zip(GMS_LEVELS, self.token_patches, strict=True))
        self.encoder4.token_patch = self.decoder5.token_patch = patch_at_level[3]
        self.encoder5.token_patch = patch_at_level[4]
        self.decoder4[1].token_patch = patch_at_level[2]
        self.apply(init_weights)

    def required_divisor(self) -> tuple[int, ...]:
        """Per axis, the number every input size must be divisible by: the strides and the token patches."""
        out = []
        for ax in range(len(self.strides[0])):
            cumulative = [math.prod(s[ax] for s in self.strides[:level]) for level in range(NUM_POOLS + 1)]
            needs = [cumulative[-1]]
            needs += [cumulative[lvl] * p[ax] for lvl, p in zip(GMS_LEVELS, self.token_patches, strict=True)]
            out.append(math.lcm(*needs))
        return tuple(out)

    def size_constraints(self) -> str:
        return f"strides {self.strides}, token patches {self.token_patches}"

    @classmethod
    def kwargs_from_plans(cls, patch_size: Sequence[int], pool_op_kernel_sizes: Sequence[Sequence[int]]) -> dict:
        """The plan's first 4 pools, and a GMS token patch of 2 along every axis whose feature map is even at that
        level (1 otherwise, e.g. through-plane in anisotropic 3D)."""
        kwargs = super().kwargs_from_plans(patch_size, pool_op_kernel_sizes)
        token_patches = []
        for level in GMS_LEVELS:
            size = [p // math.prod(s[ax] for s in kwargs["strides"][:level]) for ax, p in enumerate(patch_size)]
            token_patches.append(tuple(2 if s % 2 == 0 else 1 for s in size))
        return {**kwargs, "token_patches": token_patches}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x.shape[2:])
        x1 = self.encoder1(self.stem(x))
        x2 = self.encoder2(self.pools[0](x1))
        x3 = self.encoder3(self.pools[1](x2))
        x4 = self.encoder4(self.pools[2](x3))
        x5 = self.encoder5(self.pools[3](x4))
        d5 = self.decoder5(torch.cat([x4, self.up5(x5, x4.shape[2:])], dim=1))
        d4 = self.decoder4(torch.cat([x3, self.up4(d5, x3.shape[2:])], dim=1))
        d3 = self.decoder3(torch.cat([x2, self.up3(d4, x2.shape[2:])], dim=1))
        d2 = self.decoder2(torch.cat([x1, self.up2(d3, x1.shape[2:])], dim=1))
        return self.seg_layers(d2)
