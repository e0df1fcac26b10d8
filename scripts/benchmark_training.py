"""Regenerates the training-step table of docs/training-speed.md: nnU-Net's training iteration of nnU-Net's default
trainer and the lite trainers on real Kvasir-SEG resized to 128x128, at nnU-Net's own plans (``profile --training``).

    python scripts/benchmark_training.py                          # the shared Kvasir-SEG sample, 2 threads, 2 workers
    python scripts/benchmark_training.py --kvasir /data/Kvasir-SEG --output table.md --json training.json
    python scripts/benchmark_training.py -tr nnUNetTrainer nnUNetTrainerAULUNet --iterations 3

Converts the dataset (``nnunet_lite convert kvasir --resize``) and plans it (``nnUNetv2_plan_and_preprocess -c 2d``)
once into ``--work-dir``, then profiles every trainer in this one process, the first trainer being the reference of
the ratio column. Like the latency benchmark it sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads do not spin on a
shared machine) unless ``--spin`` is given; the caption records the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KVASIR = ROOT.parent / "shared" / "datasets" / "kvasir-seg" / "Kvasir-SEG"
DEFAULT_TRAINERS = ["nnUNetTrainer", "nnUNetTrainerLGMSNet", "nnUNetTrainerMedLiteNet", "nnUNetTrainerAULUNet"]
DATASET_ID = 984


def _run(command: list[str]) -> None:
    print(f"[benchmark] {' '.join(command)}", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def prepare(kvasir: Path, work_dir: Path, size: int, workers: int) -> str:
    """Kvasir-SEG converted at ``size`` and planned for 2d in ``work_dir`` (kept for later runs); its dataset name."""
    if not kvasir.is_dir():
        raise SystemExit(f"--kvasir {kvasir}: no such folder (the official Kvasir-SEG download, or ../shared's sample)")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(work_dir / var)
        (work_dir / var).mkdir(parents=True, exist_ok=True)
    name = f"Dataset{DATASET_ID}_KvasirSEG"
    bin_dir = Path(sys.executable).parent
    if not (work_dir / "nnUNet_raw" / name / "dataset.json").is_file():
        _run([str(bin_dir / "nnunet_lite"), "convert", "kvasir", str(kvasir), "-d", str(DATASET_ID), "--resize",
              str(size), "--num-workers", str(workers)])  # fmt: skip
    if not (work_dir / "nnUNet_preprocessed" / name / "nnUNetPlans.json").is_file():
        _run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", str(workers),
              "-npfp", str(workers)])  # fmt: skip
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kvasir", type=Path, default=DEFAULT_KVASIR, help="Kvasir-SEG folder (default: the sample)")
    parser.add_argument("--work-dir", type=Path, default=Path("nnunet_lite_training_benchmark"))
    parser.add_argument("--size", type=int, default=128, help="images resized to SIZExSIZE (default 128)")
    parser.add_argument("-tr", dest="trainers", nargs="+", default=DEFAULT_TRAINERS, help="first one = reference")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per trainer (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--num-workers", type=int, default=2, help="augmentation workers (default 2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--spin", action="store_true", help="let idle threads spin (dedicated machines)")
    parser.add_argument("--output", type=Path, default=None, help="also write the table with its caption here")
    parser.add_argument("--json", type=Path, default=None, help="also write all measurements as JSON here")
    args = parser.parse_args(argv)

    if not args.spin:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before importing torch
    os.environ["nnUNet_n_proc_DA"] = str(args.num_workers)
    os.environ.setdefault("nnUNet_compile", "f")
    import json

    from nnunet_lite.comparison.profile import environment
    from nnunet_lite.comparison.training_profile import format_training_profiles, profile_training
    from nnunet_lite.deploy.benchmark import environment_line
    from nnunet_lite.nnunet_env import make_trainers_discoverable

    make_trainers_discoverable()
    name = prepare(args.kvasir.expanduser(), args.work_dir.resolve(), args.size, args.num_workers)
    cases = len(list((args.work_dir / "nnUNet_raw" / name / "labelsTr").glob("*.png")))
    profiles = []
    for trainer in args.trainers:
        print(f"[benchmark] profiling {trainer}", file=sys.stderr, flush=True)
        profiles.append(
            profile_training(
                trainer,
                name,
                device=args.device,
                iterations=args.iterations,
                warmup=args.warmup,
                threads=args.threads,
            )
        )
    caption = (
        f"Training iteration on Kvasir-SEG ({cases} training cases of {args.kvasir.name}) resized to "
        f"{args.size}x{args.size}, nnU-Net's 2d plans, fp32, `nnunet_lite profile --training` "
        f"(scripts/benchmark_training.py). Machine: {environment_line(args.threads)}."
    )
    table = format_training_profiles(profiles)
    print(caption + "\n\n" + table)
    if args.output:
        args.output.write_text(caption + "\n\n" + table + "\n")
    if args.json:
        args.json.write_text(
            json.dumps({"caption": caption, "environment": environment(), "profiles": profiles}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
