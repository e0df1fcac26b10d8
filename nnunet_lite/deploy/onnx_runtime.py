"""ONNX export of a network and onnxruntime sessions (both optional dependencies, imported inside functions)."""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .constants import DEFAULT_OPSET

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
NCHWC_MAX_OVERHEAD = 2.0  # see create_session(nchwc="auto")
EXPORT_EXTRA_HINT = 'pip install "nnunet-lite[export]"  (or: pip install onnx onnxruntime)'


class ExportError(RuntimeError):
    """The export or its verification failed; the message says what to do."""


def require_onnx() -> None:
    """Raises ExportError naming the extra to install if onnx or onnxruntime is missing."""
    missing = []
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"{' and '.join(missing)} not installed; install the export extra: {EXPORT_EXTRA_HINT}")


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    exporter: str = "auto",
) -> bytes:
    """Exports ``model`` (eval mode, fixed spatial size of ``example_input``) to ONNX; returns the model bytes.

    Args:
        model: the network; exported in eval mode, with inputs named ``input`` and outputs ``logits``.
        example_input: ``(B, C, *spatial)``; the spatial size is baked into the graph.
        path: if given, the model is also written there.
        opset: ONNX opset.
        dynamic_batch: batch dimension symbolic (``batch``).
        exporter: ``"torchscript"`` (torch's tracing exporter: fast, no extra dependency), ``"dynamo"``
            (``torch.export`` based, needs onnxscript) or ``"auto"`` (TorchScript where this torch still has it).
    """
    model = model.eval()
    exporter = resolve_exporter(exporter)
    with torch.no_grad(), _static_interpolation_sizes():
        if exporter == "torchscript":
            buffer = io.BytesIO()
            with warnings.catch_warnings():
                # the deprecation notice of the TorchScript exporter and tracer warnings about shape checks in
                # forward(): the spatial size is fixed, so those checks are constant in the exported graph
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (example_input,),
                    buffer,
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
                    opset_version=opset,
                    do_constant_folding=True,
                )
            data = buffer.getvalue()
        elif exporter == "dynamo":
            dynamic_shapes = None
            if dynamic_batch:
                arg = next(iter(_forward_parameter_names(model)), "x")
                dynamic_shapes = {arg: {0: torch.export.Dim("batch", min=1, max=1024)}}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    model,
                    (example_input,),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=dynamic_shapes,
                    opset_version=max(opset, 18),
                    verbose=False,
                )
            data = program.model_proto.SerializeToString()
        else:
            raise ValueError(f"unknown exporter {exporter!r}: use 'auto', 'torchscript' or 'dynamo'")
    if path is not None:
        Path(path).write_bytes(data)
    return data


@contextlib.contextmanager
def _static_interpolation_sizes():
    """Makes ``F.interpolate(x, size=other.shape[2:])`` record constant sizes while tracing.

    The networks upsample to their skip connections' sizes; traced, each call becomes a chain of Shape, Gather,
    Unsqueeze and Concat nodes (about 50 of AULUNet's 317 nodes). The spatial size of the exported graph is fixed to
    the example input's, so these sizes are constants; only the batch dimension stays symbolic.
    """
    original = F.interpolate

    def interpolate(input, size=None, *args, **kwargs):
        if size is not None:
            size = int(size) if isinstance(size, (int, torch.Tensor)) else tuple(int(s) for s in size)
        return original(input, size, *args, **kwargs)

    F.interpolate = interpolate
    try:
        yield
    finally:
        F.interpolate = original


def resolve_exporter(exporter: str = "auto") -> str:
    """``"torchscript"`` or ``"dynamo"``: what ``"auto"`` means with this torch."""
    if exporter == "auto":
        return "torchscript" if _has_torchscript_exporter() else "dynamo"
    return exporter


def _has_torchscript_exporter() -> bool:
    import inspect

    return "dynamo" in inspect.signature(torch.onnx.export).parameters and hasattr(torch.jit, "trace")


def _forward_parameter_names(model: nn.Module) -> list[str]:
    import inspect

    return [p for p in inspect.signature(model.forward).parameters if p != "self"]


def nchwc_padding_overhead(model: str | os.PathLike | bytes, block: int = 16) -> float:
    """Convolution multiply-accumulates after padding channels to ``block`` (onnxruntime's NCHWc layout) divided by
    the true ones: about 1 for networks with wide layers, 6 for AULUNet (5-channel full-resolution layers)."""
    import onnx
    from onnx import shape_inference

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(os.fspath(model))
    proto = shape_inference.infer_shapes(proto)
    weights = {init.name: list(init.dims) for init in proto.graph.initializer}
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*proto.graph.value_info, *proto.graph.output]
    }
    macs = padded = 0
    for node in proto.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type != "Conv" or node.input[1] not in weights or not out or 0 in out[2:]:
            continue
        c_out, c_in_per_group, *kernel = weights[node.input[1]]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        voxels = math.prod(out[2:]) * math.prod(kernel)
        rounded = -(-c_out // block) * block
        macs += voxels * c_out * c_in_per_group
        padded += voxels * rounded * (c_in_per_group if group > 1 else -(-c_in_per_group // block) * block)
    return padded / macs if macs else 1.0


def create_session(
    model: str | os.PathLike | bytes,
    threads: int | None = None,
    *,
    optimization: str = "all",
    allow_spinning: bool = True,
    disabled_optimizers: Sequence[str] | None = None,
    nchwc: str | bool = "auto",
):
    """An onnxruntime CPU ``InferenceSession``.

    Args:
        model: path to a ``.onnx`` file or the model bytes.
        threads: intra-op threads (None: onnxruntime's default, one per physical core).
        optimization: graph optimisation level, ``"all"`` (incl. layout transforms such as NCHWc), ``"extended"``,
            ``"basic"`` or ``"none"``.
        allow_spinning: let idle pool threads spin; turn off on shared, oversubscribed machines.
        disabled_optimizers: onnxruntime graph transformers to skip (e.g. ``["NchwcTransformer"]``).
        nchwc: onnxruntime's blocked channel layout (part of ``"all"``). ``"auto"`` turns it off when padding the
            channels to blocks of 16 would more than double the convolution work (:func:`nchwc_padding_overhead`):
            measured 1.5x faster for AULUNet without it, 1.5-2x slower for the wider networks.
    """
    require_onnx()
    import onnxruntime as ort

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # errors only: the NCHWc notice is not a problem at run time
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else os.fspath(model)
    disabled = list(disabled_optimizers or [])
    if nchwc == "auto":
        nchwc = nchwc_padding_overhead(source) <= NCHWC_MAX_OVERHEAD
    if not nchwc and "NchwcTransformer" not in disabled:
        disabled.append("NchwcTransformer")
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def run_session(session, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Runs ``session`` on one float32 input array; returns the logits array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]


def max_abs_difference(session, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """``(max |onnxruntime - torch|, max |torch|)`` of the logits for input ``x``."""
    with torch.no_grad():
        reference = model.eval()(x).float().cpu().numpy()
    output = run_session(session, x)
    if output.shape != reference.shape:
        raise ExportError(f"onnxruntime output shape {output.shape} differs from PyTorch's {reference.shape}")
    return float(np.abs(output - reference).max()), float(np.abs(reference).max())
