"""Deployment: ONNX export of trained models, onnxruntime prediction and fast CPU inference.

- :func:`optimize_for_cpu_inference` (``deploy.optimize``): output-preserving inference rewrites;
- :func:`export_trained_model` (``deploy.export``, ``nnunet_lite export``): a trained nnU-Net model to ONNX + sidecar;
- :func:`load_export` (``deploy.sidecar``): read an export folder;
- ``deploy.quantize``: int8 quantization, bf16, the accuracy guard (``nnunet_lite export --precision``);
- :func:`predict_folder_fast` (``deploy.fast_predict``, ``nnunet_lite predict``): nnU-Net's inference in one pipelined
  process, with an ONNX export (:class:`OnnxEngine`) or any checkpoint in PyTorch (:class:`TorchEngine`);
- :func:`predict_folder` (``deploy.predict``, ``nnunet_lite predict --nnunet-pipeline``): nnUNetPredictor itself
  with onnxruntime;
- :func:`benchmark_latency` (``deploy.benchmark``): CPU latency of eager, optimised, compiled and onnxruntime variants.

Names are imported on first use, so that ``import nnunet_lite.deploy`` (and the CLI) stays cheap; onnx and
onnxruntime are optional (``pip install "nnunet-lite[export]"``) and only needed for export and prediction.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "optimize_for_cpu_inference": "optimize",
    "to_channels_last": "optimize",
    "export_trained_model": "export",
    "load_export": "sidecar",
    "read_sidecar": "sidecar",
    "predict_folder": "predict",
    "make_predictor": "predict",
    "predict_folder_fast": "fast_predict",
    "OnnxEngine": "fast_predict",
    "TorchEngine": "fast_predict",
    "benchmark_latency": "benchmark",
    "format_latency_table": "benchmark",
    "prepare_variant": "benchmark",
    "measure_latencies": "benchmark",
    "ExportError": "onnx_runtime",
    "export_onnx": "onnx_runtime",
    "create_session": "onnx_runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
