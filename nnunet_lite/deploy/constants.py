"""Defaults shared by the deploy modules and the CLI (kept free of heavy imports)."""

# largest accepted |onnxruntime - PyTorch| logit difference, relative to max(1, max |logit|)
DEFAULT_TOLERANCE = 1e-3
DEFAULT_OPSET = 17

# lower-precision exports (deploy/quantize.py); here so that building the CLI parser imports no torch
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_MAX_DICE_DROP = 0.005
DEFAULT_CALIBRATION_PATCHES = 64
# int8 quantizers of export --precision int8 (deploy/quantize.py); the default is chosen by measurement
# (docs/deployment.md, "onnxruntime or NNCF"): NNCF passed the guard where onnxruntime's quantize_static broke AULUNet
QUANTIZERS = ("onnxruntime", "nncf")
DEFAULT_QUANTIZER = "nncf"
