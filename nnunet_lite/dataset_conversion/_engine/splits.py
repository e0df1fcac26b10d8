"""Published split lists (nnU-Net splits_final.json or train/val text lists) and the --split arguments."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import ConversionError
from .report import Report, _natural_key


def read_id_list(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file (CRLF, BOM and any encoding tolerated)."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [line.strip().strip("\"'") for line in text.splitlines() if line.strip()]


def _split_list_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(train, val) lists of a split folder: ``*train*<k>.txt`` with ``*val*<k>.txt``, or train.txt with val.txt."""
    files = {p.name: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".csv", ".lst")}
    pairs = []
    for name in sorted(files, key=_natural_key):
        if "train" not in name.lower():
            continue
        i = name.lower().index("train")
        partner = next(
            (
                name[:i] + v + name[i + 5 :]
                for v in ("val", "valid", "validation")
                if name[:i] + v + name[i + 5 :] in files
            ),
            None,
        )
        if partner is None:
            raise ConversionError(
                "training list without validation list", files[name], hint=f"add {name[:i]}val{name[i + 5 :]}"
            )
        pairs.append((files[name], files[partner]))
    if not pairs:
        raise ConversionError(
            "no split lists found (expected *train*.txt with matching *val*.txt, or a splits_final.json)",
            folder,
        )
    return pairs


def load_split_file(
    path: str | os.PathLike, to_case_id: Callable[[str], str | None], case_ids: Iterable[str]
) -> list[dict[str, list[str]]]:
    """Read published split lists and map their IDs to this dataset's case IDs.

    Accepted:
        - an nnU-Net ``splits_final.json`` (list of ``{"train": [...], "val": [...]}``);
        - a folder with ``<x>train<k>.txt`` + ``<x>val<k>.txt`` pairs (CMUNeXt / LGMSNet) or ``train.txt`` + ``val.txt``
          (Kvasir-SEG MediaEval), one fold per pair, in natural order of the names;
        - one of those text files (its partner is found next to it).
    Lines are IDs as the publishers wrote them (``benign (12)``, ``ISIC_0000000``, ``1698``, file names with
    extensions, paths); ``to_case_id`` maps each to a case ID. A line holding several tokens (``image.jpg mask.jpg``)
    is matched by its first token that names a case.

    Raises:
        ConversionError: unreadable file, no lists, or IDs that are not cases of this dataset.
    """
    path = Path(path).expanduser()
    known = set(case_ids)
    if not path.exists():
        raise ConversionError("split file does not exist", path)
    if path.is_file() and path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
            folds_raw = [(path, path, list(f["train"]), list(f["val"])) for f in raw]
        except (ValueError, KeyError, TypeError) as e:
            raise ConversionError(
                f"not an nnU-Net splits file ({e})", path, hint='expected [{"train": [...], "val": [...]}, ...]'
            ) from e
    else:
        if path.is_dir():
            pairs = _split_list_pairs(path)
        else:
            lower = path.name.lower()
            if "train" not in lower and "val" not in lower:
                raise ConversionError(
                    "cannot tell whether this list is a training or a validation list",
                    path,
                    hint="name the files <x>train<k>.txt and <x>val<k>.txt, or pass their folder",
                )
            key = "train" if "train" in lower else "val"
            pairs = [pair for pair in _split_list_pairs(path.parent) if path in pair]
            if not pairs:
                raise ConversionError(f"no matching {'val' if key == 'train' else 'train'} list next to it", path)
        folds_raw = [(tr, va, read_id_list(tr), read_id_list(va)) for tr, va in pairs]

    def resolve(token: str) -> str | None:
        for candidate in [token] + re.split(r"[\s,;]+", token):
            cid = to_case_id(candidate) if candidate else None
            if cid is not None and cid in known:
                return cid
        return to_case_id(token)

    folds = []
    for train_src, val_src, train, val in folds_raw:
        fold = {}
        for key, tokens, src in (("train", train, train_src), ("val", val, val_src)):
            ids = [resolve(str(t)) for t in tokens]
            unknown = [str(t) for t, cid in zip(tokens, ids, strict=True) if cid is None or cid not in known]
            if unknown:
                raise ConversionError(
                    f"{len(unknown)} of {len(tokens)} IDs in the {key} list are not among the {len(known)} cases "
                    f"found in SOURCE, e.g. {', '.join(repr(u) for u in unknown[:3])}",
                    src,
                    hint="the split lists must belong to this dataset, and SOURCE must hold all cases they name",
                )
            fold[key] = ids
        folds.append(fold)
    return folds


def validate_splits(splits: Sequence[dict[str, list[str]]], training_ids: Iterable[str], report: Report) -> list[dict]:
    """Check folds against the training cases: no unknown IDs, no overlap, no empty side; sorted, de-duplicated."""
    training = set(training_ids)
    clean = []
    for k, fold in enumerate(splits):
        train, val = sorted(set(fold["train"])), sorted(set(fold["val"]))
        for key, ids in (("train", train), ("val", val)):
            unknown = [i for i in ids if i not in training]
            if unknown:
                raise ConversionError(
                    f"fold {k}: {len(unknown)} {key} IDs are not training cases of this dataset, e.g. {unknown[:3]}",
                    hint="check the split lists and that SOURCE holds every case they name",
                )
            if not ids:
                raise ConversionError(f"fold {k} has no {key} cases", hint="check the split lists")
        overlap = set(train) & set(val)
        if overlap:
            raise ConversionError(
                f"fold {k}: {len(overlap)} cases are in both train and val, e.g. {sorted(overlap)[:3]}"
            )
        uncovered = training - set(train) - set(val)
        if uncovered:
            report.warnings.append(
                f"fold {k}: {len(uncovered)} training cases are in neither train nor val (nnU-Net will not use "
                f"them in this fold), e.g. {sorted(uncovered)[:3]}"
            )
        clean.append({"train": train, "val": val})
    return clean


SPLITS_DIR = Path(__file__).resolve().parents[1] / "splits"


NNUNET_SPLIT = "nnunet"


def check_split_args(
    split: str,
    split_file: str | os.PathLike | None,
    choices: Iterable[str],
    with_file: Iterable[str] = (NNUNET_SPLIT,),
) -> None:
    """``split`` must be one of ``choices``; ``split_file`` only goes with the splits in ``with_file``."""
    choices = list(choices)
    if split not in choices:
        raise ConversionError(f"unknown split {split!r} for this dataset; choose one of: {', '.join(choices)}")
    if split_file is not None and split not in with_file:
        raise ConversionError(f"--split {split} and --split-file exclude each other; pass one of them")


def write_splits(folder: Path, splits: Sequence[dict[str, list[str]]]) -> Path:
    """``splits_final.json`` next to dataset.json; nnU-Net 2.8 copies it to nnUNet_preprocessed when planning."""
    path = folder / "splits_final.json"
    path.write_text(json.dumps(list(splits), indent=1) + "\n", encoding="utf-8")
    return path
