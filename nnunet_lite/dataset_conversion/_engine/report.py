"""What a conversion skipped, ignored or noticed, and the summaries printed after a 2D or 3D conversion."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .records import CaseResult, CaseResult3D, Options2D


LARGE_IMAGE_SIDE = 2048


# Files that come with the official downloads and are never cases; they are skipped without comment.
_QUIET_IGNORED = re.compile(r"^(license|attribution|readme)(\.txt|\.md)?$|^thumbs\.db$|^desktop\.ini$", re.IGNORECASE)


@dataclass
class Report:
    """What a conversion skipped, ignored, noticed; printed in the summary."""

    skipped: list[str] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)
    ignored_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ignore(self, path: Path, reason: str) -> None:
        """Count a file that is not part of any case (``LICENSE.txt`` and the like are not even counted)."""
        if _QUIET_IGNORED.match(path.name):
            return
        self.ignored[reason] += 1
        if len(self.ignored_examples[reason]) < 2:
            self.ignored_examples[reason].append(path.name)

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append(f"{what}: {reason}")

    def found_lines(self) -> list[str]:
        """Summary lines for what was skipped and ignored."""
        lines = [f"  skipped: {item}" for item in self.skipped]
        for reason, n in sorted(self.ignored.items()):
            lines.append(f"  ignored: {n} {reason} (e.g. {', '.join(self.ignored_examples[reason])})")
        return lines

    def closing_lines(self, splits: Sequence[dict] | None) -> list[str]:
        """The last summary lines: the split file written (or nnU-Net's folds), then notes and warnings."""
        if splits is not None:
            sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in splits)
            lines = [f"  splits_final.json: {len(splits)} fold(s), train/val {sizes}"]
        else:
            lines = ["  splits: none written; nnU-Net makes 5 random folds (seed 12345) when training"]
        return lines + [f"  note: {n}" for n in self.notes] + [f"  warning: {w}" for w in self.warnings]


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t.casefold() for t in re.split(r"(\d+)", text)]


def _size_text(sizes: Sequence[tuple[int, int]]) -> str:
    if not sizes:
        return "-"
    areas = [h * w for h, w in sizes]
    order = np.argsort(areas)
    lo, mid, hi = sizes[order[0]], sizes[order[len(order) // 2]], sizes[order[-1]]
    distinct = len(set(sizes))
    return f"min {lo[1]}x{lo[0]}, median {mid[1]}x{mid[0]}, max {hi[1]}x{hi[0]} (WxH; {distinct} distinct)"


def format_summary(
    target: Path,
    results: Sequence[CaseResult],
    report: Report,
    options: Options2D,
    label_name: str,
    splits: Sequence[dict] | None,
) -> str:
    lines = [f"wrote {target}"]
    for subset, folders in (("Tr", "imagesTr/labelsTr"), ("Ts", "imagesTs/labelsTs")):
        rs = [r for r in results if r.subset == subset]
        if not rs:
            continue
        parts = Counter(r.part for r in rs)
        groups = Counter(r.group for r in rs if r.group)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(parts.items()))
        if 0 < len(groups) <= 6:
            detail += "; " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items()))
        elif groups:
            detail += f"; {len(groups)} groups ({', '.join(sorted(groups)[:2])}, ...)"
        lines.append(f"  {folders}: {len(rs)} cases ({detail})")
    lines += report.found_lines()
    empty = [r.case_id for r in results if r.foreground == 0]
    lines.append(
        f"  labels: background 0, {label_name} 1; {len(results) - len(empty)} cases with {label_name}, "
        f"{len(empty)} empty" + (f" (e.g. {', '.join(empty[:3])})" if empty else "")
    )
    grey = sum(r.grey for r in results)
    lines.append(
        f"  images: 3 channels rgb_to_0_1; {grey} grey sources replicated, {len(results) - grey} colour; "
        f"source sizes {_size_text([r.size for r in results])}"
    )
    if options.resize:
        lines.append(f"  resized to {options.resize}x{options.resize} (images bilinear, masks nearest)")
    else:
        big = max((max(r.size) for r in results), default=0)
        if big > LARGE_IMAGE_SIDE:
            lines.append(
                f"  note: native resolution, largest side {big} px; nnU-Net's 2D plans follow the median size, "
                "consider --resize 256 to reproduce the papers' protocol"
            )
    by_digest: dict[str, list[str]] = defaultdict(list)
    for r in results:
        by_digest[r.digest].append(r.case_id)
    dups = [sorted(v) for v in by_digest.values() if len(v) > 1]
    if dups:
        shown = "; ".join(" = ".join(d) for d in sorted(dups)[:5])
        lines.append(
            f"  duplicates: {len(dups)} groups of identical images ({shown}{'; ...' if len(dups) > 5 else ''})"
        )
    return "\n".join(lines + report.closing_lines(splits))


def id_ranges(ids: Sequence[str]) -> str:
    """``["case_00001", "case_00002", "case_00003", "case_00007"]`` -> ``"case_00001-00003, case_00007"``."""
    parsed = []
    for cid in sorted(ids, key=_natural_key):
        m = re.fullmatch(r"(.*?)(\d+)", cid)
        parsed.append((m.group(1), m.group(2)) if m else (cid, None))
    parts: list[str] = []
    i = 0
    while i < len(parsed):
        prefix, digits = parsed[i]
        j = i
        while (
            digits is not None
            and j + 1 < len(parsed)
            and parsed[j + 1][0] == prefix
            and parsed[j + 1][1] is not None
            and int(parsed[j + 1][1]) == int(parsed[j][1]) + 1
        ):
            j += 1
        first = prefix + (digits or "")
        parts.append(first if j == i else f"{first}-{parsed[j][1]}")
        i = j + 1
    return ", ".join(parts)


def _range_text(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if np.isclose(lo, hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def format_summary_3d(
    target: Path,
    results: Sequence[CaseResult3D],
    report: Report,
    labels: dict[str, int | tuple[int, ...]],
    label_names: dict[int, str],
    regions_class_order: Sequence[int] | None,
    reader: str | None,
    splits: Sequence[dict] | None,
) -> str:
    lines = [f"wrote {target}"]
    for subset in sorted({r.subset for r in results}, key=lambda s: (s != "Tr", s != "Ts", s)):
        rs = [r for r in results if r.subset == subset]
        with_labels = any(r.labels_present is not None for r in rs)
        folders = f"images{subset}/labels{subset}" if with_labels else f"images{subset} (no labels)"
        parts = Counter(r.part for r in rs)
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(parts.items()))
        lines.append(f"  {folders}: {len(rs)} cases ({detail})")
    lines += report.found_lines()
    labelled = [r for r in results if r.labels_present is not None]
    counts = Counter(v for r in labelled for v in r.labels_present if v)
    values = "; ".join(f"{v} {label_names[v]}" for v in sorted(label_names))
    lines.append(f"  label values: 0 background; {values}")
    if regions_class_order is not None:
        regions = ", ".join(
            f"{k} {v if isinstance(v, int) else tuple(v)}" for k, v in labels.items() if k != "background"
        )
        lines.append(
            f"  region-based training: {regions}; regions_class_order {tuple(regions_class_order)} "
            "(one sigmoid output per region)"
        )
    present = ", ".join(f"{label_names[v]} {counts.get(v, 0)}" for v in sorted(label_names))
    empty = [r.case_id for r in labelled if not any(r.labels_present)]
    lines.append(
        f"  cases containing each label ({len(labelled)} labelled): {present}"
        + (f"; background only: {id_ranges(empty)}" if empty else "")
    )
    if results:
        sizes = sorted(r.size for r in results)
        orientations = Counter(r.orientation for r in results)
        spacing = np.array([r.spacing for r in results])
        lines.append(
            f"  images: 1 channel CT ({', '.join(sorted({r.pixel_type for r in results}))}); grid as stored "
            f"{'x'.join(map(str, sizes[0]))} to {'x'.join(map(str, sizes[-1]))}; spacing (mm, as stored) "
            + " x ".join(_range_text(spacing[:, k]) for k in range(spacing.shape[1]))
            + "; orientation "
            + ", ".join(f"{k} {v}" for k, v in orientations.most_common())
        )
    lines.append(
        f"  reader: {reader or 'SimpleITKIO (nnU-Net default for .nii.gz)'}"
        + ("; it reorients every volume to RAS when reading" if reader and "Reorient" in reader else "")
    )
    written = Counter(w for r in results for w in r.written)
    lines.append(
        f"  files: {written.get('copied', 0)} copied unchanged"
        + (f", {written['compressed']} uncompressed .nii gzip-compressed" if written.get("compressed") else "")
        + "; nothing resampled"
    )
    return "\n".join(lines + report.closing_lines(splits))
