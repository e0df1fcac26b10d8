"""What every nnunet_lite network promises :class:`~nnunet_lite.trainer_base.nnUNetTrainerLite`.

Signature ``(input_channels, num_classes, *, conv_op, strides, ..., deep_supervision=False)``; ``forward`` returns
logits only. The network reads its downsampling strides from nnU-Net's plans (:meth:`LiteNetwork.kwargs_from_plans`)
and refuses an input size it cannot process with one actionable error (:meth:`LiteNetwork.check_input_size`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from .blocks import normalize_strides


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


class LiteNetwork(nn.Module):
    """Base class of the lite networks: plan-driven strides and the input-size check.

    Subclasses set ``num_pools`` (how many strides they take from the plans) and ``self.strides`` (per-axis tuples, see
    :func:`~nnunet_lite.architectures.blocks.normalize_strides`) in ``__init__``; a network with further size
    constraints overrides :meth:`required_divisor` and :meth:`size_constraints`, and one with more plan-driven
    arguments extends :meth:`kwargs_from_plans`.
    """

    num_pools: ClassVar[int]
    strides: list[tuple[int, ...]]

    @classmethod
    def kwargs_from_plans(cls, patch_size: Sequence[int], pool_op_kernel_sizes: Sequence[Sequence[int]]) -> dict:
        """Constructor arguments for an nnU-Net plan: its first ``num_pools`` pooling strides (padded with 1)."""
        return {"strides": pool_strides_from_plans(pool_op_kernel_sizes, cls.num_pools)}

    def required_divisor(self) -> tuple[int, ...]:
        """Per axis, the number every input size must be divisible by (here: the product of the strides)."""
        return tuple(math.prod(s[ax] for s in self.strides) for ax in range(len(self.strides[0])))

    def size_constraints(self) -> str:
        """What determines :meth:`required_divisor`, for the error message."""
        return f"strides {self.strides}"

    def check_input_size(self, spatial_shape: Sequence[int]) -> None:
        """Raises ValueError if ``spatial_shape`` cannot pass through the network."""
        divisor = self.required_divisor()
        check_divisible(
            type(self).__name__,
            spatial_shape,
            divisor,
            f"Pad or crop the input (or choose a patch size) to a multiple of {divisor} per axis; "
            f"{self.size_constraints()}.",
        )
