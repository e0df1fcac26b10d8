"""Models for ``nnunet_lite predict``'s fast path: an :class:`Engine` is nnU-Net's plans plus a batched network call.

:class:`OnnxEngine` loads an ``nnunet_lite export`` folder (onnxruntime on CPU or its CUDA provider);
:class:`OpenVinoEngine` runs the same export with OpenVINO on the CPU;
:class:`TorchEngine` loads any trainer's checkpoint as ``nnUNetv2_predict`` does (on CPU with the output-preserving
inference forms of :mod:`nnunet_lite.deploy.optimize`, on CUDA with fp16/bf16 autocast and optional ``torch.compile``).
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


class PredictError(RuntimeError):
    """Bad input for prediction; the message names the file or value and what to do."""


@dataclass
class Engine:
    """What the pipeline needs from a model: nnU-Net's plans and a batched network call (logits out)."""

    plans_manager: object
    configuration_manager: object
    dataset_json: dict
    mirror_axes: tuple[int, ...] | None
    device: torch.device
    forwards: list[Callable[[torch.Tensor], torch.Tensor]]  # one per fold: averaged like nnU-Net's ensemble
    description: str
    # windows (mirrored copies included) per network call; None: up to the element budget. 1 on CPU: batches were
    # measured slower there (onnxruntime, AULUNet, 2 threads: 13 ms per image at batch 1, 120-170 ms at 4-8)
    max_batch: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def label_manager(self):
        return self.plans_manager.get_label_manager(self.dataset_json)


class OnnxEngine:
    """Loads an ``nnunet_lite export`` folder into an :class:`Engine` running onnxruntime."""

    @staticmethod
    def load(
        export_folder: str | os.PathLike, threads: int | None = None, device: str = "cpu", model_file: str | None = None
    ) -> Engine:
        """``model_file``: a model of the folder other than the sidecar's (e.g. the fp32 ``model.onnx`` of an int8
        export)."""
        from .onnx_runtime import create_session, run_session
        from .sidecar import load_export

        export = load_export(export_folder)
        plans_manager = export.plans_manager()
        model_path = export.folder / model_file if model_file else export.model_path
        provider = "CPUExecutionProvider"
        if device != "cuda":
            session = create_session(model_path, threads, allow_spinning=False)
        else:
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise PredictError(
                    "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu), or use --engine torch"
                )
            session = ort.InferenceSession(
                os.fspath(model_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
            provider = "CUDAExecutionProvider"

        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(run_session(session, x))

        max_batch = None if export.sidecar["model"].get("dynamic_batch") and provider != "CPUExecutionProvider" else 1
        return _export_engine(export, plans_manager, forward, f"onnxruntime {provider}", max_batch, model_path)


def _export_engine(
    export, plans_manager, forward: Callable, runtime: str, max_batch: int | None, model_path: Path | None = None
) -> Engine:
    """The :class:`Engine` of an export folder whose network runs in ``forward`` (on the CPU side of the pipeline)."""
    return Engine(
        plans_manager=plans_manager,
        configuration_manager=plans_manager.get_configuration(export.configuration),
        dataset_json=export.dataset_json,
        mirror_axes=tuple(export.mirror_axes) if export.mirror_axes is not None else None,
        device=torch.device("cpu"),
        forwards=[forward],
        description=f"{runtime} ({Path(model_path or export.model_path).name})",
        max_batch=max_batch,
    )


def openvino_infer_request(
    onnx_model: str | os.PathLike | bytes,
    spatial: Sequence[int],
    threads: int | None = None,
    batch: int = 1,
    inference_precision: str = "f32",
):
    """An OpenVINO CPU infer request for an ONNX model (file or bytes) with the static input shape ``(batch, C,
    *spatial)``: latency hint, ``threads`` inference threads (None: OpenVINO's choice), ``inference_precision``
    (``f32`` or ``bf16``: OpenVINO's INFERENCE_PRECISION_HINT; an int8 QDQ model runs int8 either way). The request's
    ``compiled_precision`` attribute is what OpenVINO actually chose (f32 on CPUs without bf16). ImportError without
    OpenVINO."""
    try:
        import openvino
    except ImportError as e:
        raise ImportError("OpenVINO is not installed: pip install openvino") from e
    core = openvino.Core()
    model = (
        core.read_model(onnx_model, b"") if isinstance(onnx_model, bytes) else core.read_model(os.fspath(onnx_model))
    )
    channels = model.inputs[0].get_partial_shape()[1].get_length()
    model.reshape([batch, channels, *spatial])
    settings = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
    if threads:
        settings["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", settings)
    request = compiled.create_infer_request()
    chosen = compiled.get_property("INFERENCE_PRECISION_HINT")
    request.compiled_precision = chosen.to_string() if hasattr(chosen, "to_string") else str(chosen)  # f32, bf16
    return request


class OpenVinoEngine:
    """Loads an ``nnunet_lite export`` folder into an :class:`Engine` running OpenVINO on the CPU (``pip install
    openvino``): the same ``model.onnx``, compiled for one window per call, fp32. Usually faster than onnxruntime on
    x86 CPUs (the README's latency table has both)."""

    @staticmethod
    def load(
        export_folder: str | os.PathLike,
        threads: int | None = None,
        inference_precision: str = "f32",
        model_file: str | None = None,
    ) -> Engine:
        """``inference_precision``: ``f32`` or ``bf16`` (see :func:`openvino_infer_request`); ``model_file``: as in
        :meth:`OnnxEngine.load`."""
        from .sidecar import load_export

        try:
            import openvino
        except ImportError as e:
            raise PredictError("--engine openvino needs OpenVINO: pip install openvino (or use --engine onnx)") from e
        export = load_export(export_folder)
        plans_manager = export.plans_manager()
        patch_size = plans_manager.get_configuration(export.configuration).patch_size
        # static shape: one window per call, as on onnxruntime
        model_path = export.folder / model_file if model_file else export.model_path
        request = openvino_infer_request(model_path, patch_size, threads, inference_precision=inference_precision)

        def forward(x: torch.Tensor) -> torch.Tensor:
            out = request.infer({0: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
            return torch.from_numpy(out.copy())  # the request reuses its output buffer

        # an int8 (QDQ) model runs int8 whatever the f32/bf16 hint says
        int8 = model_file is None and export_precision(export.sidecar) == "int8"
        kind = "int8 (QDQ)" if int8 else request.compiled_precision
        runtime = f"OpenVINO {openvino.__version__.split('-')[0]} CPU {kind}"
        engine = _export_engine(export, plans_manager, forward, runtime, max_batch=1, model_path=model_path)
        engine.info["compiled_precision"] = request.compiled_precision
        return engine


def export_precision(sidecar: dict) -> str:
    """The precision an export records (``fp32`` for exports written before precisions existed)."""
    return sidecar.get("precision", {}).get("precision", "fp32")


def default_int8_engine(device: str = "cpu") -> str:
    """Where ``predict`` runs an int8 export by default: ``openvino`` on the CPU where OpenVINO is installed (it runs
    both quantizers' QDQ graphs 1.5-5x faster than onnxruntime, whose int8-activation (NNCF) kernels are slower than
    its own fp32 ones; docs/deployment.md, "Which int8 runtime"), else ``onnx``."""
    return "openvino" if device == "cpu" and importlib.util.find_spec("openvino") is not None else "onnx"


def load_export_engine(
    export_folder: str | os.PathLike,
    *,
    engine: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    device: str = "cpu",
) -> Engine:
    """The :class:`Engine` that runs an export at the precision it records (``precision="auto"``) or at ``fp32``
    (its fp32 ``model.onnx``, for comparison). ``engine``: ``auto`` (onnxruntime for fp32, OpenVINO for bf16 and,
    where it is installed, for int8), ``onnx`` or ``openvino``. ``Engine.info`` holds ``engine``, ``precision`` and,
    where the CPU lacks instructions or the int8 runtime is the slow one, ``note`` (one line: what is missing, what
    runs instead)."""
    from .quantize import bf16_fallback_message, int8_note
    from .sidecar import load_export

    export = load_export(export_folder)
    recorded = export_precision(export.sidecar)
    if precision == "auto":
        precision = recorded
    elif precision not in ("fp32", recorded):
        raise PredictError(
            f"--precision {precision}: {export.folder} records precision {recorded} (it holds {recorded} and fp32 "
            f"models); export it with --precision {precision} or drop --precision"
        )
    model_file = export.sidecar.get("precision", {}).get("fp32_file") if precision == "fp32" else None
    slow_int8 = None
    if engine == "auto":
        engine = "openvino" if precision == "bf16" else "onnx"
        if precision == "int8":
            engine = default_int8_engine(device)
            if engine == "onnx" and device == "cpu":
                slow_int8 = (
                    "int8: OpenVINO is not installed, so onnxruntime runs the int8 model (often slower than fp32 "
                    "there); pip install openvino to run it fast"
                )
    if precision == "bf16" and engine != "openvino":
        raise PredictError("a bf16 export runs in OpenVINO (onnxruntime has no bf16 CPU path): use --engine openvino")
    if engine == "openvino":
        if device != "cpu":
            raise PredictError("--engine openvino runs on the CPU: use --engine onnx or torch with --device cuda")
        try:
            result = OpenVinoEngine.load(
                export.folder, threads, "bf16" if precision == "bf16" else "f32", model_file=model_file
            )
        except ImportError as e:
            raise PredictError(str(e)) from None
        engine_name = "openvino"
    else:
        result = OnnxEngine.load(export.folder, threads=threads, device=device, model_file=model_file)
        engine_name = "onnxruntime"
    note = bf16_fallback_message() if precision == "bf16" else int8_note() if precision == "int8" else None
    guarded = export.sidecar.get("precision", {}).get("accuracy_guard", {}).get("engine")
    unguarded = None
    if precision == recorded != "fp32" and guarded and guarded != engine_name:
        unguarded = (
            f"the accuracy guard checked this {precision} export in {guarded}, not in {engine_name}: the same "
            f"{precision} model can segment differently in another runtime (drop --engine to run the checked one)"
        )
    note = "; ".join(n for n in (note, slow_int8, unguarded) if n) or None
    result.info.update({"engine": engine_name, "precision": precision, "recorded_precision": recorded, "note": note})
    result.description += f", {precision}"
    return result


class TorchEngine:
    """Loads a trained nnU-Net model folder (any trainer) into an :class:`Engine` running PyTorch."""

    @staticmethod
    def load(
        model_folder: str | os.PathLike,
        folds: Sequence[int | str] = (0,),
        checkpoint_name: str = "checkpoint_final.pth",
        *,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "auto",
        compile: bool = False,
        optimize: bool = True,
    ) -> Engine:
        """``precision``: ``fp32``, ``fp16`` or ``bf16`` (autocast, CUDA only); ``auto``: fp16 autocast on CUDA as
        ``nnUNetv2_predict`` does, fp32 on CPU. ``optimize``: the CPU rewrites of ``optimize_for_cpu_inference``."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from ..checkpoints import CheckpointError, load_checkpoint
        from ..nnunet_env import make_trainers_discoverable

        model_folder = Path(model_folder)
        for name in ("plans.json", "dataset.json"):
            if not (model_folder / name).is_file():
                raise PredictError(f"{model_folder / name} is missing: -m must be an nnU-Net results folder")
        for fold in folds:
            checkpoint = model_folder / f"fold_{fold}" / checkpoint_name
            if not checkpoint.is_file():
                raise PredictError(
                    f"{checkpoint} not found: train it with nnUNetv2_train or choose folds with -f and the checkpoint "
                    f"with -chk"
                )
            try:  # safely first: nnU-Net's loader below unpickles with weights_only=False
                load_checkpoint(checkpoint)
            except CheckpointError as e:
                raise PredictError(str(e)) from None
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise PredictError("--device cuda but torch sees no CUDA device; use --device cpu")
        if threads and torch_device.type == "cpu":
            torch.set_num_threads(threads)
        make_trainers_discoverable()
        predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False, verbose=False)
        predictor.initialize_from_trained_model_folder(
            str(model_folder),
            use_folds=[f if f == "all" else int(f) for f in folds],
            checkpoint_name=checkpoint_name,
        )
        return engine_from_predictor(predictor, device=device, precision=precision, compile=compile, optimize=optimize)


def engine_from_predictor(
    predictor, *, device: str = "cpu", precision: str = "auto", compile: bool = False, optimize: bool = True
) -> Engine:
    """An :class:`Engine` from an initialised ``nnUNetPredictor`` (its network, fold weights, plans and mirroring
    axes); see :meth:`TorchEngine.load` for the arguments."""
    from .optimize import optimize_for_cpu_inference

    torch_device = torch.device(device)
    network = predictor.network
    if hasattr(network, "_orig_mod"):  # nnUNet_compile: work on the plain module
        network = network._orig_mod
    if precision == "auto":
        precision = "fp16" if torch_device.type == "cuda" else "fp32"
    if precision != "fp32" and torch_device.type != "cuda":
        raise PredictError(f"--precision {precision} needs --device cuda (CPU inference runs in fp32)")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[precision]
    forwards = []
    for params in predictor.list_of_parameters:
        network.load_state_dict(params)
        if torch_device.type == "cpu" and optimize:
            net = optimize_for_cpu_inference(network)
        else:
            net = copy.deepcopy(network).eval()
        net = net.to(torch_device)
        if compile:
            net = torch.compile(net)
        forwards.append(_torch_forward(net, torch_device, dtype, channels_last=torch_device.type == "cpu"))
    return Engine(
        plans_manager=predictor.plans_manager,
        configuration_manager=predictor.configuration_manager,
        dataset_json=predictor.dataset_json,
        mirror_axes=predictor.allowed_mirroring_axes,
        device=torch_device,
        forwards=forwards,
        max_batch=1 if torch_device.type == "cpu" else None,
        info={"engine": "pytorch", "precision": precision},
        description=f"PyTorch {torch_device.type} {precision}{' compiled' if compile else ''}"
        f"{' optimised' if optimize and torch_device.type == 'cpu' else ''} ({predictor.trainer_name})",
    )


def _torch_forward(net, device: torch.device, dtype, channels_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    from .optimize import to_channels_last

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = to_channels_last(x)
        if dtype is not None:
            with torch.autocast(device.type, dtype=dtype):
                out = net(x)
        else:
            out = net(x)
        return out.float().contiguous()

    return forward
