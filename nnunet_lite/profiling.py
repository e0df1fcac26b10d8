"""Parameter, FLOP, latency and memory measurements shared by the CLI, the demo and the benchmarks.

Conventions (the lightweight papers mix them up): ``params`` = ``sum(p.numel())``; ``flops`` counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linears and matrix products, attention included);
``macs = flops / 2``, which is what thop-based papers print as "GFLOPs". Latency comes from
``torch.utils.benchmark.Timer`` (warm-up, CUDA synchronisation, median and interquartile range over blocks of runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

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


@dataclass
class Latency:
    """Forward latency of one input, in seconds (median and interquartile range over timed blocks)."""

    device: str
    precision: str
    threads: int
    median_s: float
    iqr_s: float
    runs: int
    path: str = "eager"  # or a deployment path of nnunet_lite.deploy.benchmark.VARIANTS (optimized, onnxruntime, ...)

    def as_dict(self) -> dict:
        return asdict(self)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    autocast: bool = False,
    threads: int | None = None,
    min_run_time: float = 1.0,
    warmup: int = 3,
) -> Latency:
    """Forward latency of ``model`` (``eval`` mode, ``torch.inference_mode``) with ``torch.utils.benchmark``.

    Args:
        model: the network; moved to ``device``.
        input_shape: full input shape including the batch dimension.
        device: "cpu" or a CUDA device.
        autocast: run under ``torch.autocast`` (fp16 on CUDA, bf16 on CPU), as nnU-Net does on CUDA.
        threads: intra-op threads for the measurement; None keeps ``torch.get_num_threads()``.
        min_run_time: seconds ``blocked_autorange`` spends measuring at least.
        warmup: untimed forward passes first (allocator, cuDNN autotuning, lazy initialisation).
    """
    from torch.utils import benchmark

    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    model = model.to(device).eval()
    x = torch.zeros(tuple(input_shape), device=device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    amp = torch.autocast(device.type, dtype=dtype) if autocast else contextlib.nullcontext()

    def forward() -> None:
        with torch.inference_mode(), amp:
            model(x)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            forward()
        timer = benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        torch.set_num_threads(previous)
    precision = f"autocast {str(dtype).removeprefix('torch.')}" if autocast else "fp32"
    return Latency(str(device), precision, threads, measurement.median, measurement.iqr, len(measurement.raw_times))


def peak_forward_memory(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated during one forward pass on top of the weights and the input (inference mode).

    CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated before. CPU: the running sum of the tensor
    allocations and frees that ``torch.profiler`` records with ``profile_memory=True`` (process RSS would also count
    the allocator's caches and the Python heap, and ``tracemalloc`` does not see torch's allocations).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.zeros(tuple(input_shape), device=device)
    with torch.inference_mode():
        model(x)  # first call: lazy initialisation and workspace allocations are not part of the steady state
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            model(x)
            torch.cuda.synchronize(device)
            return int(torch.cuda.max_memory_allocated(device) - before)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(x)
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)
