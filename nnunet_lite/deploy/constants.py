"""Defaults shared by the deploy modules and the CLI (kept free of heavy imports)."""

# largest accepted |onnxruntime - PyTorch| logit difference, relative to max(1, max |logit|)
DEFAULT_TOLERANCE = 1e-3
DEFAULT_OPSET = 17
