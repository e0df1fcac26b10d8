"""AULUNet: an adaptive ultra-lightweight U-Net for skin lesion segmentation (BMVC 2025, oral).

Paper: https://bmvc2025.bmva.org/proceedings/1199/; official code: https://github.com/maklachur/AULUNet.

Reproduces the official code (``c_list = [5, 10, 15, 25, 35, 60]``): 28,636 parameters with 3 inputs and 1 output,
built from Adaptive Kernel Fusion (:class:`AKF`), Residual Global Fusion (:class:`RGF`) and Lightweight Skip Gate
(:class:`LSG`) blocks joined by :class:`PointConv` projections. As in the code (not the paper text, which describes
ECA-style Conv1d gates), the AKF and RGF gates are full ``C -> C`` 1x1 convolutions; only this reproduces the published
0.029 M parameters. Differences from the official code:

- the network returns logits (the official head ends with a sigmoid);
- the 5 downsampling strides come from the nnU-Net plans (anisotropic ``[1, 2, 2]`` pools are allowed) instead of a
  fixed 2, and decoder upsampling interpolates to the skip connection's size, so any stride layout lines up;
- 3D is an extension not in the paper: Conv3d, BatchNorm3d, AvgPool3d and trilinear upsampling (35,296 parameters
  with 1 input and 1 output).

The constructor options ``akf_dilations``, ``use_rgf`` and ``use_lsg`` build the paper's ablations (its Tables 2 and 3)
from this same code; their defaults are the published network (same parameters and state_dict keys).
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

from .blocks import (
    CONV_FN,
    ConvNormAct,
    ConvOp,
    embed_kernel,
    init_weights,
    interp_mode,
    normalize_strides,
    training_forms_enabled,
)
from .contract import LiteNetwork

__all__ = ["AULUNet"]

NUM_POOLS = 5


def _global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # a tensor op, not an AdaptiveAvgPool module: thop then counts 0.069 G MACs at 256x256, as published
    return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)


class PointConv(ConvNormAct):
    """Pointwise projection ``PointConv(x) = ReLU(BN(Conv1x1(x)))`` (no bias)."""

    def __init__(self, conv_op: ConvOp, in_channels: int, out_channels: int) -> None:
        super().__init__(conv_op, in_channels, out_channels, 1, norm_op=get_matching_batchnorm(conv_op))


class AKF(nn.Module):
    """Adaptive Kernel Fusion: a per-channel gate blends a dense and a dilated depthwise 3x3 convolution.

    ``F1 = DWConv3x3(x)``, ``F2 = DWConv3x3_dilation2(x)`` (no bias, norm or activation),
    ``alpha = sigmoid(Conv1x1(GAP(x)))`` (a ``C -> C`` convolution with bias, one gate value per channel) and
    ``AKF(x) = PointConv(alpha * F1 + (1 - alpha) * F2)``. There is no residual connection.

    ``dilations`` selects the paper's ablations (Table 3): two values replace (1, 2) in the same sigmoid blend; three
    or more use softmax gating over the branches, ``Conv1x1_{C->kC}(GAP(x))`` with bias, softmax across the k branches
    per channel (the paper's "softmax-based adaptive gating"; its exact form is not published, this is the direct
    generalisation of the two-branch gate); a single value keeps one depthwise 3x3 with that dilation and no gate (the
    ``_noAKF`` ablation with ``(1,)``). The branch modules keep their names (``dw_local`` is the first branch,
    ``dw_dilated`` the second, ``dw_dilated_2`` the third, ...) so that checkpoints of the published block still load.

    Training form (default for the two-branch block on feature maps of at most :attr:`fused_max_voxels` voxels, see
    :func:`~nnunet_lite.architectures.blocks.reference_forms`): the blend of the two depthwise branches is one
    depthwise convolution per sample and channel, ``DW(x; W_2 + alpha * (W_1 - W_2))`` with both kernels embedded in
    one undilated kernel (5x5 for dilations 1 and 2) built on each call from the parameters, so the state_dict is
    unchanged and the gradient reaches both kernels and the gate. It saves the second convolution and the blend's
    element-wise passes; measured faster on small maps only (on 128x128 maps the batch-as-groups convolution was
    slower), hence the size limit. Blends whose embedded kernel exceeds 5 taps per axis keep the reference form.
    """

    fused_max_voxels: int = 64 * 64
    fused_max_kernel: int = 5

    def __init__(self, conv_op: ConvOp, channels: int, dilations: Sequence[int] = (1, 2)) -> None:
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"AKF dilations must be one or more positive integers, got {tuple(dilations)}")
        self.branch_names = tuple(_branch_name(i) for i in range(len(self.dilations)))
        for name, d in zip(self.branch_names, self.dilations, strict=True):
            setattr(self, name, conv_op(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False))
        if len(self.dilations) > 1:
            gates = 1 if len(self.dilations) == 2 else len(self.dilations)
            self.gate_conv = conv_op(channels, gates * channels, 1)
        self.project = PointConv(conv_op, channels, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """``alpha`` of the two-branch blend, shape ``(B, C, 1, 1[, 1])``."""
        return torch.sigmoid(self.gate_conv(_global_avg_pool(x)))

    def branch_weights(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One per-sample, per-channel weight ``(B, C, 1, ...)`` per branch; they sum to 1."""
        if len(self.dilations) == 2:
            alpha = self.gate(x)
            return [alpha, 1 - alpha]
        logits = self.gate_conv(_global_avg_pool(x))
        return list(torch.softmax(logits.unflatten(1, (len(self.dilations), -1)), dim=1).unbind(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = 2 * max(self.dilations) + 1
        if (
            len(self.dilations) == 2
            and size <= self.fused_max_kernel
            and x[0, 0].numel() <= self.fused_max_voxels
            and training_forms_enabled()
        ):
            return self.project(self._blend_as_one_convolution(x, size))
        features = [getattr(self, name)(x) for name in self.branch_names]
        if len(features) == 1:
            return self.project(features[0])
        return self.project(sum(w * f for w, f in zip(self.branch_weights(x), features, strict=True)))

    def _blend_as_one_convolution(self, x: torch.Tensor, size: int) -> torch.Tensor:
        b, c, *spatial = x.shape
        names = zip(self.branch_names, self.dilations, strict=True)
        first, second = (embed_kernel(getattr(self, name).weight, size, d) for name, d in names)
        # the gate may come out of autocast in bf16; lerp would then hand the convolution a bf16 weight for a float x
        alpha = self.gate(x).reshape(b, c, 1, *(1,) * len(spatial)).to(first.dtype)
        weight = torch.lerp(second, first, alpha)  # (B, C, 1, k, ...): alpha * W_1 + (1 - alpha) * W_2
        y = CONV_FN[len(spatial)](
            x.reshape(1, b * c, *spatial), weight.reshape(b * c, 1, *weight.shape[3:]), padding=size // 2, groups=b * c
        )
        return y.reshape(b, c, *spatial)

    def reparameterize(self, *, for_export: bool = False) -> nn.Module:
        """:class:`FusedAKF` for inference; unchanged ``for_export`` (its per-sample kernels depend on the batch) and
        for the ablations' dilations (their fused kernels would be larger than the branches together)."""
        return FusedAKF(self) if not for_export and self.dilations == (1, 2) else self


def _branch_name(index: int) -> str:
    return ("dw_local", "dw_dilated")[index] if index < 2 else f"dw_dilated_{index}"


class AddSkip(nn.Module):
    """``S = D + E``: the skip connection without the :class:`LSG` gate (the ``_noLSG`` ablation)."""

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return decoder + skip


class FusedAKF(nn.Module):
    """:class:`AKF` for inference, as one depthwise 5x5 convolution per sample.

    ``alpha * DW3x3(x) + (1 - alpha) * DW3x3_dil2(x) = DW5x5(x; W_dil + alpha * (W - W_dil))`` with both kernels
    embedded in 5x5 (the dense one in the centre, the dilated one on the even taps). ``alpha`` is per sample and
    channel, so a batch is convolved as one ``(1, B * C, ...)`` grouped convolution.
    """

    def __init__(self, akf: AKF) -> None:
        super().__init__()
        local, dilated = akf.dw_local.weight.detach(), akf.dw_dilated.weight.detach()
        dim = local.ndim - 2
        w_local = local.new_zeros(local.shape[0], 1, *(5,) * dim)
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
        alpha = torch.sigmoid(self.gate_conv(_global_avg_pool(x)))
        weight = self.w_dilated + alpha.reshape(b, c, 1, *(1,) * self.dim) * self.w_delta  # (B, C, 1, 5, ...)
        conv = CONV_FN[self.dim]
        if b == 1:
            y = conv(x, weight[0], padding=2, groups=c)
        else:
            y = conv(
                x.reshape(1, b * c, *spatial), weight.reshape(b * c, 1, *weight.shape[3:]), padding=2, groups=b * c
            )
            y = y.reshape(b, c, *spatial)
        return self.project(y)


class RGF(nn.Module):
    """Residual Global Fusion (bottleneck): ``G = tanh(Conv1x1(GAP(x)))`` (``C -> C``, no bias), ``RGF(x) = x + x * G``.

    A per-channel global gate in (-1, 1) rescales the features by ``1 + G``.
    """

    def __init__(self, conv_op: ConvOp, channels: int) -> None:
        super().__init__()
        self.gate_conv = conv_op(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * torch.tanh(self.gate_conv(_global_avg_pool(x)))


class LSG(nn.Module):
    """Lightweight Skip Gate: the decoder feature D admits the encoder skip E through a per-voxel, per-channel gate.

    ``beta = sigmoid(BN(Conv1x1_{2C->C}([D, E])))`` (no bias) and ``LSG(D, E) = D + beta * E``.
    """

    def __init__(self, conv_op: ConvOp, channels: int) -> None:
        super().__init__()
        self.gate = ConvNormAct(
            conv_op, 2 * channels, channels, 1, norm_op=get_matching_batchnorm(conv_op), nonlin=nn.Sigmoid
        )

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return decoder + self.gate(torch.cat([decoder, skip], dim=1)) * skip


class UpProj(nn.Module):
    """Interpolate to the skip connection's size (linear, ``align_corners=True`` as in the code), then PointConv."""

    def __init__(self, conv_op: ConvOp, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mode = interp_mode(conv_op)
        self.project = PointConv(conv_op, in_channels, out_channels)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.project(nn.functional.interpolate(x, size=tuple(size), mode=self.mode, align_corners=True))

    def reparameterize(self, *, for_export: bool = False) -> nn.Module:
        """:class:`ProjectThenUpsample` for inference (exportable)."""
        return ProjectThenUpsample(self)


class ProjectThenUpsample(nn.Module):
    """:class:`UpProj` for inference: the pointwise convolution and its (eval-mode) BatchNorm before the
    interpolation, the activation after it. Exact because an affine per-voxel map commutes with linear interpolation,
    whose weights sum to 1; it saves 3/4 of the projection's work (in 2D) and half of the upsampled channels."""

    def __init__(self, up: UpProj) -> None:
        super().__init__()
        conv, norm, act = up.project
        self.affine = nn.Sequential(conv, norm)
        self.act = act
        self.mode = up.mode

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        y = nn.functional.interpolate(self.affine(x), size=tuple(size), mode=self.mode, align_corners=True)
        return self.act(y)


class AULUNet(LiteNetwork):
    """AULUNet (BMVC 2025), 2D or 3D depending on ``conv_op``.

    Encoder: ``e0 = AKF(stem(x))``, then ``e_i = PointConv_{c[i-1]->c[i]}(AKF(AvgPool(e_{i-1})))`` for 5 levels;
    bottleneck ``RGF(e5)``; decoder ``d_i = AKF(LSG(UpProj_{c[i+1]->c[i]}(d_{i+1}), e_i))``; head Conv1x1.

    Args:
        input_channels: image channels.
        num_classes: output logits (one per nnU-Net segmentation head); no softmax/sigmoid is applied.
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; BatchNorm, average pooling and interpolation follow from it.
        channels: channels per resolution level, shallow to deep (6 entries; the official ``c_list``).
        strides: the 5 average-pooling strides (pooling kernel = stride), each an int or one int per axis (default 2
            everywhere, as in the paper).
        akf_dilations: dilations of every AKF's depthwise branches (paper: 1, 2); see :class:`AKF` for one or three
            branches (ablations of the paper's Tables 2 and 3).
        use_rgf: the bottleneck's :class:`RGF`; False replaces it by the identity (ablation).
        use_lsg: the :class:`LSG` skip gates; False makes every skip a plain sum ``D + E`` (ablation).
        deep_supervision: must be False; AULUNet has no auxiliary heads.

    Every spatial size must be divisible by the product of the strides (32 for the defaults); :meth:`check_input_size`
    says what to change. :attr:`architecture_options` records the options that define the variant.
    """

    num_pools = NUM_POOLS

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        *,
        conv_op: ConvOp = nn.Conv2d,
        channels: Sequence[int] = (5, 10, 15, 25, 35, 60),
        strides: Sequence[int | Sequence[int]] | None = None,
        akf_dilations: Sequence[int] = (1, 2),
        use_rgf: bool = True,
        use_lsg: bool = True,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if deep_supervision:
            raise ValueError("AULUNet has no deep supervision heads; train it with enable_deep_supervision=False")
        dim = convert_conv_op_to_dim(conv_op)
        self.strides = normalize_strides(strides if strides is not None else [2] * NUM_POOLS, dim)
        c = tuple(channels)
        if len(self.strides) != NUM_POOLS or len(c) != NUM_POOLS + 1:
            raise ValueError(
                f"AULUNet needs {NUM_POOLS} strides and {NUM_POOLS + 1} channel counts, got {self.strides} and {c}"
            )
        pool_op = get_matching_pool_op(conv_op, pool_type="avg")
        d = tuple(int(i) for i in akf_dilations)
        self.architecture_options = {
            "channels": list(c),
            "akf_dilations": list(d),
            "use_rgf": bool(use_rgf),
            "use_lsg": bool(use_lsg),
        }

        self.stem = nn.Sequential(
            ConvNormAct(conv_op, input_channels, c[0], 3, norm_op=get_matching_batchnorm(conv_op)),
            AKF(conv_op, c[0], d),
        )
        self.pools = nn.ModuleList(pool_op(kernel_size=s, stride=s) for s in self.strides)
        self.encoders = nn.ModuleList(
            nn.Sequential(AKF(conv_op, c[i - 1], d), PointConv(conv_op, c[i - 1], c[i]))
            for i in range(1, NUM_POOLS + 1)
        )
        self.bottleneck = RGF(conv_op, c[-1]) if use_rgf else nn.Identity()
        # decoder modules are indexed by the level they produce, 0 (full resolution) to 4
        self.ups = nn.ModuleList(UpProj(conv_op, c[i + 1], c[i]) for i in range(NUM_POOLS))
        self.skip_gates = nn.ModuleList(LSG(conv_op, c[i]) if use_lsg else AddSkip() for i in range(NUM_POOLS))
        self.decoders = nn.ModuleList(AKF(conv_op, c[i], d) for i in range(NUM_POOLS))
        self.head = conv_op(c[0], num_classes, 1)
        # nnU-Net's He init, as in its own networks and the other nnunet_lite nets, so that a comparison differs in
        # the architecture only (the notes on the official code record no custom init to reproduce instead).
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x.shape[2:])
        skips = [self.stem(x)]
        for pool, encoder in zip(self.pools, self.encoders, strict=True):
            skips.append(encoder(pool(skips[-1])))
        d = self.bottleneck(skips.pop())
        for level in reversed(range(NUM_POOLS)):
            skip = skips[level]
            d = self.decoders[level](self.skip_gates[level](self.ups[level](d, skip.shape[2:]), skip))
        return self.head(d)
