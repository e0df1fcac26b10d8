"""Parameter, FLOP and latency measurements shared by the CLI, the demo and the benchmarks.

Conventions (the lightweight papers mix them up): ``params`` = ``sum(p.numel())``; ``flops`` counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linears and matrix products, attention included);
``macs = flops / 2``, which is what thop-based papers print as "GFLOPs".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten

# torch has no FLOP formula for the CPU flash-attention kernel that scaled_dot_product_attention dispatches to, so
# attention would silently count as zero on CPU.
_ATTENTION_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(
        q, k, v
    )
}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs (2 per multiply-accumulate) for one input of ``input_shape``, attention products included."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_ATTENTION_FORMULAS) as counter:
            model(torch.zeros(tuple(input_shape), device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
