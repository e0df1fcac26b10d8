"""MedLiteNet: MobileNetV2 encoder, Local-Global bottleneck and boundary-aware attention (arXiv 2509.03041).

No official code exists. The paper fixes the structure: a MobileNetV2 inverted-residual encoder with four stride-2
stages after the stem (~1.8 M parameters), a Local-Global block at the bottleneck (an MBConv branch and Transformer
tokens, fused by concatenation and a 1x1 convolution), Boundary-Aware Attention (BAA) from spatial gradients at the end
of the encoder and of the decoder, ASPP, SCSE in the decoder and U-Net skips. It gives no widths; they are this
project's own choice, calibrated to the paper's reported 3.2 M parameters: 3,214,335 in 2D with 3 inputs and 1 output,
of which the encoder (torchvision's ``mobilenet_v2().features[0:18]``, width 1.0) has 1,811,712.

Choices where the paper is silent are documented at each block. Beyond the paper, for nnU-Net:

- 3D from the same code (``conv_op=nn.Conv3d``): 3x3x3 kernels, a 4x4x4 reference grid for the position embedding and
  3D Sobel kernels. This is an extension; the paper is 2D only;
- the five downsampling strides (stem + four stages) come from the nnU-Net plans, so anisotropic ``(1, 2, 2)`` works;
- decoder upsampling interpolates to the skip connection's size, and the head to the input size;
- the network returns logits and has no deep supervision, as in the paper.

The constructor options ``use_boundary_attention``, ``use_transformer`` and ``backbone`` build the ablations the paper's
reviewers ask for (no BAA, local branch only, a ResNet-18 encoder) from this same code; their defaults are the network
above (same parameters and state_dict keys).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from dynamic_network_architectures.building_blocks.helper import (
    convert_conv_op_to_dim,
    get_matching_batchnorm,
    get_matching_pool_op,
)
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import CONV_FN, ConvNormAct, ConvOp, TransformerLayer, init_weights, interp_mode, normalize_strides
from .contract import LiteNetwork

__all__ = ["MedLiteNet"]

NUM_STRIDES = 5
STEM_CHANNELS = 32
# MobileNetV2's inverted-residual settings (expansion t, channels c, repeats n) of features[1:18], grouped by the
# resolution they run at. The first block of stages 1-4 downsamples; stage 0 runs after the (strided) stem.
ENCODER_STAGES = (
    ((1, 16, 1),),  # S0 = features[0:2], H/2
    ((6, 24, 2),),  # S1 = features[2:4], H/4
    ((6, 32, 3),),  # S2 = features[4:7], H/8
    ((6, 64, 4), (6, 96, 3)),  # S3 = features[7:14], H/16
    ((6, 160, 3), (6, 320, 1)),  # S4 = features[14:18], H/32 (torchvision's final 320->1280 conv is dropped)
)
# Atrous rates of the ASPP. DeepLab's 6/12/18 exceed the 8x8 bottleneck of a 256x256 input; 2/4/6 stay inside it.
ASPP_RATES = (2, 4, 6)
# Tokens of the learned position embedding's reference grid: 8x8 in 2D (the 256x256 input of the paper), 4x4x4 in 3D
# (a typical 128^3 nnU-Net patch). It is interpolated to the actual bottleneck grid.
REFERENCE_TOKENS = 64


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual (MBConv without squeeze-excitation), as in torchvision.

    ``[Conv1x1 expand -> BN -> ReLU6] -> DW3x3 (stride) -> BN -> ReLU6 -> Conv1x1 project -> BN``, the expansion
    omitted for ``expand_ratio == 1``; identity residual when the stride is 1 and the widths match.
    """

    def __init__(
        self,
        conv_op: ConvOp,
        in_channels: int,
        out_channels: int,
        stride: Sequence[int],
        expand_ratio: int,
        norm_op: type[nn.Module],
    ) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        layers = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(conv_op, in_channels, hidden, 1, norm_op=norm_op, nonlin=nn.ReLU6))
        layers += [
            ConvNormAct(conv_op, hidden, hidden, 3, norm_op=norm_op, nonlin=nn.ReLU6, groups=hidden, stride=stride),
            ConvNormAct(conv_op, hidden, out_channels, 1, norm_op=norm_op, nonlin=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = in_channels == out_channels and all(s == 1 for s in stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 ``features[0:18]`` (width 1.0) split into the five resolution stages S0-S4.

    Parameters are created in torchvision's order with the same shapes (in 2D), so ImageNet weights could be copied
    by position. ``strides[0]`` is the stem's stride, ``strides[i]`` that of stage i's first block.
    """

    def __init__(
        self, conv_op: ConvOp, input_channels: int, strides: Sequence[Sequence[int]], norm_op: type[nn.Module]
    ) -> None:
        super().__init__()
        one = (1,) * len(strides[0])
        stem = ConvNormAct(
            conv_op, input_channels, STEM_CHANNELS, 3, norm_op=norm_op, nonlin=nn.ReLU6, stride=strides[0]
        )
        stages, in_channels = [], STEM_CHANNELS
        for level, settings in enumerate(ENCODER_STAGES):
            blocks: list[nn.Module] = [stem] if level == 0 else []
            for t, c, n in settings:
                for _ in range(n):
                    stride = strides[level] if level > 0 and not blocks else one
                    blocks.append(InvertedResidual(conv_op, in_channels, c, stride, t, norm_op))
                    in_channels = c
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(settings[-1][1] for settings in ENCODER_STAGES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class BasicBlock(nn.Module):
    """ResNet basic block: ``ReLU(BN(Conv3x3(ReLU(BN(Conv3x3_stride(x))))) + shortcut(x))``, the shortcut a strided
    ``Conv1x1 -> BN`` when the stride or width changes, as in torchvision."""

    def __init__(
        self, conv_op: ConvOp, in_channels: int, out_channels: int, stride: Sequence[int], norm_op: type[nn.Module]
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(conv_op, in_channels, out_channels, 3, norm_op=norm_op, stride=stride)
        self.conv2 = ConvNormAct(conv_op, out_channels, out_channels, 3, norm_op=norm_op, nonlin=None)
        needs_projection = in_channels != out_channels or any(s != 1 for s in stride)
        self.downsample = (
            ConvNormAct(conv_op, in_channels, out_channels, 1, norm_op=norm_op, nonlin=None, stride=stride)
            if needs_projection
            else None
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)


class ResNet18Encoder(nn.Module):
    """ResNet-18 (torchvision's ``resnet18`` without pooling head and classifier: 11,176,512 parameters in 2D with 3
    inputs) split into the same five resolution stages as :class:`MobileNetV2Encoder`, for the paper's backbone
    comparison (the ``_ResNet18`` ablation).

    S0 = ``Conv7x7 (stride) -> BN -> ReLU`` (64 ch, H/2), S1 = ``MaxPool3x3 (stride)`` + layer1 (64, H/4),
    S2-S4 = layer2-4 (128, 256, 512 at H/8, H/16, H/32). The rest of MedLiteNet follows these widths.
    """

    widths = (64, 64, 128, 256, 512)

    def __init__(
        self, conv_op: ConvOp, input_channels: int, strides: Sequence[Sequence[int]], norm_op: type[nn.Module]
    ) -> None:
        super().__init__()
        one = (1,) * len(strides[0])
        stages: list[nn.Module] = [
            ConvNormAct(conv_op, input_channels, self.widths[0], 7, norm_op=norm_op, stride=strides[0])
        ]
        in_channels = self.widths[0]
        for level in range(1, len(self.widths)):
            width = self.widths[level]
            if level == 1:
                pool = get_matching_pool_op(conv_op, pool_type="max")(kernel_size=3, stride=strides[1], padding=1)
                blocks = [pool, BasicBlock(conv_op, in_channels, width, one, norm_op)]
            else:
                blocks = [BasicBlock(conv_op, in_channels, width, strides[level], norm_op)]
            blocks.append(BasicBlock(conv_op, width, width, one, norm_op))
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = self.widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


BACKBONES = {"mobilenet_v2": MobileNetV2Encoder, "resnet18": ResNet18Encoder}


class LocalGlobalBlock(nn.Module):
    """Local-Global block at the bottleneck: ``fuse(concat[MBConv(x), Transformer(tokens(x))])``.

    Local branch: an inverted residual with expansion 2. Global branch: ``Conv1x1_{C->d}`` (with bias, a ViT-style
    token embedding), plus a learned position embedding, one token per bottleneck voxel, then ``depth`` pre-norm
    Transformer layers (``heads`` heads, MLP ``2 * d``, GELU, qkv bias as in ViT), then back to a map and
    ``Conv1x1_{d->C}`` (with bias). Fusion: ``Conv1x1_{2C->C} -> BN -> ReLU``.

    The position embedding is learned on a reference grid of :data:`REFERENCE_TOKENS` tokens (8x8, 4x4x4) and
    interpolated (bilinear/trilinear) to whatever grid nnU-Net's patch gives (2x8, 1x3x5, ...), so any size works.

    ``use_transformer=False`` keeps only the local branch: the block is then ``MBConv(x)``, without the token path and
    the fusion convolution (the ``_noTransformer`` ablation).
    """

    def __init__(
        self,
        conv_op: ConvOp,
        channels: int,
        token_dim: int,
        depth: int,
        heads: int,
        norm_op: type[nn.Module],
        use_transformer: bool = True,
    ) -> None:
        super().__init__()
        if token_dim % heads:
            raise ValueError(f"token_dim {token_dim} must be divisible by heads {heads}")
        dim = convert_conv_op_to_dim(conv_op)
        self.mode = interp_mode(conv_op)
        self.local = InvertedResidual(conv_op, channels, channels, (1,) * dim, 2, norm_op)
        self.use_transformer = use_transformer
        if not use_transformer:
            return
        self.token_in = conv_op(channels, token_dim, 1)
        side = round(REFERENCE_TOKENS ** (1 / dim))
        self.pos_embed = nn.Parameter(torch.empty(1, token_dim, *(side,) * dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.transformer = nn.Sequential(
            *(
                TransformerLayer(token_dim, heads, token_dim // heads, 2 * token_dim, qkv_bias=True)
                for _ in range(depth)
            )
        )
        self.token_out = conv_op(token_dim, channels, 1)
        self.fuse = ConvNormAct(conv_op, 2 * channels, channels, 1, norm_op=norm_op, nonlin=nn.ReLU)

    def position_embedding(self, spatial: Sequence[int]) -> torch.Tensor:
        """The position embedding ``(1, d, *spatial)``, interpolated from the reference grid if the sizes differ."""
        if tuple(spatial) == tuple(self.pos_embed.shape[2:]):
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=tuple(spatial), mode=self.mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local(x)
        if not self.use_transformer:
            return local
        tokens = self.token_in(x)
        b, d, *spatial = tokens.shape
        tokens = self.transformer((tokens + self.position_embedding(spatial)).flatten(2).transpose(1, 2))
        global_ = self.token_out(tokens.transpose(1, 2).reshape(b, d, *spatial))
        return self.fuse(torch.cat([local, global_], dim=1))


def sobel_kernels(dim: int) -> torch.Tensor:
    """Sobel kernels ``(dim, 1, 3, ..., 3)``, one per axis: the outer product of the derivative ``[-1, 0, 1] / 2``
    along that axis and the smoothing ``[1, 2, 1] / 4`` along the others (the classic 2D Sobel divided by 8)."""
    derivative, smoothing = torch.tensor([-1.0, 0.0, 1.0]) / 2, torch.tensor([1.0, 2.0, 1.0]) / 4
    kernels = []
    for axis in range(dim):
        kernel = torch.ones(())
        for other in range(dim):
            kernel = torch.tensordot(kernel, derivative if other == axis else smoothing, dims=0)
        kernels.append(kernel)
    return torch.stack(kernels).unsqueeze(1)


class BoundaryAwareAttention(nn.Module):
    """Boundary-Aware Attention: a spatial attention map ``M`` driven by the feature map's gradient magnitude.

    ``G = sqrt(sum_axis Sobel_axis(mean_c F)^2 + eps)`` with fixed Sobel kernels (a non-persistent buffer, so not in
    checkpoints) on the replicate-padded channel mean (no spurious edges at the border);
    ``M = sigmoid(BN(Conv7x7_{3->1}([G, mean_c F, max_c F])))`` (CBAM-style descriptors plus the gradient);
    ``F' = F * (1 + M)``, which keeps the features and amplifies boundaries.

    The 7x7 convolution starts as a pass-through of ``G`` (centre tap 1, all other weights 0), so that ``M`` is highest
    on edges from the first iteration; training refines it. The paper describes neither the internals nor the init.
    """

    def __init__(self, conv_op: ConvOp, kernel_size: int = 7, eps: float = 1e-6) -> None:
        super().__init__()
        self.register_buffer("sobel", sobel_kernels(convert_conv_op_to_dim(conv_op)), persistent=False)
        self.conv = conv_op(3, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = get_matching_batchnorm(conv_op)(1)
        self.eps = eps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.conv.weight)
        centre = self.conv.kernel_size[0] // 2
        with torch.no_grad():
            self.conv.weight[(0, 0, *(centre,) * (self.conv.weight.ndim - 2))] = 1.0

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """``M`` in ``(B, 1, *spatial)``, values in (0, 1)."""
        mean = x.mean(1, keepdim=True)
        spatial_dims = self.sobel.ndim - 2
        padded = F.pad(mean, (1,) * (2 * spatial_dims), mode="replicate")
        gradients = CONV_FN[spatial_dims](padded, self.sobel.to(mean.dtype))
        # float32: squared gradients of large activations overflow float16 under AMP
        magnitude = torch.sqrt(gradients.float().square().sum(1, keepdim=True) + self.eps).to(mean.dtype)
        descriptors = torch.cat([magnitude, mean, x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.norm(self.conv(descriptors)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.attention_map(x))

    def fold_batchnorm(self) -> None:
        """Folds the eval-mode BatchNorm into the 7x7 convolution, in place (``norm(conv(x))`` is one conv)."""
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm) and self.norm.running_var is not None:
            self.conv = fuse_conv_bn_eval(self.conv, self.norm)
            self.norm = nn.Identity()


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with depthwise-separable atrous branches (DeepLabV3+ style).

    Branches: ``Conv1x1``; per rate ``DW3x3(dilation) -> BN -> ReLU -> Conv1x1 -> BN -> ReLU``; image pooling
    ``GAP -> Conv1x1 (no bias) -> ReLU`` broadcast back (no BN: one value per channel and sample is too few for
    batch statistics with nnU-Net's small batches). ``concat -> Conv1x1 -> BN -> ReLU``.
    """

    def __init__(
        self, conv_op: ConvOp, in_channels: int, out_channels: int, rates: Sequence[int], norm_op: type[nn.Module]
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvNormAct(conv_op, in_channels, out_channels, 1, norm_op=norm_op)]
        for rate in rates:
            branches.append(
                nn.Sequential(
                    ConvNormAct(
                        conv_op, in_channels, in_channels, 3, norm_op=norm_op, groups=in_channels, dilation=rate
                    ),
                    ConvNormAct(conv_op, in_channels, out_channels, 1, norm_op=norm_op),
                )
            )
        self.branches = nn.ModuleList(branches)
        self.image_pool = nn.Sequential(conv_op(in_channels, out_channels, 1, bias=False), nn.ReLU())
        self.project = ConvNormAct(conv_op, out_channels * (len(rates) + 2), out_channels, 1, norm_op=norm_op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-excitation (Roy et al., 2018; as in segmentation_models_pytorch).

    ``x * cSE(x) + x * sSE(x)`` with ``cSE = sigmoid(Conv1x1(ReLU(Conv1x1(GAP(x)))))`` (reduction 16, at least 4
    hidden channels) and ``sSE = sigmoid(Conv1x1_{C->1}(x))``.
    """

    def __init__(self, conv_op: ConvOp, channels: int, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.cse = nn.Sequential(conv_op(channels, hidden, 1), nn.ReLU(), conv_op(hidden, channels, 1), nn.Sigmoid())
        self.sse = nn.Sequential(conv_op(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cse(x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)) + x * self.sse(x)


class DecoderBlock(nn.Module):
    """U-Net decoder block: interpolate to the skip's size, concat, ``[Conv3x3 -> BN -> ReLU] x 2``, SCSE."""

    def __init__(
        self, conv_op: ConvOp, in_channels: int, skip_channels: int, out_channels: int, norm_op: type[nn.Module]
    ) -> None:
        super().__init__()
        self.mode = interp_mode(conv_op)
        self.conv = nn.Sequential(
            ConvNormAct(conv_op, in_channels + skip_channels, out_channels, 3, norm_op=norm_op),
            ConvNormAct(conv_op, out_channels, out_channels, 3, norm_op=norm_op),
            SCSE(conv_op, out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class MedLiteNet(LiteNetwork):
    """MedLiteNet (arXiv 2509.03041), 2D or 3D depending on ``conv_op`` (3D is an extension beyond the paper).

    Encoder S0-S4 -> Local-Global block -> BAA -> ASPP -> four decoder blocks with the skips S3..S0 -> BAA ->
    ``Conv1x1`` -> interpolation to the input size.

    Args:
        input_channels: image channels (the stem convolution follows them).
        num_classes: output logits (one per nnU-Net segmentation head); no softmax/sigmoid is applied.
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; BatchNorm and interpolation follow from it.
        strides: the 5 downsampling strides (stem, then the first block of stages 1-4), each an int or one int per
            axis; default 2 everywhere as in MobileNetV2. :meth:`kwargs_from_plans` takes them from nnU-Net plans.
        aspp_channels: ASPP output width (the width entering the decoder).
        decoder_channels: widths of the four decoder blocks, low to high resolution.
        token_dim: Transformer width of the Local-Global block.
        transformer_depth: Transformer layers in the Local-Global block.
        heads: attention heads (``token_dim`` must be divisible by it).
        use_boundary_attention: both BAA modules; False replaces them by the identity (ablation).
        use_transformer: the Local-Global block's Transformer branch; False keeps only its MBConv branch (ablation).
        backbone: ``"mobilenet_v2"`` (the paper's encoder) or ``"resnet18"`` (the paper's backbone comparison, see
            :class:`ResNet18Encoder`).
        deep_supervision: must be False; MedLiteNet has no auxiliary heads.

    Every spatial size must be divisible by the product of the strides (32 for the defaults).
    :attr:`architecture_options` records the options that define the variant.
    """

    num_pools = NUM_STRIDES

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        *,
        conv_op: ConvOp = nn.Conv2d,
        strides: Sequence[int | Sequence[int]] | None = None,
        aspp_channels: int = 96,
        decoder_channels: Sequence[int] = (64, 32, 24, 16),
        token_dim: int = 128,
        transformer_depth: int = 2,
        heads: int = 4,
        use_boundary_attention: bool = True,
        use_transformer: bool = True,
        backbone: str = "mobilenet_v2",
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if deep_supervision:
            raise ValueError("MedLiteNet has no deep supervision heads; train it with enable_deep_supervision=False")
        dim = convert_conv_op_to_dim(conv_op)
        self.strides = normalize_strides(strides if strides is not None else [2] * NUM_STRIDES, dim)
        if len(self.strides) != NUM_STRIDES or len(decoder_channels) != len(ENCODER_STAGES) - 1:
            raise ValueError(
                f"MedLiteNet needs {NUM_STRIDES} strides and {len(ENCODER_STAGES) - 1} decoder widths, "
                f"got {self.strides} and {tuple(decoder_channels)}"
            )
        if backbone not in BACKBONES:
            raise ValueError(f"MedLiteNet backbone {backbone!r} is not one of {sorted(BACKBONES)}")
        self.architecture_options = {
            "aspp_channels": int(aspp_channels),
            "decoder_channels": [int(c) for c in decoder_channels],
            "token_dim": int(token_dim),
            "transformer_depth": int(transformer_depth),
            "heads": int(heads),
            "use_boundary_attention": bool(use_boundary_attention),
            "use_transformer": bool(use_transformer),
            "backbone": backbone,
        }
        norm_op = get_matching_batchnorm(conv_op)
        self.mode = interp_mode(conv_op)

        self.encoder = BACKBONES[backbone](conv_op, input_channels, self.strides, norm_op)
        skips = self.encoder.out_channels
        self.local_global = LocalGlobalBlock(
            conv_op, skips[-1], token_dim, transformer_depth, heads, norm_op, use_transformer=use_transformer
        )
        self.encoder_boundary = BoundaryAwareAttention(conv_op) if use_boundary_attention else nn.Identity()
        self.aspp = ASPP(conv_op, skips[-1], aspp_channels, ASPP_RATES, norm_op)
        widths = (aspp_channels, *decoder_channels)
        self.decoder = nn.ModuleList(
            DecoderBlock(conv_op, widths[i], skip, widths[i + 1], norm_op)
            for i, skip in enumerate(reversed(skips[:-1]))
        )
        self.decoder_boundary = BoundaryAwareAttention(conv_op) if use_boundary_attention else nn.Identity()
        self.head = conv_op(decoder_channels[-1], num_classes, 1)

        self.apply(init_weights)
        for module in self.modules():
            if isinstance(module, BoundaryAwareAttention):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x.shape[2:])
        *skips, bottleneck = self.encoder(x)
        y = self.aspp(self.encoder_boundary(self.local_global(bottleneck)))
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            y = block(y, skip)
        logits = self.head(self.decoder_boundary(y))
        return F.interpolate(logits, size=x.shape[2:], mode=self.mode, align_corners=False)
