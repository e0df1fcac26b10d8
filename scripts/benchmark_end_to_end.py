"""End-to-end CPU throughput (images/s, folder in, segmentations out) next to forward latency, for nnU-Net's default
network and the three lite networks, from one command.

Builds a temporary nnU-Net environment: a folder of 256x256 RGB PNGs (synthetic lesions), planned by
``nnUNetv2_plan_and_preprocess`` (patch 256x256, one window per image), a checkpoint per trainer written by the
trainer itself (untrained: speed does not depend on the weights) and its ONNX export (``nnunet_lite export``). Then,
per network:

- forward: onnxruntime latency of the exported graph at 1x3x256x256 (median of interleaved rounds), and the
  forward-only bound 1 / latency in images/s;
- ``nnunet_lite predict`` with the ONNX engine and with the PyTorch engine, TTA off and on, in this process
  (interleaved rounds; model loading is timed separately, as ``start-up``);
- with ``--openvino``, the same export on :class:`~nnunet_lite.deploy.engines.OpenVinoEngine` (``--engine openvino``);
- int8 (unless ``--fp32-only``): the export quantized as ``nnunet_lite export --precision int8`` quantizes it
  (calibrated on patches of the training cases; no accuracy guard, the checkpoints are untrained), each graph where it
  runs fastest: onnxruntime's quantizer (``--quantizer onnxruntime``) in onnxruntime and, with ``--openvino``, NNCF's
  (export's default) in OpenVINO (predict's default int8 engine); with ``--openvino`` also bf16 (OpenVINO's inference
  precision); each with its ratio to the network's own fp32 path and to nnU-Net's default network at the same
  precision;
- stock ``nnUNetv2_predict`` (its defaults: 3 preprocessing and 3 export processes; ``--disable_tta``) on the
  first ``--stock-images`` images, wall time of the command including its start-up.

    python scripts/benchmark_end_to_end.py                   # 2 threads, 100 images, prints the markdown table
    python scripts/benchmark_end_to_end.py --update-readme   # also rewrites the table in README.md
    python scripts/benchmark_end_to_end.py --images 40 --stock-images 10 --skip-torch   # quicker

Like scripts/benchmark_latency.py it sets ``OMP_WAIT_POLICY=PASSIVE`` (unless ``--spin``): spinning idle threads
are pathological on a shared machine. The caption records the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_latency import README, replace_between_markers  # noqa: E402

BEGIN_MARKER = "<!-- e2e-table:begin (scripts/benchmark_end_to_end.py --update-readme) -->"
END_MARKER = "<!-- e2e-table:end -->"
TRAINERS = {
    "nnU-Net default": "nnUNetTrainer",
    "AULUNet": "nnUNetTrainerAULUNet",
    "MedLiteNet": "nnUNetTrainerMedLiteNet",
    "LGMSNet": "nnUNetTrainerLGMSNet",
}
DATASET_ID = 961
LOW_LABELS = {
    "onnx_int8": "ONNX int8 (onnxruntime quantizer)",
    "openvino_int8": "OpenVINO int8 (NNCF; predict's default)",
    "openvino_bf16": "OpenVINO bf16",
}


def log(message: str) -> None:
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


def build_environment(root: Path, num_images: int, size: int, trainers: dict[str, str], export: bool = True) -> dict:
    """nnU-Net folders under ``root`` with the dataset, plans, one checkpoint and (``export``) one ONNX export per
    trainer."""
    for key in ("raw", "preprocessed", "results"):
        (root / key).mkdir(parents=True, exist_ok=True)
        os.environ[f"nnUNet_{key}"] = str(root / key)
    os.environ.setdefault("nnUNet_compile", "f")
    from nnunet_lite.nnunet_env import make_trainers_discoverable
    from nnunet_lite.synthetic import make_lesion_dataset_2d

    make_trainers_discoverable()
    bin_dir = Path(sys.executable).parent
    raw = root / "raw" / f"Dataset{DATASET_ID}_SyntheticLesions"
    planned = root / "preprocessed" / raw.name / "nnUNetPlans.json"
    if planned.is_file() and len(list((raw / "imagesTs").glob("*.png"))) >= num_images:  # --workdir: reuse
        log(f"reusing the dataset and plans in {root}")
        return {"images": raw / "imagesTs", "models": _models(root, trainers, export, bin_dir)}
    raw = make_lesion_dataset_2d(root / "raw", DATASET_ID, num_train=4, num_test=num_images, size=size, seed=1)
    subprocess.run(
        [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
        check=True,
        capture_output=True,
    )
    return {"images": raw / "imagesTs", "models": _models(root, trainers, export, bin_dir)}


def _models(root: Path, trainers: dict[str, str], export: bool, bin_dir: Path) -> dict:
    """One untrained checkpoint (and ONNX export) per trainer, made unless already in ``root``."""
    from nnunet_lite.synthetic import save_untrained_checkpoint

    models = {}
    for name, trainer_name in trainers.items():
        folder = root / "results" / f"Dataset{DATASET_ID}_SyntheticLesions" / f"{trainer_name}__nnUNetPlans__2d"
        export_folder = root / "exports" / trainer_name
        if _has_mirroring_checkpoint(folder) and (not export or export_folder.is_dir()):
            models[name] = {"trainer": trainer_name, "folder": folder, "export": export_folder}
            continue
        shutil.rmtree(export_folder, ignore_errors=True)  # an export of an older checkpoint
        folder = save_untrained_checkpoint(str(DATASET_ID), "2d", trainer_name)
        if export:
            subprocess.run(
                [str(bin_dir / "nnunet_lite"), "export", "-d", str(DATASET_ID), "-c", "2d", "-tr", trainer_name]
                + ["-f", "0", "-o", str(export_folder)],
                check=True,
                capture_output=True,
            )
        models[name] = {"trainer": trainer_name, "folder": folder, "export": export_folder}
        log(f"{name}: checkpoint and export ready")
    return models


def low_precision_export(export: Path, precision: str, quantizer: str = "onnxruntime") -> Path:
    """A copy of ``export`` at ``precision`` (int8: quantized by ``quantizer`` as ``nnunet_lite export --precision
    int8 --quantizer QUANTIZER`` does, on patches of the training cases; bf16: the recorded OpenVINO precision). No
    accuracy guard: untrained weights."""
    import json

    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_lite.deploy.constants import DEFAULT_CALIBRATION_PATCHES
    from nnunet_lite.deploy.quantize import INT8_MODEL_FILE, calibration_patches, quantize_int8, quantize_int8_nncf
    from nnunet_lite.deploy.sidecar import load_export

    target = export.parent / (
        f"{export.name}_int8_{quantizer}" if precision == "int8" else f"{export.name}_{precision}"
    )
    if (target / "model.json").is_file() and "precision" in json.loads((target / "model.json").read_text()):
        return target  # made by an earlier run (--workdir); a copy without its precision entry is made again
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(export, target)
    loaded = load_export(target)
    sidecar = loaded.sidecar
    entry = {"precision": precision, "fp32_file": "model.onnx", "note": "benchmark copy: untrained, no accuracy guard"}
    if precision == "int8":
        pm = loaded.plans_manager()
        cm = pm.get_configuration(loaded.configuration)
        preprocessed = Path(os.environ["nnUNet_preprocessed"]) / pm.dataset_name / cm.data_identifier
        cases = infer_dataset_class(str(preprocessed)).get_identifiers(str(preprocessed))
        patches = calibration_patches(pm, cm, loaded.dataset_json, cases, DEFAULT_CALIBRATION_PATCHES)
        quantize = quantize_int8_nncf if quantizer == "nncf" else quantize_int8
        entry["quantization"] = quantize(target / "model.onnx", target / INT8_MODEL_FILE, patches)
        sidecar["model"]["file"] = INT8_MODEL_FILE
    sidecar["precision"] = entry
    (target / "model.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return target


def _has_mirroring_checkpoint(folder: Path) -> bool:
    """A checkpoint exists and records mirroring axes (older versions of this script saved none, so the TTA columns
    ran without mirroring)."""
    from nnunet_lite.checkpoints import load_checkpoint

    path = folder / "fold_0" / "checkpoint_final.pth"
    return path.is_file() and bool(load_checkpoint(path).get("inference_allowed_mirroring_axes"))


def stock_predict(images: Path, output: Path, trainer: str) -> float:
    """Wall seconds of ``nnUNetv2_predict`` with its defaults (TTA off) on ``images``."""
    cmd = [str(Path(sys.executable).parent / "nnUNetv2_predict"), "-i", str(images), "-o", str(output)]
    cmd += ["-d", str(DATASET_ID), "-c", "2d", "-tr", trainer, "-f", "0", "-device", "cpu", "--disable_tta"]
    start = time.perf_counter()
    subprocess.run(cmd + ["--disable_progress_bar"], check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--images", type=int, default=100, help="images in the folder (default 100)")
    parser.add_argument("--stock-images", type=int, default=20, help="images for nnUNetv2_predict (default 20)")
    parser.add_argument("--size", type=int, default=256, help="image and patch size (default 256)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the in-process runs (2)")
    parser.add_argument("--skip-torch", action="store_true", help="leave out the PyTorch engine")
    parser.add_argument("--openvino", action="store_true", help="add the OpenVINO engine (pip install openvino)")
    parser.add_argument("--skip-stock", action="store_true", help="leave out nnUNetv2_predict")
    parser.add_argument(
        "--fp32-only", action="store_true", help="leave out the int8 (and, with --openvino, bf16) engines"
    )
    parser.add_argument("--spin", action="store_true", help="let idle threads spin (dedicated machines)")
    parser.add_argument("--workdir", default=None, help="keep the environment here (default: a temporary folder)")
    parser.add_argument("--update-readme", nargs="?", const=str(README), default=None, metavar="README")
    parser.add_argument("--output", default=None, help="also write the table (with its caption) to this file")
    args = parser.parse_args(argv)
    if not args.spin:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import statistics

    import torch

    from nnunet_lite.deploy.benchmark import environment_line, measure_latencies
    from nnunet_lite.deploy.engines import OnnxEngine, OpenVinoEngine, TorchEngine, load_export_engine
    from nnunet_lite.deploy.fast_predict import predict_folder_fast
    from nnunet_lite.deploy.onnx_runtime import create_session, run_session
    from nnunet_lite.deploy.sidecar import load_export

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="nnunet_lite_e2e_"))
    try:
        env = build_environment(workdir, args.images, args.size, TRAINERS)
        images, stock_images = workdir / f"images_{args.images}", workdir / f"stock_images_{args.stock_images}"
        for folder, count in ((images, args.images), (stock_images, args.stock_images)):
            folder.mkdir(exist_ok=True)
            for path in sorted(env["images"].glob("*.png"))[:count]:
                shutil.copy(path, folder / path.name)

        # forward latency of each exported graph at batch 1, interleaved
        x = torch.randn(1, 3, args.size, args.size).numpy()
        low = {}  # (name, precision) -> export folder at that precision
        if not args.fp32_only:
            for name, m in env["models"].items():
                low[(name, "int8")] = low_precision_export(m["export"], "int8", "onnxruntime")
                if args.openvino:
                    low[(name, "int8_nncf")] = low_precision_export(m["export"], "int8", "nncf")
                    low[(name, "bf16")] = low_precision_export(m["export"], "bf16")
        sessions = {
            name: create_session(load_export(m["export"]).model_path, args.threads, allow_spinning=args.spin)
            for name, m in env["models"].items()
        }
        sessions.update(
            {
                f"{name}\0int8": create_session(load_export(f).model_path, args.threads, allow_spinning=args.spin)
                for (name, precision), f in low.items()
                if precision == "int8"
            }
        )
        forward = measure_latencies(
            {name: (lambda s=s: run_session(s, x)) for name, s in sessions.items()}, args.threads, rounds=10
        )
        del sessions

        engines, startup = {}, {}
        for name, m in env["models"].items():
            start = time.perf_counter()
            engines[(name, "onnx")] = OnnxEngine.load(m["export"], threads=args.threads)
            startup[(name, "onnx")] = time.perf_counter() - start
            if args.openvino:
                start = time.perf_counter()
                engines[(name, "openvino")] = OpenVinoEngine.load(m["export"], threads=args.threads)
                startup[(name, "openvino")] = time.perf_counter() - start
            for (low_name, precision), folder in low.items():
                if low_name != name:
                    continue
                if precision == "int8":
                    engines[(name, "onnx_int8")] = load_export_engine(folder, engine="onnx", threads=args.threads)
                elif precision == "int8_nncf":
                    engines[(name, "openvino_int8")] = load_export_engine(
                        folder, engine="openvino", threads=args.threads
                    )
                else:
                    engines[(name, "openvino_bf16")] = load_export_engine(folder, threads=args.threads)
            if not args.skip_torch:
                start = time.perf_counter()
                engines[(name, "torch")] = TorchEngine.load(m["folder"], (0,), threads=args.threads)
                startup[(name, "torch")] = time.perf_counter() - start
        for (name, _), engine in engines.items():
            if not engine.mirror_axes:  # the TTA columns would time unmirrored prediction
                raise SystemExit(f"{name}: the model records no mirroring axes; delete {workdir} and run again")
        warmup = workdir / "warmup_image"  # first calls (session allocations, the Gaussian) are not throughput
        warmup.mkdir(exist_ok=True)
        first = sorted(images.glob("*.png"))[0]
        shutil.copy(first, warmup / first.name)
        for engine in engines.values():
            for tta in (False, True):
                predict_folder_fast(engine, warmup, workdir / "out" / "warmup", use_mirroring=tta, progress=False,
                                    overwrite=True)  # fmt: skip
        throughput: dict[tuple, list[float]] = {}
        stages: dict[tuple, dict] = {}
        for r in range(args.rounds):
            for (name, engine_name), engine in engines.items():
                for tta in (False, True):
                    out = workdir / "out" / f"{engine_name}_{name}_{tta}_{r}"
                    report = predict_folder_fast(engine, images, out, use_mirroring=tta, progress=False)
                    throughput.setdefault((name, engine_name, tta), []).append(report.images_per_second)
                    stages[(name, engine_name, tta)] = report.stage_seconds
                    shutil.rmtree(out)
                    log(f"round {r + 1}: {name} {engine_name} TTA {'on' if tta else 'off'}: "
                        f"{report.images_per_second:.1f} images/s")  # fmt: skip
        stock = {}
        if not args.skip_stock:
            for name, m in env["models"].items():
                seconds = stock_predict(stock_images, workdir / "out" / f"stock_{name}", m["trainer"])
                stock[name] = args.stock_images / seconds
                log(f"nnUNetv2_predict {name}: {stock[name]:.2f} images/s")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def ips(key: tuple) -> float:
        return statistics.median(throughput[key])

    low_engines = [k for k in ("onnx_int8", "openvino_int8", "openvino_bf16") if any(e[1] == k for e in engines)]
    lines = [
        "| network | forward ms (onnxruntime) | forward bound img/s | `nnunet_lite predict` ONNX img/s, TTA off "
        "(of bound) | ONNX, TTA on (of its bound) |"
        + (" OpenVINO img/s, TTA off | OpenVINO, TTA on |" if args.openvino else "")
        + (" PyTorch engine img/s, TTA off |" if not args.skip_torch else "")
        + (" stock `nnUNetv2_predict` img/s, TTA off | lite vs stock nnU-Net default |" if stock else "")
        + "".join(
            f" {LOW_LABELS[k]} img/s, TTA off (vs own fp32; vs nnU-Net default fp32; vs nnU-Net default same) |"
            for k in low_engines
        ),
        "|---|---:|---:|---:|---:|"
        + ("---:|---:|" if args.openvino else "")
        + "---:|" * len(low_engines)
        + ("---:|" if not args.skip_torch else "")
        + ("---:|---:|" if stock else ""),
    ]
    # nnU-Net's default network as users run it: stock nnUNetv2_predict when measured, else its fp32 ONNX path
    default_fp32 = stock["nnU-Net default"] if stock else ips(("nnU-Net default", "onnx", False))
    for name in env["models"]:
        ms = forward[name].median_s * 1e3
        bound = 1e3 / ms
        off, on = ips((name, "onnx", False)), ips((name, "onnx", True))
        int8_key = name + "\0int8"
        int8_ms = f" (int8 {forward[int8_key].median_s * 1e3:.1f})" if int8_key in forward else ""
        row = f"| {name} | {ms:.1f}{int8_ms} | {bound:.1f} | {off:.1f} ({off / bound:.0%}) |"
        row += f" {on:.1f} ({on / (bound / 4):.0%}) |"
        if args.openvino:
            ov_off, ov_on = ips((name, "openvino", False)), ips((name, "openvino", True))
            row += f" {ov_off:.1f} | {ov_on:.1f} |"
        if not args.skip_torch:
            row += f" {ips((name, 'torch', False)):.1f} |"
        if stock:
            ratio = "" if name == "nnU-Net default" else f"{off / stock['nnU-Net default']:.0f}x"
            row += f" {stock[name]:.2f} | {ratio} |"
        for k in low_engines:
            value = ips((name, k, False))
            own = ips((name, "openvino" if k.startswith("openvino") and args.openvino else "onnx", False))
            same = ips(("nnU-Net default", k, False)) if ("nnU-Net default", k, False) in throughput else float("nan")
            row += f" {value:.1f} ({value / own:.2f}x; {value / default_fp32:.1f}x; {value / same:.1f}x) |"
        lines.append(row)
    load_after = os.getloadavg()[0]
    loading = ", ".join(f"{k[0]} {v:.1f} s" for k, v in startup.items() if k[1] == "onnx")
    caption = (
        f"End to end on a folder of {args.images} {args.size}x{args.size} RGB PNGs (one window per image), "
        f"{args.threads} threads; forward = exported graph at 1x3x{args.size}x{args.size} in onnxruntime (median of 10 "
        f"interleaved rounds), bound = 1 / forward; `nnunet_lite predict`: median of {args.rounds} interleaved runs "
        f"after one warm-up image, model loading excluded (ONNX: {loading}); "
        + (
            f"stock `nnUNetv2_predict` (defaults -npp 3 -nps 3, --disable_tta) on {args.stock_images} images, "
            f"wall time including its start-up; "
            if stock
            else ""
        )
        + (
            "int8/bf16 columns: images/s with TTA off (ratio to the same network's fp32 path on the same runtime; "
            + (
                "ratio to nnU-Net's default network as users run it, stock `nnUNetv2_predict` fp32; "
                if stock
                else "ratio to nnU-Net's default network's fp32 ONNX path (stock nnUNetv2_predict skipped); "
            )
            + "ratio to nnU-Net's default network at the same precision and runtime); "
            if low_engines
            else ""
        )
        + f"TTA bound = bound / 4 (4 mirrored copies). Machine: {environment_line(args.threads)}, load average "
        f"{load_before:.1f} before and {load_after:.1f} after."
    )
    table = "\n".join(lines)
    print(caption + "\n\n" + table)
    if stages:
        print("\nStage seconds (summed over threads, they overlap), ONNX engine, TTA off:", file=sys.stderr)
        for key, value in stages.items():
            if key[1] == "onnx" and not key[2]:
                print(f"  {key[0]}: " + ", ".join(f"{k} {v:.2f}" for k, v in value.items()), file=sys.stderr)
    if args.update_readme:
        replace_between_markers(Path(args.update_readme), caption + "\n\n" + table, BEGIN_MARKER, END_MARKER)
    if args.output:
        Path(args.output).write_text(caption + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
