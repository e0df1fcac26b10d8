"""The study file: one TOML file describing datasets x configurations x trainers x plans x folds.

Validated with pydantic (a dependency of nnU-Net already); every bad field is reported as one line naming the field
(``datasets[1].source: ...``). Relative paths are resolved against the study file's folder. Nothing here imports
torch or nnU-Net, so ``study status`` and the Snakefile's DAG construction stay fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SYNTHETIC_NAME = "SyntheticLesions"
TRAINER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StudyError(Exception):
    """A user-facing error about the study file or the study's folders (one line per problem)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Synthetic(_Strict):
    """The synthetic dermoscopy-like lesion dataset of ``nnunet_lite.synthetic`` (demo and tests)."""

    num_train: Annotated[int, Field(ge=2)] = 20
    num_test: Annotated[int, Field(ge=0)] = 6
    size: Annotated[int, Field(ge=32)] = 64
    seed: int = 0


class Dataset(_Strict):
    """One dataset: converted by the study (``convert``), generated (``synthetic``) or already in nnUNet_raw."""

    id: Annotated[int, Field(ge=1, le=999)]
    convert: str | None = None
    source: Path | None = None
    split: str | None = None
    split_file: Path | None = None
    options: dict[str, int | float | str | bool] = {}
    synthetic: Synthetic | None = None
    train: bool = True
    test: bool = True

    @field_validator("convert")
    @classmethod
    def _known_converter(cls, value: str | None) -> str | None:
        if value is not None:
            from ..dataset_conversion import DATASETS

            if value not in DATASETS:
                raise ValueError(f"unknown converter {value!r}; known: {', '.join(DATASETS)}")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> Dataset:
        if self.convert and self.synthetic:
            raise ValueError("give either convert (with source) or synthetic, not both")
        if self.convert and self.source is None:
            raise ValueError(f"convert = {self.convert!r} needs source = the folder of the official download")
        if not self.convert and (self.source or self.split or self.split_file or self.options):
            raise ValueError("source, split, split_file and options belong to convert = NAME")
        return self

    @property
    def kind(self) -> Literal["convert", "synthetic", "existing"]:
        return "convert" if self.convert else "synthetic" if self.synthetic else "existing"


class Resources(_Strict):
    """What one job of a step asks for; SLURM gets all of it, a local run uses cpus and gpus."""

    gpus: Annotated[int, Field(ge=0)] = 0
    cpus: Annotated[int, Field(ge=1)] = 1
    mem_mb: Annotated[int, Field(ge=1)] | None = None
    time: str | None = None
    partition: str | None = None
    slurm_extra: str | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            runtime_minutes(value)
        return value

    @property
    def runtime(self) -> int | None:
        return None if self.time is None else runtime_minutes(self.time)


def runtime_minutes(text: str) -> int:
    """``"90"``/``"90m"`` -> 90, ``"2h"`` -> 120, ``"1d"`` -> 1440, ``"01:30:00"`` and ``"1-00:00:00"`` (SLURM)."""
    text = str(text).strip()
    m = re.fullmatch(r"(\d+)\s*([mhd]?)", text)
    if m:
        return int(m.group(1)) * {"": 1, "m": 1, "h": 60, "d": 1440}[m.group(2)]
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d)(?::(\d\d))?", text)
    if m:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        return max(1, days * 1440 + hours * 60 + minutes + (seconds + 59) // 60)
    raise ValueError(f"time limit {text!r}: use minutes (90), 90m, 2h, 1d, HH:MM:SS or D-HH:MM:SS")


DEFAULT_RESOURCES = {
    "default": Resources(cpus=1),
    "preprocess": Resources(cpus=2),
    "train": Resources(gpus=1, cpus=4),
    "predict": Resources(gpus=1, cpus=2),
}


class StepResources(_Strict):
    default: Resources = DEFAULT_RESOURCES["default"]
    preprocess: Resources = DEFAULT_RESOURCES["preprocess"]
    train: Resources = DEFAULT_RESOURCES["train"]
    predict: Resources = DEFAULT_RESOURCES["predict"]


class Budget(_Strict):
    """Short training budgets (demo, tests, smoke runs): every trainer is wrapped in a subclass that sets them."""

    epochs: Annotated[int, Field(ge=1)]
    iterations_per_epoch: Annotated[int, Field(ge=1)] = 250
    val_iterations_per_epoch: Annotated[int, Field(ge=1)] = 50


class NnunetPaths(_Strict):
    raw: Path | None = None
    preprocessed: Path | None = None
    results: Path | None = None


class ZeroShot(_Strict):
    source: Annotated[int, Field(ge=1, le=999)]
    target: Annotated[int, Field(ge=1, le=999)]


class Report(_Strict):
    bootstrap: Annotated[int, Field(ge=100)] = 10_000
    latency: bool = True
    latency_seconds: Annotated[float, Field(gt=0)] = 2.0


class StudyModel(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    work_dir: Path = Path("study")
    nnunet: NnunetPaths = NnunetPaths()
    datasets: Annotated[list[Dataset], Field(min_length=1)]
    configurations: Annotated[list[str], Field(min_length=1)] = ["2d"]
    trainers: Annotated[list[str], Field(min_length=1)]
    plans: Annotated[list[str], Field(min_length=1)] = ["default"]
    matched_trainers: list[str] = ["nnUNetTrainer"]
    folds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [0, 1, 2, 3, 4]
    baseline: str | None = None
    zeroshot: list[ZeroShot] = []
    budget: Budget | None = None
    resources: StepResources = StepResources()
    env: dict[str, str] = {}
    report: Report = Report()
    robustness: str | None = None  # corruption suite of `nnunet_lite robustness` for every tested dataset
    figure: bool = False  # `nnunet_lite figure` (best / median / worst validation cases) per dataset

    @field_validator("robustness")
    @classmethod
    def _suite(cls, value: str | None) -> str | None:
        if value is not None:
            from ..robustness.corruptions import SUITES

            if value not in SUITES:
                raise ValueError(f"unknown corruption suite {value!r}; known: {', '.join(SUITES)}")
        return value

    @field_validator("trainers", "matched_trainers")
    @classmethod
    def _trainer_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not TRAINER_NAME.match(name) or "__" in name:
                raise ValueError(f"{name!r} is not a trainer class name")
        if len(set(names)) != len(names):
            raise ValueError("a trainer is listed twice")
        return names

    @field_validator("plans")
    @classmethod
    def _plans(cls, plans: list[str]) -> list[str]:
        for p in plans:
            if p != "default" and not (p.startswith("matched:") and TRAINER_NAME.match(p.removeprefix("matched:"))):
                raise ValueError(f"{p!r}: use 'default' or 'matched:<trainer>' (nnunet_lite plan-matched --match)")
        if len(set(plans)) != len(plans):
            raise ValueError("a plans entry is listed twice")
        return plans

    @field_validator("folds")
    @classmethod
    def _folds(cls, folds: list[int]) -> list[int]:
        if len(set(folds)) != len(folds):
            raise ValueError("a fold is listed twice")
        return folds

    @model_validator(mode="after")
    def _consistent(self) -> StudyModel:
        ids = [d.id for d in self.datasets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"datasets: dataset id listed twice ({ids})")
        if not any(d.train for d in self.datasets):
            raise ValueError("datasets: no dataset has train = true")
        for i, pair in enumerate(self.zeroshot):
            for side in ("source", "target"):
                if getattr(pair, side) not in ids:
                    raise ValueError(f"zeroshot[{i}].{side}: dataset {getattr(pair, side)} is not in datasets")
            if not next(d for d in self.datasets if d.id == pair.source).train:
                raise ValueError(f"zeroshot[{i}].source: dataset {pair.source} has train = false")
        return self


@dataclass(frozen=True)
class Model:
    """One (trainer, plans) combination; trained on every (dataset, configuration, fold)."""

    trainer: str  # as written in the study file
    plans: str  # "default" or "matched:<trainer>"

    def plans_identifier(self, configuration: str, configurations: list[str]) -> str:
        if self.plans == "default":
            return "nnUNetPlans"
        from ..comparison.matched_plans import default_plans_name

        name = default_plans_name("nnUNetPlans", self.plans.removeprefix("matched:"), None)
        # plan-matched writes one configuration per plans file
        return name if len(configurations) == 1 else f"{name}_{configuration}"


def format_validation_error(path: Path, error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        loc = ""
        for part in e["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {loc + ': ' if loc else ''}{message}")
    return "\n".join(lines)


def load_study_model(path: Path) -> StudyModel:
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file (write one with: nnunet_lite study init {path})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path}: not valid TOML: {e}") from e
    try:
        return StudyModel.model_validate(data)
    except ValidationError as e:
        raise StudyError(format_validation_error(path, e)) from e
