"""What a converter declares about its dataset (:class:`DatasetSpec`) and the options every conversion takes."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .discovery import require_source
from .splits import NNUNET_SPLIT, check_split_args

# options that only 2D converters take (3D volumes are copied unchanged)
_ONLY_2D = ("resize", "mask_threshold")


@dataclass(frozen=True)
class ConvertOptions:
    """The options of one conversion, built by ``nnunet_lite convert`` or by :meth:`DatasetSpec.options`.

    Attributes:
        dataset_id: nnU-Net dataset ID.
        split: one of the dataset's ``splits`` (where the official sets go, which splits_final.json is written).
        split_file: published split lists (folder of train/val lists, one list, or an nnU-Net splits_final.json).
        resize: 2D only: resize to NxN (images bilinear, masks nearest); None keeps native resolution.
        mask_threshold: 2D only: mask values > T are foreground; None requires binary masks.
        overwrite: replace an existing dataset folder.
        num_workers: worker processes (default ``$nnUNet_def_n_proc`` or min(8, CPUs)).
        output_root: where to write (default ``$nnUNet_raw``).
        verbose: print the summary.
        extra: the dataset's own options (:attr:`DatasetSpec.extra_options`), e.g. BUSI's ``include_normal``.
    """

    dataset_id: int
    split: str = NNUNET_SPLIT
    split_file: str | os.PathLike | None = None
    resize: int | None = None
    mask_threshold: int | None = None
    overwrite: bool = False
    num_workers: int | None = None
    output_root: str | os.PathLike | None = None
    verbose: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def split_setting(self) -> str:
        """What dataset.json records as the split."""
        return "split file" if self.split_file is not None else self.split


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: what ``nnunet_lite convert --list`` and the docs say about it, and its ``convert`` function.

    Attributes:
        name: the NAME of ``nnunet_lite convert NAME SOURCE``.
        folder_name: the part after ``DatasetXXX_`` of the nnU-Net folder.
        default_id: default nnU-Net dataset ID.
        title: human-readable name with the reference paper.
        layout: the folders and files SOURCE must contain (or contain one level down).
        source: where the official download is.
        license: licence note (read the one that comes with your download).
        role: "train" for datasets the papers train on, "zero-shot" for generalisation targets.
        reference: the paper to cite (dataset.json ``reference``).
        splits: ``--split`` choices and what each does; the first is the default.
        convert: ``convert(spec, source, options) -> dataset folder``: finds the cases and hands them to the engine.
        case_id: maps an ID as published split lists write it to a case ID (None: not a case).
        dimension: 2 (images, take ``resize`` and ``mask_threshold``) or 3 (NIfTI volumes).
        label_name: 2D: the name of label 1 in dataset.json.
        mask_threshold: 2D: the default mask rule (None: binary masks required).
        split_file_with: the splits a ``--split-file`` may be combined with.
        extra_options: the dataset's own options and their defaults (e.g. ``{"include_normal": False}``).
        add_arguments: adds the command-line flags of ``extra_options`` to the dataset's subcommand.
    """

    name: str
    folder_name: str
    default_id: int
    title: str
    layout: str
    source: str
    license: str
    role: str
    reference: str
    splits: Mapping[str, str]
    convert: Callable[[DatasetSpec, Path, ConvertOptions], Path]
    case_id: Callable[[str], str | None]
    dimension: int = 2
    label_name: str = ""
    mask_threshold: int | None = None
    split_file_with: tuple[str, ...] = (NNUNET_SPLIT,)
    extra_options: Mapping[str, Any] = field(default_factory=dict)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None

    def folder(self, dataset_id: int | None = None) -> str:
        """nnU-Net folder name, e.g. ``"Dataset503_BUSI"``."""
        return f"Dataset{self.default_id if dataset_id is None else dataset_id:03d}_{self.folder_name}"

    def options(self, dataset_id: int | None = None, **kwargs: Any) -> ConvertOptions:
        """:class:`ConvertOptions` with this dataset's defaults; unknown keywords raise TypeError, as for a function."""
        common = {f.name for f in fields(ConvertOptions)} - {"dataset_id", "extra"}
        if self.dimension != 2:
            common -= set(_ONLY_2D)
        unknown = sorted(set(kwargs) - common - set(self.extra_options))
        if unknown:
            raise TypeError(f"{self.name} conversion got an unexpected keyword argument {unknown[0]!r}")
        extra = {k: kwargs.pop(k, default) for k, default in self.extra_options.items()}
        kwargs.setdefault("split", next(iter(self.splits)))
        kwargs.setdefault("mask_threshold", self.mask_threshold)
        return ConvertOptions(self.default_id if dataset_id is None else dataset_id, extra=extra, **kwargs)

    def run(self, source: str | os.PathLike, options: ConvertOptions) -> Path:
        """Convert ``source`` (the download as distributed) to ``options.output_root/DatasetXXX_<folder_name>``.

        Raises:
            ConversionError: bad or incomplete input, or an existing target without ``overwrite``.
        """
        source = require_source(source)
        check_split_args(options.split, options.split_file, self.splits, self.split_file_with)
        return self.convert(self, source, options)

    def __call__(self, source: str | os.PathLike, dataset_id: int | None = None, **kwargs: Any) -> Path:
        """``spec(source, dataset_id, split=..., ...)``: :meth:`options` then :meth:`run`."""
        return self.run(source, self.options(dataset_id, **kwargs))
