"""The example figure of the dermoscopy artefacts in docs/robustness.md: hair, ruler and ink_marker at severities
1, 3 and 5 on one image, with the share of changed pixels (the same code path as ``robustness make``).

    python -m nnunet_lite.robustness.artefact_figure IMAGE OUT.png [--width 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from .corruptions import case_rng, get_suite

ARTEFACTS = ("hair", "ruler", "ink_marker")
SHOWN = (1, 3, 5)


def artefact_figure(image_file: Path, output: Path, width: int = 300, seed: int = 0) -> list[float]:
    """Writes a 3 x 4 grid (clean, severities 1, 3, 5 per artefact) as a 256-colour PNG; returns the changed shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    with Image.open(image_file) as pil:
        pil = pil.convert("RGB")
        pil = pil.resize((width, round(pil.height * width / pil.width)), Image.LANCZOS)
        image = np.asarray(pil)
    x = image / 255.0
    h, w = image.shape[:2]
    fig, axes = plt.subplots(
        len(ARTEFACTS), 1 + len(SHOWN), figsize=(2.3 * (1 + len(SHOWN)), 2.3 * h / w * len(ARTEFACTS) + 0.5)
    )
    shares = []
    for row, corruption in zip(axes, get_suite("dermoscopy", list(ARTEFACTS)), strict=True):
        row[0].imshow(image)
        row[0].set_ylabel(corruption.name, fontsize=10)
        row[0].set_title("clean", fontsize=9)
        for ax, severity in zip(row[1:], SHOWN, strict=True):
            out, _ = corruption.apply_with_mask(x, severity, case_rng(seed, corruption.name, image_file.stem))
            out = np.round(out * 255).astype(np.uint8)
            share = float(np.any(out != image, axis=-1).mean())
            shares.append(share)
            ax.imshow(out)
            ax.set_title(f"severity {severity}: {100 * share:.1f} % of pixels", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Dermoscopy artefacts ({image_file.name}, seed {seed})", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    buffer.seek(0)
    # a 256-colour palette keeps the photographs' PNG small enough for the repository (< 400 KB)
    Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(output, optimize=True)
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="an RGB dermoscopy image (e.g. a PH2 .bmp)")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=300, help="resize the image to this width first (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, as in robustness make (default 0)")
    args = parser.parse_args(argv)
    if not args.image.is_file():
        print(f"artefact_figure: {args.image} not found; give an RGB dermoscopy image", file=sys.stderr)
        return 1
    shares = artefact_figure(args.image, args.output, args.width, args.seed)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB); changed pixels: {np.round(shares, 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
