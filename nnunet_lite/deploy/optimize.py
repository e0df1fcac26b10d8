"""Inference-only rewrites that make the lite networks fast on a CPU without changing what they compute.

Each rewrite returns the same function up to float rounding (tests compare every one against the original):

- :func:`fuse_batchnorm`: eval-mode BatchNorm folded into the convolution before it (``Conv -> BN``), or into a
  following unpadded convolution (``BN -> Conv``, e.g. LGMSNet's fusion blocks ``conv -> GELU -> BN -> conv1x1``),
  plus blocks that keep a ``norm(conv(x))`` pair outside a ``Sequential`` and fold it themselves
  (``fold_batchnorm()``, MedLiteNet's boundary attention);
- :func:`reparameterize`: every block with a ``reparameterize()`` method is replaced by the inference form it returns
  (timm's pattern: the block that owns a fusion implements it). AULUNet's AKF becomes one per-sample depthwise 5x5
  convolution and its decoder projects before upsampling; LGMSNet's four multi-scale depthwise kernels become one;
- ``channels_last`` memory format for networks with depthwise convolutions: oneDNN's depthwise kernels are several
  times faster in NHWC.

:func:`optimize_for_cpu_inference` applies them to a copy of the model; this module only walks it.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "count_rewrites",
    "fuse_batchnorm",
    "has_depthwise_convolutions",
    "optimize_for_cpu_inference",
    "reparameterize",
    "to_channels_last",
]


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


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Folds eval-mode BatchNorm layers into neighbouring convolutions, in place; returns ``model``.

    Handles ``Conv -> BN`` pairs inside ``nn.Sequential`` containers (nnunet_lite's ``ConvNormAct``, MobileNetV2
    blocks, ...), ``BN -> Conv`` pairs where the convolution has no padding and ``groups == 1``, and blocks with a
    ``fold_batchnorm()`` method (MedLiteNet's boundary attention, ``norm(conv(x))``). A folded BatchNorm becomes
    ``nn.Identity``. The model must be in eval mode: training-mode BatchNorm normalises with batch statistics, which
    cannot be folded.
    """
    if model.training:
        raise ValueError("fuse_batchnorm needs a model in eval mode (call model.eval() first)")
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
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
        if hasattr(module, "fold_batchnorm"):
            module.fold_batchnorm()
    return model


def reparameterize(model: nn.Module, *, for_export: bool = False) -> nn.Module:
    """Replaces every block that has a ``reparameterize(for_export=...)`` method by what it returns; returns the model.

    ``for_export``: blocks keep a batch-size-independent graph (AULUNet's per-sample AKF kernel stays unfused).
    """
    if hasattr(model, "reparameterize"):
        return model.reparameterize(for_export=for_export)
    for name, child in list(model.named_children()):
        model._modules[name] = reparameterize(child, for_export=for_export)
    return model


def optimize_for_cpu_inference(
    model: nn.Module,
    *,
    fuse_bn: bool = True,
    fuse_blocks: bool = True,
    channels_last: bool | None = None,
    for_export: bool = False,
) -> nn.Module:
    """An inference-only copy of ``model`` with the CPU rewrites of this module applied; ``model`` is unchanged.

    Outputs equal the original's up to float rounding. Works on any network: rewrites apply where their pattern
    occurs (nnU-Net's own ``PlainConvUNet`` has InstanceNorm, so only ``channels_last`` applies to it).

    Args:
        model: the network (its mode does not matter; the copy is put in eval mode).
        fuse_bn: fold BatchNorm into convolutions (:func:`fuse_batchnorm`).
        fuse_blocks: replace blocks by their inference forms (:func:`reparameterize`).
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
    if fuse_blocks:
        optimized = reparameterize(optimized, for_export=for_export)
    if channels_last is None:
        channels_last = has_depthwise_convolutions(optimized)
    if channels_last and not for_export:
        optimized = optimized.to(memory_format=_channels_last_format(optimized))
    return optimized


def count_rewrites(original: nn.Module, optimized: nn.Module) -> dict[str, int]:
    """How many times each rewrite was applied in ``optimized`` (a result of :func:`optimize_for_cpu_inference`):
    folded BatchNorms, and each inference block class (``FusedAKF`` -> ``fused_akf``) absent from ``original``."""
    batchnorms = sum(isinstance(m, _BatchNorm) for m in original.modules())
    counts = {"fuse_batchnorm": batchnorms - sum(isinstance(m, _BatchNorm) for m in optimized.modules())}
    before = {type(m) for m in original.modules()} | {nn.Identity}
    for m in optimized.modules():
        if type(m) not in before:
            name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(m).__name__).lower()
            counts[name] = counts.get(name, 0) + 1
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
