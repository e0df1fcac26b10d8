"""CPU forward latency of a network in its deployment variants, measured in one process with interleaved rounds.

Variants (:data:`VARIANTS`):

- ``eager``: the network as trained, PyTorch eager mode, NCHW input;
- ``optimized``: :func:`~nnunet_lite.deploy.optimize.optimize_for_cpu_inference` (BatchNorm folding, kernel
  rewrites, channels-last), PyTorch eager mode;
- ``compiled``: the optimised network through ``torch.compile`` (inductor, with freezing: constant-folded weights,
  prepacked oneDNN convolutions, fused element-wise kernels); compiling takes tens of seconds per network;
- ``onnxruntime``: the exported ONNX graph (the ``for_export`` rewrites) in an onnxruntime CPU session with all graph
  optimisations;
- ``openvino`` (optional, not in :data:`VARIANTS`; ``pip install openvino``): the same exported graph compiled by
  OpenVINO's CPU plugin for latency, fp32 (``nnunet_lite predict --engine openvino``).
- ``onnxruntime_int8``, ``openvino_int8`` and ``openvino_bf16`` (optional): the lower precisions of ``nnunet_lite
  export --precision`` (:mod:`~nnunet_lite.deploy.quantize`), each as ``predict`` runs it: the exported graph
  statically quantized (QDQ, calibrated on :data:`LATENCY_CALIBRATION_PATCHES` random-normal inputs: latency does not
  depend on the calibration, accuracy does and is checked by the export's accuracy guard) by onnxruntime's quantizer
  in onnxruntime (``--quantizer onnxruntime``, ``--engine onnx``) and by NNCF (export's default quantizer;
  onnxruntime's where NNCF is not installed) in OpenVINO (predict's default int8 engine), and OpenVINO with
  ``INFERENCE_PRECISION_HINT=bf16`` (f32 on CPUs without AVX512_BF16/AMX, see
  :func:`~nnunet_lite.deploy.quantize.bf16_fallback_message`).

``nnunet_lite profile`` and ``scripts/benchmark_latency.py`` both call :func:`benchmark_latency`;
:func:`prepare_variant` and :func:`measure_latencies` are the building blocks.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..profiling import Latency
from .optimize import has_depthwise_convolutions, optimize_for_cpu_inference, to_channels_last

VARIANTS = ("eager", "optimized", "compiled", "onnxruntime")
OPTIONAL_VARIANTS = ("openvino", "onnxruntime_int8", "openvino_int8", "openvino_bf16")
LOW_PRECISION_VARIANTS = ("onnxruntime_int8", "openvino_int8", "openvino_bf16")
VARIANT_LABELS = {
    "eager": "eager",
    "optimized": "optimised",
    "compiled": "optimised + torch.compile",
    "onnxruntime": "onnxruntime",
    "openvino": "OpenVINO",
    "onnxruntime_int8": "onnxruntime int8 (its quantizer)",
    "openvino_int8": "OpenVINO int8 (NNCF)",
    "openvino_bf16": "OpenVINO bf16",
}
LATENCY_CALIBRATION_PATCHES = 4


def nnunet_default_network_2d(input_channels: int = 3, num_classes: int = 2) -> nn.Module:
    """nnU-Net's default 2D network for a 256x256 patch: ``PlainConvUNet``, 7 stages, 32-512 features,
    InstanceNorm, LeakyReLU (what ``nnUNetv2_plan_and_preprocess`` plans for 256x256 2D images)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(
        input_channels=input_channels,
        n_stages=7,
        features_per_stage=(32, 64, 128, 256, 512, 512, 512),
        conv_op=nn.Conv2d,
        kernel_sizes=3,
        strides=((1, 1), (2, 2), (2, 2), (2, 2), (2, 2), (2, 2), (2, 2)),
        n_conv_per_stage=(2, 2, 2, 2, 2, 2, 2),
        num_classes=num_classes,
        n_conv_per_stage_decoder=(2, 2, 2, 2, 2, 2),
        conv_bias=True,
        norm_op=nn.InstanceNorm2d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )


def default_networks_2d(input_channels: int = 3, num_classes: int = 2) -> dict[str, nn.Module]:
    """nnU-Net's default 2D network and the three lite networks (paper configurations), in eval mode."""
    from ..architectures import AULUNet, LGMSNet, MedLiteNet

    torch.manual_seed(0)
    networks = {
        "nnU-Net default (PlainConvUNet)": nnunet_default_network_2d(input_channels, num_classes),
        "AULUNet": AULUNet(input_channels, num_classes),
        "MedLiteNet": MedLiteNet(input_channels, num_classes),
        "LGMSNet": LGMSNet(input_channels, num_classes),
    }
    return {name: net.eval() for name, net in networks.items()}


@contextlib.contextmanager
def _inductor_freezing():
    import torch._inductor.config as inductor_config

    previous = inductor_config.freezing
    inductor_config.freezing = True
    try:
        yield
    finally:
        inductor_config.freezing = previous


def prepare_variant(
    model: nn.Module, variant: str, input_shape: Sequence[int], threads: int, *, allow_spinning: bool = True
) -> Callable[[], object]:
    """A zero-argument callable that runs one forward pass of ``model`` in ``variant`` (warmed up, ready to time).

    Args:
        model: the network (not modified).
        variant: one of :data:`VARIANTS` or :data:`OPTIONAL_VARIANTS`.
        input_shape: ``(B, C, *spatial)``.
        threads: CPU threads (torch intra-op threads, or the onnxruntime session's).
        allow_spinning: onnxruntime pool threads may spin while idle (off for shared machines).
    """
    x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if variant == "eager":
            net = model.eval()

            def run() -> object:
                with torch.inference_mode():
                    return net(x)

        elif variant in ("optimized", "compiled"):
            net = optimize_for_cpu_inference(model)
            prepare = to_channels_last if has_depthwise_convolutions(net) else (lambda t: t)
            if variant == "compiled":
                with _inductor_freezing():
                    net = torch.compile(net, dynamic=False)
                    with torch.inference_mode():
                        net(prepare(x))  # compiles now, not while timing

            def run() -> object:
                with torch.inference_mode():
                    return net(prepare(x))

        elif variant == "onnxruntime":
            from .onnx_runtime import create_session, export_onnx, run_session

            data = export_onnx(optimize_for_cpu_inference(model, for_export=True), x)
            session = create_session(data, threads, allow_spinning=allow_spinning)
            array = x.numpy()

            def run() -> object:
                return run_session(session, array)

        elif variant == "openvino":
            run = _openvino_runner(model, x, threads)
        elif variant == "openvino_bf16":
            run = _openvino_runner(model, x, threads, inference_precision="bf16")
        elif variant in ("onnxruntime_int8", "openvino_int8"):
            run = _int8_runner(model, x, threads, variant, allow_spinning=allow_spinning)
        else:
            raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS + OPTIONAL_VARIANTS}")
        for _ in range(2):
            run()
    finally:
        torch.set_num_threads(previous)
    return run


def _openvino_runner(
    model: nn.Module, x: torch.Tensor, threads: int, inference_precision: str = "f32"
) -> Callable[[], object]:
    """The exported graph (static shape of ``x``) compiled by OpenVINO for the CPU: latency hint, ``threads``,
    ``inference_precision`` (f32 or bf16)."""
    from .engines import openvino_infer_request
    from .onnx_runtime import export_onnx

    exported = export_onnx(optimize_for_cpu_inference(model, for_export=True), x, dynamic_batch=False)
    request = openvino_infer_request(
        exported, x.shape[2:], threads, batch=x.shape[0], inference_precision=inference_precision
    )
    array = x.numpy()

    def run() -> object:
        return request.infer({0: array})[0]

    return run


def _int8_runner(
    model: nn.Module, x: torch.Tensor, threads: int, variant: str, *, allow_spinning: bool
) -> Callable[[], object]:
    """The exported graph quantized to int8 as ``nnunet_lite export --precision int8`` does it: by onnxruntime's
    quantizer for onnxruntime (the graph it runs fastest), by NNCF (export's default) for OpenVINO."""
    import importlib.util
    import tempfile
    from pathlib import Path

    from .engines import openvino_infer_request
    from .onnx_runtime import create_session, export_onnx, run_session
    from .quantize import quantize_int8, quantize_int8_nncf

    nncf = variant == "openvino_int8" and importlib.util.find_spec("nncf") is not None

    generator = torch.Generator().manual_seed(1)
    patches = torch.randn(LATENCY_CALIBRATION_PATCHES, *x.shape[1:], generator=generator).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model_int8.onnx"
        export_onnx(optimize_for_cpu_inference(model, for_export=True), x, fp32)
        (quantize_int8_nncf if nncf else quantize_int8)(fp32, int8, patches)
        data = int8.read_bytes()
    array = x.numpy()
    if variant == "onnxruntime_int8":
        session = create_session(data, threads, allow_spinning=allow_spinning)

        def run() -> object:
            return run_session(session, array)

    else:
        request = openvino_infer_request(data, x.shape[2:], threads, batch=x.shape[0])

        def run() -> object:
            return request.infer({0: array})[0]

    return run


def measure_variant_latency(
    model: nn.Module, variant: str, input_shape: Sequence[int], threads: int, min_run_time: float = 1.0
) -> Latency:
    """CPU fp32 forward latency of ``model`` in one deployment ``variant`` (``torch.utils.benchmark``
    ``blocked_autorange``; median and IQR), as :class:`nnunet_lite.profiling.Latency` with ``path=variant``."""
    from torch.utils import benchmark

    run = prepare_variant(model, variant, input_shape, threads, allow_spinning=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=threads)
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        torch.set_num_threads(previous)
    return Latency("cpu", "fp32", threads, measurement.median, measurement.iqr, len(measurement.raw_times), variant)


@dataclass
class LatencyStats:
    """Per-forward latency in seconds: median and interquartile range over the timed blocks (one per round, in
    round order in ``samples_s``)."""

    median_s: float
    iqr_s: float
    blocks: int
    runs_per_block: int
    samples_s: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def measure_latencies(
    runners: dict[str, Callable[[], object]],
    threads: int,
    *,
    rounds: int = 10,
    block_seconds: float = 0.5,
    seed: int = 0,
) -> dict[str, LatencyStats]:
    """Times every runner in ``rounds`` interleaved rounds (random order per round) with ``torch.utils.benchmark``.

    Each round times one block of each runner (as many calls as fit in ``block_seconds``, at least one); the
    reported figure is the median over the blocks, so load changes on a shared machine hit every runner alike.
    """
    from torch.utils import benchmark

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        numbers = {}
        for key, run in runners.items():  # calibration: the fastest of three calls (a busy machine slows some)
            fastest = math.inf
            for _ in range(3):
                start = time.perf_counter()
                run()
                fastest = min(fastest, time.perf_counter() - start)
            numbers[key] = max(1, math.floor(block_seconds / max(fastest, 1e-6)))
        timers = {
            key: benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=threads)
            for key, run in runners.items()
        }
        samples: dict[str, list[float]] = {key: [] for key in runners}
        order = list(runners)
        rng = random.Random(seed)
        for _ in range(rounds):
            rng.shuffle(order)
            for key in order:
                samples[key].append(timers[key].timeit(numbers[key]).mean)
    finally:
        torch.set_num_threads(previous)
    out = {}
    for key, values in samples.items():
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[key] = LatencyStats(
            statistics.median(values), quartiles[2] - quartiles[0], len(values), numbers[key], values
        )
    return out


def benchmark_latency(
    networks: dict[str, nn.Module] | None = None,
    input_shape: Sequence[int] = (1, 3, 256, 256),
    *,
    threads: int = 2,
    variants: Sequence[str] = VARIANTS,
    rounds: int = 10,
    block_seconds: float = 0.5,
    allow_spinning: bool = False,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Latency of every network in every variant, all measured in this process with interleaved rounds.

    Args:
        networks: name -> network; default :func:`default_networks_2d` (nnU-Net's default first: it is the
            baseline of the speed-up column).
        input_shape: ``(B, C, *spatial)``.
        threads: CPU threads for PyTorch and onnxruntime.
        variants: subset of :data:`VARIANTS` and :data:`OPTIONAL_VARIANTS`.
        rounds: timed blocks per network and variant.
        block_seconds: approximate length of one timed block.
        allow_spinning: onnxruntime threads may spin while idle (PyTorch's OpenMP threads follow
            ``OMP_WAIT_POLICY``, which must be set before torch is imported).
        log: progress messages (None: silent).

    Returns:
        One row per network and variant: network, variant, median_ms, iqr_ms, blocks, runs_per_block, params,
        setup_s (compile or export time), speedup (the first network's eager median divided by this median),
        speedup_paired (median over rounds of the same ratio taken within each round), speedup_same_variant (the
        first network in the same variant divided by this median: the fair ratio at equal precision).
    """
    networks = networks if networks is not None else default_networks_2d(input_shape[1])
    runners, setup = {}, {}
    for name, net in networks.items():
        for variant in variants:
            if log:
                log(f"preparing {name} / {variant}")
            start = time.perf_counter()
            runners[(name, variant)] = prepare_variant(
                net, variant, input_shape, threads, allow_spinning=allow_spinning
            )
            setup[(name, variant)] = time.perf_counter() - start
    if log:
        log(f"timing {len(runners)} runners: {rounds} interleaved rounds of ~{block_seconds} s blocks")
    keyed = {f"{n}\0{v}": run for (n, v), run in runners.items()}
    stats = measure_latencies(keyed, threads, rounds=rounds, block_seconds=block_seconds)
    baseline_name = next(iter(networks))
    baseline_variant = "eager" if "eager" in variants else variants[0]
    baseline = stats[f"{baseline_name}\0{baseline_variant}"]
    rows = []
    for (name, variant), _ in runners.items():
        s = stats[f"{name}\0{variant}"]
        # also per round (both timed within seconds of each other), then the median over rounds: steadier than the
        # ratio of medians when the machine's load drifts, but it need not agree with the medians shown
        ratios = [b / x for b, x in zip(baseline.samples_s, s.samples_s, strict=True)]
        rows.append(
            {
                "network": name,
                "variant": variant,
                "median_ms": s.median_s * 1e3,
                "iqr_ms": s.iqr_s * 1e3,
                "blocks": s.blocks,
                "runs_per_block": s.runs_per_block,
                "params": sum(p.numel() for p in networks[name].parameters()),
                "setup_s": setup[(name, variant)],
                "speedup": baseline.median_s / s.median_s,
                "speedup_paired": statistics.median(ratios),
                "speedup_same_variant": stats[f"{baseline_name}\0{variant}"].median_s / s.median_s,
            }
        )
    return rows


def format_latency_table(rows: list[dict]) -> str:
    """Markdown table: one row per network, ``median ms (speed-up)`` per variant; the speed-up is relative to the
    first network's eager latency (nnU-Net's default network in the standard benchmark). Low-precision variants
    also show the ratio to the first network at the same precision (``same x``)."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    networks = list(dict.fromkeys(r["network"] for r in rows))
    cell = {(r["network"], r["variant"]): r for r in rows}
    header = ["network", "params", *[f"{VARIANT_LABELS.get(v, v)} ms (x)" for v in variants], "best x"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name in networks:
        present = [cell[(name, v)] for v in variants if (name, v) in cell]
        values = []
        for v in variants:
            r = cell.get((name, v))
            if r and v in LOW_PRECISION_VARIANTS:
                values.append(f"{r['median_ms']:.1f} ({r['speedup']:.1f}x; {r['speedup_same_variant']:.2f}x same)")
            else:
                values.append(f"{r['median_ms']:.1f} ({r['speedup']:.1f}x)" if r else "-")
        best = max(r["speedup"] for r in present)
        params = present[0]["params"]
        lines.append(f"| {name} | {params / 1e6:.3f} M | " + " | ".join(values) + f" | **{best:.1f}x** |")
    return "\n".join(lines)


def environment_line(threads: int) -> str:
    """CPU model, thread count and library versions, for the table caption."""
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = [f"torch {torch.__version__}"]
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions.append(f"onnxruntime {onnxruntime.__version__}")
    with contextlib.suppress(ImportError):
        import openvino

        versions.append(f"OpenVINO {openvino.__version__.split('-')[0]}")
    load = ""
    with contextlib.suppress(OSError, AttributeError):
        load = f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} logical CPUs"
    wait = os.environ.get("OMP_WAIT_POLICY", "default")
    return f"{cpu}, {threads} threads (OMP_WAIT_POLICY={wait}){load}; {', '.join(versions)}; {instruction_line()}"


def instruction_line() -> str:
    """The CPU's low-precision instructions in words, for captions (what an int8/bf16 column can expect)."""
    from .quantize import cpu_instruction_summary

    summary = cpu_instruction_summary()
    int8 = ", ".join(summary["int8_dot_product"]) or "none (no VNNI/AMX: int8 on AVX2 kernels)"
    bf16 = ", ".join(summary["bf16"]) or "none (no AVX512_BF16/AMX: bf16 runs as f32)"
    return f"int8 dot-product instructions: {int8}; bf16 instructions: {bf16}"
