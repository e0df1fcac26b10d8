"""``nnunet_lite profile``: parameters, FLOPs/MACs, forward latency, peak memory and end-to-end predictor time.

Networks are built exactly as nnU-Net's trainer builds them for a dataset's plans (any trainer, nnU-Net's own
included), or for an explicit input shape with nnU-Net's default U-Net topology.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints import CheckpointError, load_checkpoint
from ..profiling import count_flops, count_parameters, measure_latency, peak_forward_memory
from .nnunet_io import (
    DEFAULT_PLANS,
    ComparisonError,
    build_network,
    dataset_name,
    default_plans_for_shape,
    find_trainer_class,
    load_plans,
    markdown_table,
    quiet,
    require_env,
)


def case_lists(folder: Path, file_ending: str) -> list[list[str]]:
    """nnU-Net's ``CASE_XXXX<ending>`` files grouped per case (one file may hold several channels, e.g. RGB PNG)."""
    files = sorted(p.name for p in Path(folder).glob(f"*{file_ending}"))
    cases: dict[str, list[str]] = {}
    for name in files:
        stem = name[: -len(file_ending)]
        if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
            cases.setdefault(stem[:-5], []).append(str(Path(folder) / name))
    if not cases:
        raise ComparisonError(f"no images named CASE_0000{file_ending} in {folder}")
    return list(cases.values())


@dataclass
class NetworkSpec:
    """A trainer's network with what it was built from."""

    trainer: str
    network: torch.nn.Module
    input_shape: tuple[int, ...]
    plans: dict
    configuration: str
    dataset_json: dict
    source: str
    model_folder: Path | None

    def counts(self) -> dict:
        flops = count_flops(self.network, self.input_shape)
        return {
            "trainer": self.trainer,
            "network": type(self.network).__name__,
            "plans": self.source,
            "input_shape": list(self.input_shape),
            "params": count_parameters(self.network),
            "trainable_params": count_parameters(self.network, trainable_only=True),
            "flops": flops,
            "macs": flops / 2,
            "latency": [],
        }


def time_predictor(
    spec: NetworkSpec, input_folder: Path, device: torch.device, fold: int | str = 0, num_cases: int | None = None
) -> dict:
    """Seconds per case of ``nnUNetPredictor`` (sliding window, pre- and post-processing, export), TTA off and on.

    Uses the trained weights of ``model_folder/fold_<fold>`` when they exist, random weights otherwise (the timing
    does not depend on the weights). One untimed case first warms the predictor up.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    lists = case_lists(input_folder, spec.dataset_json["file_ending"])
    lists = lists[:num_cases] if num_cases else lists
    model_folder = spec.model_folder
    checkpoint = model_folder / f"fold_{fold}" / "checkpoint_final.pth" if model_folder else None
    with quiet():
        predictor = nnUNetPredictor(
            perform_everything_on_device=device.type == "cuda", device=device, verbose=False, allow_tqdm=False
        )
        if checkpoint is not None and checkpoint.is_file():
            try:  # safely first: nnU-Net's loader unpickles with weights_only=False
                load_checkpoint(checkpoint)
            except CheckpointError as e:
                raise ComparisonError(str(e)) from None
            predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(fold,))
            weights = str(checkpoint)
        else:
            manager = PlansManager(spec.plans)
            config = manager.get_configuration(spec.configuration)
            axes = tuple(range(len(config.patch_size)))
            network = spec.network.to("cpu")
            predictor.manual_initialization(
                network, manager, config, [network.state_dict()], spec.dataset_json, spec.trainer, axes
            )
            weights = "random (no trained checkpoint)"
    out: dict = {"cases": len(lists), "weights": weights, "input_folder": str(input_folder)}
    with tempfile.TemporaryDirectory() as tmp, quiet():
        predictor.use_mirroring = False
        predictor.predict_from_files_sequential(lists[:1], [str(Path(tmp) / "warmup")])
        for key, mirroring in (("seconds_per_case_no_tta", False), ("seconds_per_case_tta", True)):
            predictor.use_mirroring = mirroring
            targets = [str(Path(tmp) / f"case{i}") for i in range(len(lists))]
            start = time.perf_counter()
            predictor.predict_from_files_sequential(lists, targets)
            out[key] = (time.perf_counter() - start) / len(lists)
    out["mirror_axes"] = list(predictor.allowed_mirroring_axes or ())
    out.update(time_fast_path(predictor, lists, device))
    return out


def time_fast_path(predictor, lists: list[list[str]], device: torch.device) -> dict:
    """Images per second of ``nnunet_lite predict``'s pipeline (same weights and plans as ``predictor``), TTA off
    and on, next to ``nnUNetPredictor``'s; the first run of each setting also warms up."""
    from ..deploy.engines import engine_from_predictor
    from ..deploy.fast_predict import predict_folder_fast

    engine = engine_from_predictor(predictor, device=device.type)
    out = {}
    with tempfile.TemporaryDirectory() as tmp, quiet():
        inputs = Path(tmp) / "input"
        inputs.mkdir()
        for files in lists:
            for f in files:
                (inputs / Path(f).name).symlink_to(Path(f).resolve())
        for key, mirroring in (("fast_images_per_second_no_tta", False), ("fast_images_per_second_tta", True)):
            predict_folder_fast(engine, inputs, Path(tmp) / "warmup", use_mirroring=mirroring, progress=False,
                                overwrite=True)  # fmt: skip
            report = predict_folder_fast(engine, inputs, Path(tmp) / key, use_mirroring=mirroring, progress=False)
            out[key] = report.images_per_second
    return out


def profile_trainer(
    trainer: str,
    dataset: str | int | None = None,
    configuration: str | None = None,
    plans_name: str = DEFAULT_PLANS,
    shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    min_run_time: float = 1.0,
    latency: bool = True,
    memory: bool = True,
    input_folder: Path | None = None,
    fold: int | str = 0,
    num_cases: int | None = None,
    cpu_paths: Sequence[str] = (),
) -> dict:
    """Profiles the network ``trainer`` builds for a dataset's plans, or for ``shape`` (then ``num_classes``).

    Args:
        trainer: trainer class name (``nnUNetTrainer``, ``nnUNetTrainerLGMSNet``, ...).
        dataset: dataset ID or name whose preprocessed plans define the network; None with ``shape``.
        configuration: plans configuration (``2d``, ``3d_fullres``); defaults to ``2d``/``3d_fullres`` by shape.
        plans_name: plans identifier (``-p``).
        shape: explicit input shape ``(batch, channels, *spatial)``; with a dataset it overrides the patch size for
            FLOPs, latency and memory, without one the network uses nnU-Net's default topology for that shape.
        num_classes: output classes including background when no dataset is given.
        device: "cpu", "cuda" or "auto".
        threads: CPU threads for the latency measurement (default: torch's current setting).
        min_run_time: seconds of timed forward passes per latency figure.
        latency: measure forward latency; memory: measure peak forward memory.
        input_folder: images in nnU-Net raw format for the end-to-end predictor timing (needs a dataset).
        fold: fold whose trained weights the predictor uses if present.
        num_cases: predict at most this many cases of ``input_folder``.
        cpu_paths: deployment paths whose CPU latency is measured too, besides eager PyTorch: ``optimized``
            (``optimize_for_cpu_inference``), ``compiled`` (that + ``torch.compile``), ``onnxruntime`` (needs the
            ``export`` extra); see ``nnunet_lite.deploy.benchmark``.

    Returns:
        A JSON-serialisable dict (see ``format_profiles`` for the readable form).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_t = torch.device(device)
    trainer_class = find_trainer_class(trainer)
    model_folder = None
    if dataset is not None:
        name = dataset_name(dataset)
        plans, dataset_json, _ = load_plans(name, plans_name)
        configuration = configuration or "2d"
        network, input_shape = build_network(trainer_class, plans, configuration, dataset_json)
        source = f"{name} {plans_name} {configuration}"
        model_folder = require_env("nnUNet_results") / name / f"{trainer}__{plans_name}__{configuration}"
    elif shape is not None:
        if num_classes is None:
            raise ComparisonError("--shape without -d needs --num-classes (classes including background)")
        plans, dataset_json, configuration = default_plans_for_shape(shape, num_classes)
        network, input_shape = build_network(trainer_class, plans, configuration, dataset_json)
        source = "explicit shape, nnU-Net default topology"
    else:
        raise ComparisonError("give a dataset (-d ID -c CONFIG) or an input shape (--shape B C H W [D])")
    if input_folder is not None and dataset is None:
        raise ComparisonError("--input-folder needs a dataset (-d): the predictor uses its plans")
    if shape is not None:
        if int(shape[1]) != input_shape[1]:
            raise ComparisonError(f"--shape has {shape[1]} channels, the network takes {input_shape[1]}")
        input_shape = tuple(int(s) for s in shape)

    spec = NetworkSpec(trainer, network, tuple(input_shape), plans, configuration, dataset_json, source, model_folder)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = spec.counts()
        if latency:
            for autocast in [False, True] if device_t.type == "cuda" else [False]:
                measured = measure_latency(network, spec.input_shape, device_t, autocast, min_run_time=min_run_time)
                result["latency"].append(measured.as_dict())
            if cpu_paths:
                from ..deploy.benchmark import measure_variant_latency

                cpu_threads = threads or torch.get_num_threads()
                for path in cpu_paths:
                    measured = measure_variant_latency(
                        network.cpu(), path, spec.input_shape, cpu_threads, min_run_time=min_run_time
                    )
                    result["latency"].append(measured.as_dict())
        if memory:
            result["peak_memory_bytes"] = peak_forward_memory(network, spec.input_shape, device_t)
            result["peak_memory_method"] = (
                "torch.cuda.max_memory_allocated" if device_t.type == "cuda" else "torch.profiler profile_memory"
            )
        if input_folder is not None:
            result["predictor"] = time_predictor(spec, Path(input_folder), device_t, fold, num_cases)
    finally:
        torch.set_num_threads(previous_threads)
    return result


def environment() -> dict:
    from importlib.metadata import version

    info = {
        "torch": torch.__version__,
        "nnunetv2": version("nnunetv2"),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "flop_counter": "torch.utils.flop_counter.FlopCounterMode (FLOPs = 2 x MACs, attention counted)",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _plural(n: int) -> str:
    return "s" if n > 1 else ""


def format_profiles(profiles: list[dict]) -> str:
    """A markdown table of ``profile_trainer`` results."""

    def latency_key(lat: dict) -> tuple:
        return lat["device"], lat["precision"], lat["threads"], lat.get("path", "eager")

    latency_keys = []
    for p in profiles:
        for lat in p["latency"]:
            key = latency_key(lat)
            if key not in latency_keys:
                latency_keys.append(key)
    header = ["trainer", "input", "params", "trainable", "GFLOPs", "GMACs"]
    header += [
        f"forward {d} {prec}{'' if path == 'eager' else ' ' + path}{f' ({t} thread{_plural(t)})' if d == 'cpu' else ''}"
        " ms, median [IQR]"
        for d, prec, t, path in latency_keys
    ]
    has_mem = any("peak_memory_bytes" in p for p in profiles)
    has_pred = any("predictor" in p for p in profiles)
    if has_mem:
        header.append("peak forward MiB")
    if has_pred:
        header += ["predictor s/case, no TTA", "predictor s/case, TTA"]
        header += ["images/s nnUNetPredictor, no TTA", "images/s nnunet_lite predict, no TTA / TTA"]
    rows = []
    for p in profiles:
        row = [
            p["trainer"],
            "x".join(str(s) for s in p["input_shape"]),
            f"{p['params']:,}",
            f"{p['trainable_params']:,}",
            f"{p['flops'] / 1e9:.3f}",
            f"{p['macs'] / 1e9:.3f}",
        ]
        by_key = {latency_key(lat): lat for lat in p["latency"]}
        for key in latency_keys:
            lat = by_key.get(key)
            row.append(f"{lat['median_s'] * 1e3:.2f} [{lat['iqr_s'] * 1e3:.2f}]" if lat else "")
        if has_mem:
            row.append(f"{p['peak_memory_bytes'] / 2**20:.1f}" if "peak_memory_bytes" in p else "")
        if has_pred:
            pred = p.get("predictor")
            row += (
                [f"{pred['seconds_per_case_no_tta']:.3f}", f"{pred['seconds_per_case_tta']:.3f}"] if pred else ["", ""]
            )
            row += (
                [
                    f"{1 / pred['seconds_per_case_no_tta']:.1f}",
                    f"{pred['fast_images_per_second_no_tta']:.1f} / {pred['fast_images_per_second_tta']:.1f}",
                ]
                if pred and "fast_images_per_second_no_tta" in pred
                else ["", ""]
            )
        rows.append(row)
    return markdown_table(header, rows)


# --- the precisions of nnunet_lite export, for a trained model and nnU-Net's default network -----------------------

BASELINE_TRAINER = "nnUNetTrainer"
# the runtime each precision of ``nnunet_lite export --precision`` runs in by default (``nnunet_lite predict``), as
# ``nnunet_lite.deploy.benchmark`` variants with their labels; int8's depends on ``default_int8_engine``
PRECISION_VARIANTS = {"fp32": "onnxruntime", "bf16": "openvino_bf16", "int8": "openvino_int8"}
PRECISION_RUNTIMES = {"fp32": "onnxruntime", "bf16": "OpenVINO", "int8": "OpenVINO (NNCF QDQ)"}
INT8_ONNXRUNTIME = ("onnxruntime_int8", "onnxruntime (QDQ)")  # int8 where OpenVINO is not installed


def _precision_variant(precision: str) -> tuple[str, str]:
    """The benchmark variant and runtime label that time ``precision`` as ``nnunet_lite predict`` runs it by default:
    int8 in OpenVINO (NNCF's graph) where OpenVINO is installed, else onnxruntime (its own quantizer's graph)."""
    from ..deploy.engines import default_int8_engine

    if precision == "int8" and default_int8_engine() == "onnx":
        return INT8_ONNXRUNTIME
    return PRECISION_VARIANTS[precision], PRECISION_RUNTIMES[precision]


def _trained_weights(network: torch.nn.Module, folder: Path, fold: str, checkpoint_name: str) -> str:
    """Loads ``folder/fold_<fold>/<checkpoint_name>`` into ``network`` when it exists; what was used, in words."""
    checkpoint = folder / f"fold_{fold}" / checkpoint_name
    if not checkpoint.is_file():
        return "random (no trained checkpoint)"
    try:
        weights = load_checkpoint(checkpoint)["network_weights"]
    except CheckpointError as e:
        raise ComparisonError(str(e)) from None
    # nnU-Net saves the plain module's weights; strip a torch.compile prefix should one slip through
    weights = {k.removeprefix("_orig_mod."): v for k, v in weights.items()}
    try:
        network.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ComparisonError(f"{checkpoint} does not fit the network the plans build ({first})") from None
    return str(checkpoint)


def bf16_unavailable() -> str | None:
    """Why bf16 cannot be timed here (one line), or None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "bf16: OpenVINO is not installed (pip install openvino); not timed"
    from ..deploy.quantize import bf16_fallback_message

    message = bf16_fallback_message()
    return f"{message}; not timed" if message else None


def profile_precisions(
    trainers: Sequence[str],
    dataset: str | int,
    configuration: str = "2d",
    plans_name: str = DEFAULT_PLANS,
    fold: str = "0",
    *,
    checkpoint_name: str = "checkpoint_final.pth",
    precisions: Sequence[str] = ("fp32", "bf16", "int8"),
    shape: Sequence[int] | None = None,
    threads: int = 2,
    rounds: int = 5,
    block_seconds: float = 0.4,
    log=None,
) -> dict:
    """Forward latency of trained models at the precisions of ``nnunet_lite export --precision``, next to nnU-Net's
    default network (``nnUNetTrainer``) for the same plans, all timed in one process with interleaved rounds.

    Each network is loaded with ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/fold_<fold>`` weights
    where they exist (random weights otherwise, which time the same). Each precision runs where ``nnunet_lite predict``
    runs it by default: fp32 in onnxruntime, bf16 in OpenVINO, int8 (the QDQ quantization of the export, calibrated
    on random patches: latency does not depend on the calibration) in OpenVINO where it is installed (NNCF's graph),
    else in onnxruntime (its own quantizer's graph); bf16 is left out with its one-line reason where the CPU lacks
    AVX512_BF16/AMX-BF16 (it would run f32).

    Returns a JSON-serialisable dict: ``cpu`` (instruction sets), ``input_shape``, ``threads``, ``precisions``
    (per precision: its runtime, or ``skipped`` with the reason) and ``networks`` (per network: weights, params and
    per precision ``median_ms``, ``iqr_ms``, ``vs_default_eager_fp32`` = nnU-Net default eager fp32 / this,
    ``vs_default_same_precision`` = nnU-Net default at this precision and runtime / this); ``eager_fp32`` is PyTorch
    eager, what ``nnUNetv2_predict`` runs.
    """
    from ..deploy.benchmark import benchmark_latency, instruction_line
    from ..deploy.quantize import cpu_instruction_summary, int8_note

    unknown = [p for p in precisions if p not in PRECISION_VARIANTS]
    if unknown:
        raise ComparisonError(f"unknown precision {unknown[0]!r}: choose from {', '.join(PRECISION_VARIANTS)}")
    name = dataset_name(dataset)
    plans, dataset_json, _ = load_plans(name, plans_name)
    results = require_env("nnUNet_results") / name
    networks, weights, input_shape = {}, {}, None
    for trainer in [BASELINE_TRAINER, *[t for t in trainers if t != BASELINE_TRAINER]]:
        if trainer == BASELINE_TRAINER:  # imported directly: the lookup by name scans nnU-Net's trainer tree
            from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as trainer_class
        else:
            trainer_class = find_trainer_class(trainer)
        network, input_shape = build_network(trainer_class, plans, configuration, dataset_json)
        folder = results / f"{trainer}__{plans_name}__{configuration}"
        weights[trainer] = _trained_weights(network, folder, fold, checkpoint_name)
        networks[trainer] = network.eval()
    if shape is not None:
        if int(shape[1]) != input_shape[1]:
            raise ComparisonError(f"--shape has {shape[1]} channels, the network takes {input_shape[1]}")
        input_shape = tuple(int(s) for s in shape)
    skipped = {}
    if "bf16" in precisions:
        reason = bf16_unavailable()
        if reason:
            skipped["bf16"] = reason
    timed = [p for p in precisions if p not in skipped]
    chosen = {p: _precision_variant(p) for p in timed}
    variants = ["eager", *[chosen[p][0] for p in timed]]
    rows = benchmark_latency(
        networks, input_shape, threads=threads, variants=variants, rounds=rounds, block_seconds=block_seconds, log=log
    )
    by_key = {(r["network"], r["variant"]): r for r in rows}
    out_networks = []
    for trainer, network in networks.items():
        entry = {
            "trainer": trainer,
            "network": type(network).__name__,
            "params": count_parameters(network),
            "weights": weights[trainer],
        }
        for precision, variant in [("eager_fp32", "eager"), *[(p, chosen[p][0]) for p in timed]]:
            r = by_key[(trainer, variant)]
            entry[precision] = {
                "median_ms": r["median_ms"],
                "iqr_ms": r["iqr_ms"],
                "vs_default_eager_fp32": r["speedup"],
                "vs_default_same_precision": r["speedup_same_variant"],
            }
        out_networks.append(entry)
    summary = cpu_instruction_summary()
    return {
        "dataset": name,
        "configuration": configuration,
        "plans": plans_name,
        "fold": fold,
        "input_shape": list(input_shape),
        "threads": threads,
        "rounds": rounds,
        "baseline": f"{BASELINE_TRAINER} (nnU-Net's default network for these plans), PyTorch eager fp32",
        "cpu": {
            "avx2": summary["avx2"],
            "int8_dot_product": summary["int8_dot_product"],
            "bf16": summary["bf16"],
            "summary": instruction_line(),
            "int8_note": int8_note(),
        },
        "precisions": {p: {"skipped": skipped[p]} if p in skipped else {"runtime": chosen[p][1]} for p in precisions},
        "networks": out_networks,
    }


def format_precision_profile(report: dict) -> str:
    """The ``profile_precisions`` report as a caption and a markdown table: ``ms (x vs default eager fp32; x vs
    default at the same precision)`` per precision."""
    timed = [p for p, v in report["precisions"].items() if "skipped" not in v]
    header = ["trainer", "params", "eager fp32 ms (x)"]
    header += [f"{p} {report['precisions'][p]['runtime']} ms (x; same x)" for p in timed]
    rows = []
    for n in report["networks"]:
        eager = n["eager_fp32"]
        row = [n["trainer"], f"{n['params']:,}", f"{eager['median_ms']:.2f} ({eager['vs_default_eager_fp32']:.2f}x)"]
        for p in timed:
            v = n[p]
            row.append(
                f"{v['median_ms']:.2f} ({v['vs_default_eager_fp32']:.2f}x; {v['vs_default_same_precision']:.2f}x same)"
            )
        rows.append(row)
    shape = "x".join(str(s) for s in report["input_shape"])
    lines = [
        f"Forward latency by precision, {report['dataset']} {report['plans']} {report['configuration']} fold "
        f"{report['fold']}, input {shape}, {report['threads']} thread(s), median of {report['rounds']} interleaved "
        f"rounds; (x) = nnU-Net's default network in eager fp32 / this, (same x) = nnU-Net's default network at the "
        f"same precision and runtime / this.",
        f"CPU: {report['cpu']['summary']}",
    ]
    if report["cpu"].get("int8_note") and "int8" in timed:
        lines.append(report["cpu"]["int8_note"])
    lines += [v["skipped"] for v in report["precisions"].values() if "skipped" in v]
    lines += [f"{n['trainer']} weights: {n['weights']}" for n in report["networks"]]
    return "\n".join(lines) + "\n\n" + markdown_table(header, rows)
