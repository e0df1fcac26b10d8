"""Regenerates the README's CPU latency table: nnU-Net's default 2D network and the lite networks at 1x3x256x256.

Every network runs in every variant (PyTorch eager, optimised, optimised + torch.compile, onnxruntime) in this one
process, timed in interleaved rounds so that load changes on a shared machine affect all of them alike; the table
shows medians and the speed-up over nnU-Net's default network in eager mode (what ``nnUNetv2_predict`` runs).
The int8 (onnxruntime; with ``--openvino`` also OpenVINO) and bf16 (OpenVINO) columns of ``nnunet_lite export
--precision`` are measured for every network, nnU-Net's default included, and also give the speed-up over nnU-Net's
default network at the same precision; the caption names the CPU's int8/bf16 instructions (``--fp32-only`` drops
those columns).

    python scripts/benchmark_latency.py                     # 2 threads, all variants, prints the markdown table
    python scripts/benchmark_latency.py --update-readme       # rewrites the table in README.md in place
    python scripts/benchmark_latency.py --output latency.md --json latency.json
    python scripts/benchmark_latency.py --skip-compile      # no torch.compile (saves minutes of compiling)

Idle OpenMP threads spin by default, which is fastest on a dedicated machine and pathological on a busy shared one
(2-thread runs became 3-6x slower there); this script therefore sets ``OMP_WAIT_POLICY=PASSIVE`` (and turns off
onnxruntime's spinning) unless ``--spin`` is given. The caption records the setting and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN_MARKER = "<!-- latency-table:begin (scripts/benchmark_latency.py --update-readme) -->"
END_MARKER = "<!-- latency-table:end -->"


def replace_between_markers(path: Path, text: str, begin: str = BEGIN_MARKER, end: str = END_MARKER) -> None:
    """Replaces what lies between the marker lines ``begin`` and ``end`` of ``path`` with ``text`` (written to a
    temporary file, then renamed over the original, so an interrupted run leaves the README as it was)."""
    content = path.read_text()
    if content.count(begin) != 1 or content.count(end) != 1:
        raise SystemExit(f"{path}: needs exactly one '{begin}' line and one '{end}' line after it")
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every variant (default 2)")
    parser.add_argument("--shape", type=int, nargs="+", default=[1, 3, 256, 256], help="input shape (B C H W [D])")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    parser.add_argument("--block-seconds", type=float, default=0.5, help="length of one timed block (default 0.5)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile variant")
    parser.add_argument("--skip-onnxruntime", action="store_true", help="leave out the onnxruntime variant")
    parser.add_argument("--openvino", action="store_true", help="add an OpenVINO column (pip install openvino)")
    parser.add_argument(
        "--fp32-only",
        action="store_true",
        help="leave out the int8 (onnxruntime; OpenVINO with --openvino) and bf16 (OpenVINO, with --openvino) columns",
    )
    parser.add_argument("--spin", action="store_true", help="let idle threads spin (dedicated machines)")
    parser.add_argument(
        "--update-readme",
        nargs="?",
        const=str(README),
        default=None,
        metavar="README",
        help=f"replace the table between the {BEGIN_MARKER} / {END_MARKER} lines of README (default {README.name})",
    )
    parser.add_argument("--output", default=None, help="also write the table (with its caption) to this file")
    parser.add_argument("--json", default=None, help="also write all measurements as JSON to this file")
    args = parser.parse_args(argv)

    if not args.spin:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before importing torch
    import json

    from nnunet_lite.deploy.benchmark import (
        VARIANTS,
        benchmark_latency,
        default_networks_2d,
        environment_line,
        format_latency_table,
    )

    variants = [
        v
        for v in VARIANTS
        if not (v == "compiled" and args.skip_compile) and not (v == "onnxruntime" and args.skip_onnxruntime)
    ] + (["openvino"] if args.openvino else [])
    if not args.fp32_only:  # the precisions of nnunet_lite export --precision, for every network incl. nnU-Net's
        variants += ["onnxruntime_int8"] + (["openvino_int8", "openvino_bf16"] if args.openvino else [])
    rows = benchmark_latency(
        default_networks_2d(args.shape[1]),
        tuple(args.shape),
        threads=args.threads,
        variants=variants,
        rounds=args.rounds,
        block_seconds=args.block_seconds,
        allow_spinning=args.spin,
        log=lambda m: print(f"[benchmark] {m}", file=sys.stderr, flush=True),
    )
    shape = "x".join(map(str, args.shape))
    caption = (
        f"Forward latency at {shape} in ms: median of {args.rounds} interleaved rounds in one process; (x) = speed-up "
        f"over nnU-Net's default network in eager mode (ratio of the medians); int8/bf16 columns also give (same x) = "
        f"speed-up over nnU-Net's default network at the same precision and runtime (the fair ratio). Machine: "
        f"{environment_line(args.threads)}."
    )
    table = format_latency_table(rows)
    print(caption + "\n\n" + table)
    if args.update_readme:
        replace_between_markers(Path(args.update_readme), caption + "\n\n" + table)
        print(f"updated {args.update_readme}", file=sys.stderr)
    if args.output:
        with open(args.output, "w") as f:
            f.write(caption + "\n\n" + table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"caption": caption, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
