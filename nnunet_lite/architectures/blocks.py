"""Dimension-agnostic building blocks shared by more than one architecture.

Every block takes ``conv_op`` (``nn.Conv2d`` or ``nn.Conv3d``) and derives norms, pooling and interpolation from it,
so one implementation serves 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from torch import nn
from torch.nn.modules.conv import _ConvNd

ConvOp = type[_ConvNd]


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


def pool_strides_from_plans(pool_op_kernel_sizes: Sequence[Sequence[int]], num_pools: int) -> list[tuple[int, ...]]:
    """The first ``num_pools`` downsampling strides of an nnU-Net plan (its first entry is the stem's, always 1).

    nnU-Net plans have as many stages as the patch size allows; a network with a fixed number of resolution levels
    takes the first ones and pads with stride 1 when the plan has fewer (small patches), which keeps every plan usable.
    """
    dim = len(pool_op_kernel_sizes[0])
    plan = normalize_strides(pool_op_kernel_sizes, dim)[1:]
    return (plan + [(1,) * dim] * num_pools)[:num_pools]


def check_divisible(name: str, spatial_shape: Sequence[int], divisors: Sequence[int], hint: str) -> None:
    """Raises a ValueError naming the network, the shape and what to change when a size constraint fails."""
    bad = [(ax, s, d) for ax, (s, d) in enumerate(zip(spatial_shape, divisors, strict=True)) if s % d]
    if bad:
        detail = ", ".join(f"axis {ax}: {s} is not divisible by {d}" for ax, s, d in bad)
        raise ValueError(f"{name} cannot process spatial size {tuple(spatial_shape)} ({detail}). {hint}")


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
    """Multi-head self-attention on token sequences ``(B, N, C)``.

    Uses ``scaled_dot_product_attention`` (fused kernels on CPU and GPU). ``torch.utils.flop_counter`` has no formula
    for its CPU kernel; ``nnunet_lite.profiling.count_flops`` adds one, so reported FLOPs include attention.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, n, _ = x.shape
        qkv = self.qkv(x).reshape(*lead, n, 3, self.heads, self.dim_head).movedim(-3, 0).transpose(-2, -3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (..., heads, N, dim_head)
        return self.proj(out.transpose(-2, -3).reshape(*lead, n, self.heads * self.dim_head))


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
