"""GPU check in one command: the ``gpu`` tests, forward latency fp32/fp16 at 256x256 and 128x128x128, and end-to-end
throughput of ``nnunet_lite predict`` on CUDA, and nnU-Net's training step (``profile --training``), for nnU-Net's
default network and the three lite networks.

    python scripts/gpu_check.py                 # everything, one table (a few minutes on one modern GPU)
    python scripts/gpu_check.py --skip-tests --compile --images 400

Networks are built as each trainer builds them for nnU-Net's default plans of the input shape (the ``nnunet_lite
profile --shape`` rule). Latency: CUDA events, median of ``--iterations`` calls after warm-up, fp32 and fp16
autocast (what ``nnUNetv2_predict`` uses on CUDA), optionally ``torch.compile``. End to end: a folder of 256x256 RGB
PNGs planned by nnU-Net, untrained checkpoints saved by the trainers (speed does not depend on the weights),
``nnunet_lite predict`` with the PyTorch engine on CUDA (fp16 autocast), TTA off and on, and onnxruntime's CUDA
provider when it is installed. Training: each trainer's iteration on that dataset (4 training cases) with nnU-Net's GPU
defaults, AMP and torch.compile (warm-up iterations absorb the compilation). Exit status: that of the tests (1 if
there is no CUDA device).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def run_gpu_tests(timeout: int) -> tuple[int, str]:
    """``pytest -m gpu`` on the test suite; (exit status, its summary line)."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return 1, f"pytest -m gpu: timed out after {timeout} s"
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    if proc.returncode not in (0, 5):  # 5: nothing selected
        print(proc.stdout[-4000:], file=sys.stderr)
    return (0 if proc.returncode == 5 else proc.returncode), (lines[-1] if lines else proc.stderr.strip()[-300:])


def forward_latency(network, shape, precision: str, iterations: int, compile: bool) -> float | str:
    """Median CUDA forward time in ms, or ``"OOM"``."""
    import torch

    net = network.cuda().eval()
    if compile:
        net = torch.compile(net)
    x = torch.randn(shape, device="cuda")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    times = []
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
            for _ in range(5):
                net(x)
            torch.cuda.synchronize()
            for _ in range(iterations):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                net(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
    except torch.OutOfMemoryError:
        return "OOM"
    finally:
        del net, x
        torch.cuda.empty_cache()
    return statistics.median(times)


def training_step_table(dataset: str) -> str:
    """``profile --training`` of every trainer on CUDA with nnU-Net's defaults there: AMP and torch.compile."""
    from benchmark_end_to_end import TRAINERS

    from nnunet_lite.comparison.training_profile import format_training_profiles, profile_training

    previous = os.environ.get("nnUNet_compile")
    os.environ["nnUNet_compile"] = "t"
    try:
        profiles = []
        for trainer in TRAINERS.values():
            profiles.append(profile_training(trainer, dataset, device="cuda", iterations=10, warmup=3, top=5))
            log(f"{trainer}: training step {1e3 * profiles[-1]['step_s']:.1f} ms")
    finally:
        if previous is None:
            del os.environ["nnUNet_compile"]
        else:
            os.environ["nnUNet_compile"] = previous
    return format_training_profiles(profiles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    parser.add_argument("--test-timeout", type=int, default=300, help="seconds for pytest -m gpu (300)")
    parser.add_argument("--iterations", type=int, default=30, help="timed forward calls per figure (30)")
    parser.add_argument("--images", type=int, default=200, help="images in the end-to-end folder (200)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (fp16) and use it end to end")
    parser.add_argument("--skip-training", action="store_true", help="do not time nnU-Net's training step")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; nothing measured", file=sys.stderr)
        return 1
    status, summary = (0, "skipped") if args.skip_tests else run_gpu_tests(args.test_timeout)
    log(f"pytest -m gpu: {summary}")

    from benchmark_end_to_end import DATASET_ID, TRAINERS, build_environment

    from nnunet_lite.comparison.nnunet_io import build_network, default_plans_for_shape, find_trainer_class
    from nnunet_lite.deploy.engines import OnnxEngine, TorchEngine
    from nnunet_lite.deploy.fast_predict import predict_folder_fast
    from nnunet_lite.nnunet_env import make_trainers_discoverable
    from nnunet_lite.profiling import count_parameters

    make_trainers_discoverable()
    torch.backends.cudnn.benchmark = True
    shapes = {"256x256": (1, 3, 256, 256), "128^3": (1, 1, 128, 128, 128)}
    precisions = ["fp32", "fp16"]
    rows = {name: {} for name in TRAINERS}
    for name, trainer_name in TRAINERS.items():
        trainer_class = find_trainer_class(trainer_name)
        for label, shape in shapes.items():
            plans, dataset_json, configuration = default_plans_for_shape(shape, 2)
            network, _ = build_network(trainer_class, plans, configuration, dataset_json)
            if label == "256x256":
                rows[name]["params"] = count_parameters(network)
            for precision in precisions:
                rows[name][(label, precision)] = forward_latency(network, shape, precision, args.iterations, False)
            if args.compile:
                rows[name][(label, "fp16 compiled")] = forward_latency(network, shape, "fp16", args.iterations, True)
            log(f"{name} {label}: " + ", ".join(f"{k[1]} {v}" for k, v in rows[name].items() if k[0] == label))

    try:
        import onnxruntime

        ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        ort_cuda = False
    with tempfile.TemporaryDirectory(prefix="nnunet_lite_gpu_") as tmp:
        env = build_environment(Path(tmp), args.images, 256, TRAINERS, export=ort_cuda)
        for name, model in env["models"].items():
            engine = TorchEngine.load(model["folder"], (0,), device="cuda", precision="fp16", compile=args.compile)
            predict_folder_fast(engine, env["images"], Path(tmp) / "warmup", progress=False, overwrite=True)
            for tta in (False, True):
                report = predict_folder_fast(
                    engine, env["images"], Path(tmp) / f"out_{name}_{tta}", use_mirroring=tta, reader_threads=4,
                    images_per_batch=32, progress=False,
                )  # fmt: skip
                rows[name][("e2e", tta)] = report.images_per_second
            if ort_cuda:
                engine = OnnxEngine.load(model["export"], device="cuda")
                report = predict_folder_fast(
                    engine, env["images"], Path(tmp) / f"ort_{name}", use_mirroring=False, reader_threads=4,
                    images_per_batch=32, progress=False,
                )  # fmt: skip
                rows[name][("ort", False)] = report.images_per_second
            log(f"{name}: end to end {rows[name][('e2e', False)]:.1f} images/s (TTA off)")
        training_table = "" if args.skip_training else training_step_table(f"Dataset{DATASET_ID}_SyntheticLesions")

    def cell(value) -> str:
        return value if isinstance(value, str) else f"{value:.2f}"

    columns = [(label, p) for label in shapes for p in precisions + (["fp16 compiled"] if args.compile else [])]
    header = ["network", "params"] + [f"{label} {p} ms" for label, p in columns]
    header += ["e2e img/s TTA off", "e2e img/s TTA on"] + (["ORT CUDA img/s TTA off"] if ort_cuda else [])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, row in rows.items():
        cells = [name, f"{row['params'] / 1e6:.3f} M"] + [cell(row[c]) for c in columns]
        cells += [f"{row[('e2e', False)]:.1f}", f"{row[('e2e', True)]:.1f}"]
        cells += [f"{row[('ort', False)]:.1f}"] if ort_cuda else []
        lines.append("| " + " | ".join(cells) + " |")
    device = torch.cuda.get_device_name(0)
    caption = (
        f"GPU check on {device} (torch {torch.__version__}, CUDA {torch.version.cuda}): forward = median of "
        f"{args.iterations} CUDA-event timed calls, batch 1; e2e = nnunet_lite predict (PyTorch engine, fp16 autocast"
        f"{', torch.compile' if args.compile else ''}) on {args.images} 256x256 RGB PNGs, 4 reader threads, 32 images "
        f"per batch. pytest -m gpu: {summary}. CPU cores: {os.cpu_count()}."
    )
    table = caption + "\n\n" + "\n".join(lines)
    if training_table:
        table += "\n\nTraining step with nnU-Net's GPU defaults (AMP, torch.compile), profile --training:\n\n"
        table += training_table
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
