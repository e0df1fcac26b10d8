"""The papers' experiments as study files (``nnunet_lite study init --protocol NAME``).

Each protocol is two packaged templates: ``protocols/<name>.toml`` (datasets, zero-shot pairs, main comparison) and
``protocols/<name>_ablations.toml`` (the ablation trainers on the datasets the paper ablated on). They are two files
because a study applies every trainer to every dataset (no per-dataset trainer lists). Each ``source = "@<convert>@"``
line is filled with the dataset's folder under ``--data-root`` (the official archive's unpacked name), or with a
``downloads/<folder>`` placeholder and comments saying what to put there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

PROTOCOLS = ("aulunet", "lgmsnet", "medlitenet")

# the folder each official download unpacks to (what `nnunet_lite convert NAME SOURCE` accepts as SOURCE)
ARCHIVE_FOLDERS = {
    "isic2017": "ISIC2017",  # the ISIC-2017_* zips unpacked side by side
    "isic2018": "ISIC2018",  # the ISIC2018_Task1* zips unpacked side by side
    "busi": "Dataset_BUSI_with_GT",
    "kvasir": "Kvasir-SEG",
    "tn-scui": "TN-SCUI2020",
    "ph2": "PH2Dataset",
    "cvc-clinicdb": "CVC-ClinicDB",
    "bus-b": "BUS_Dataset_B",
}

_SOURCE_LINE = re.compile(r'^source = "@([a-z0-9-]+)@"(.*)$', re.MULTILINE)


@dataclass(frozen=True)
class ProtocolFiles:
    """The two files of a protocol: paths and their text."""

    main: Path
    ablations: Path
    main_text: str
    ablations_text: str


def ablations_path(main: Path) -> Path:
    """``paper.toml`` -> ``paper_ablations.toml`` (next to it)."""
    return main.with_name(f"{main.stem}_ablations{main.suffix or '.toml'}")


def _source_line(convert: str, rest: str, data_root: Path | None) -> str:
    from ..dataset_conversion import DATASETS

    spec = DATASETS[convert]
    folder = ARCHIVE_FOLDERS[convert]
    if data_root is not None:
        return f'source = "{(data_root / folder).as_posix()}"{rest}'
    layout = " ".join(spec.layout.split())
    return (
        f"# put the unpacked download ({spec.source}) in downloads/{folder}:\n"
        f"#   {layout}\n"
        f"# (nnunet_lite convert {convert} --help), or run study init again with --data-root\n"
        f'source = "downloads/{folder}"{rest}'
    )


def render(protocol: str, main: Path, data_root: Path | None = None) -> ProtocolFiles:
    """The protocol's two study files for ``main`` (``data_root``: the folder holding the unpacked downloads)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    root = None if data_root is None else Path(data_root).expanduser().resolve()
    ablations = ablations_path(Path(main))
    texts = []
    for suffix in ("", "_ablations"):
        text = files("nnunet_lite.study").joinpath("protocols", f"{protocol}{suffix}.toml").read_text()
        text = text.replace("@FILE@", Path(main).name).replace("@MAIN@", Path(main).name)
        text = text.replace("@ABLATIONS@", ablations.name)
        texts.append(_SOURCE_LINE.sub(lambda m: _source_line(m.group(1), m.group(2), root), text))
    return ProtocolFiles(Path(main), ablations, texts[0], texts[1])
