"""Dimension-agnostic building blocks shared by more than one architecture.

Every block takes ``conv_op`` (``nn.Conv2d`` or ``nn.Conv3d``) and derives norms, pooling and interpolation from it,
so one implementation serves 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from torch import nn
from torch.nn.modules.conv import _ConvNd

ConvOp = type[_ConvNd]
CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


_reference_forms = False


@contextmanager
def reference_forms() -> Iterator[None]:
    """Inside this block the networks compute with their reference (paper-literal) forms instead of the fused training
    forms. Both have the same parameters and state_dict and agree up to float rounding; this exists so that tests can
    compare them (and to rule the fused forms out when debugging)."""
    global _reference_forms
    previous, _reference_forms = _reference_forms, True
    try:
        yield
    finally:
        _reference_forms = previous


def training_forms_enabled() -> bool:
    """True when autograd records (a training step) and not inside :func:`reference_forms`: blocks then use their
    fused, numerically equivalent training forms. Inference (``no_grad``/``inference_mode``: nnU-Net's prediction,
    FLOP counts, latency) keeps the reference forms, so counted MACs stay the papers'; deployment has its own
    inference forms (``reparameterize``)."""
    return not _reference_forms and torch.is_grad_enabled()


def embed_kernel(weight: torch.Tensor, size: int, dilation: int = 1) -> torch.Tensor:
    """``weight`` ``(out, in, k, ...)`` as an equivalent undilated ``size^dim`` kernel, centred, zeros elsewhere.

    Differentiable: built on the fly from the parameter, the gradient reaches ``weight`` and the zero taps have none.
    """
    dim, k = weight.ndim - 2, weight.shape[2]
    span = dilation * (k - 1) + 1
    offset = (size - span) // 2
    if dilation == 1:
        return F.pad(weight, (offset, size - span - offset) * dim)
    out = weight.new_zeros(*weight.shape[:2], *(size,) * dim)
    out[(slice(None), slice(None), *(slice(offset, offset + span, dilation),) * dim)] = weight
    return out


def interp_mode(conv_op: ConvOp) -> str:
    """The linear interpolation mode matching ``conv_op``'s dimension."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[convert_conv_op_to_dim(conv_op)]


def normalize_strides(strides: Sequence[int | Sequence[int]], dim: int) -> list[tuple[int, ...]]:
    """Turns nnU-Net style strides (``[[1, 1], [2, 2], 2, ...]``) into per-axis tuples."""
    out = []
    for s in strides:
        s = (int(s),) * dim if np.isscalar(s) else tuple(int(i) for i in s)
        if len(s) != dim:
            raise ValueError(f"stride {s} does not have {dim} entries (one per spatial axis)")
        out.append(s)
    return out


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> activation, the workhorse of all three networks."""

    def __init__(
        self,
        conv_op: ConvOp,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        norm_op: type[nn.Module] | None,
        nonlin: type[nn.Module] | None = nn.ReLU,
        bias: bool = False,
        groups: int = 1,
        dilation: int = 1,
        stride: int | Sequence[int] = 1,
    ) -> None:
        layers: list[nn.Module] = [
            conv_op(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=dilation * (kernel_size - 1) // 2,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        ]
        if norm_op is not None:
            layers.append(norm_op(out_channels))
        if nonlin is not None:
            layers.append(nonlin())
        super().__init__(*layers)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention on token sequences ``(..., N, C)``; leading axes are independent groups.

    The groups are folded into the batch so that ``scaled_dot_product_attention`` always gets 4D inputs and takes its
    fused CPU kernel (on 5D inputs it falls back to a path that materialises every attention matrix).
    ``torch.utils.flop_counter`` has no formula for that kernel; ``nnunet_lite.profiling.count_flops`` adds one, so
    reported FLOPs include attention.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[-2], x.shape[-1]
        tokens = x.reshape(-1, n, c)
        b = tokens.shape[0]
        qkv = self.qkv(tokens).reshape(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B', heads, N, dim_head)
        out = self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))
        return out.reshape(x.shape[:-1] + (out.shape[-1],))


class TransformerLayer(nn.Module):
    """Pre-norm Transformer layer: ``x + MHSA(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        nonlin: type[nn.Module] = nn.GELU,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads, dim_head, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_dim), nonlin(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions and truncated-normal linears (nnU-Net's and ViT's defaults)."""
    if isinstance(module, _ConvNd):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
