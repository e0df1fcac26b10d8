"""The study file: one TOML file describing datasets x configurations x trainers x plans x folds.

Validated with pydantic (a dependency of nnU-Net already); every bad field is reported as one line naming the field
(``datasets[1].source: ...``). Relative paths are resolved against the study file's folder. Nothing here imports
torch or nnU-Net, so ``study status`` and the Snakefile's DAG construction stay fast.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SYNTHETIC_NAME = "SyntheticLesions"
TRAINER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# nnU-Net's configurations; a plans file may define more (custom names are checked against it at run time)
NNUNET_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
CONFIGURATION_NAME = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*$")  # the Snakefile's {cfg} wildcard


def did_you_mean(value: str, choices: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (difflib), or ``""`` when none is close."""
    choices = list(choices)
    close = [c for c in choices if c.lower() == value.lower()]  # "2D" -> "2d" (too short for difflib's ratio)
    close = close or difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def matched_plans_name(trainer: str) -> str:
    """``nnUNetPlans_matched_<arch>``: ``comparison.matched_plans.default_plans_name``'s rule, without its torch
    import (the study file is validated without torch)."""
    arch = trainer.removeprefix("nnUNetTrainer").strip("_").lower() or "nnunet"
    return f"nnUNetPlans_matched_{arch}"


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

    @field_validator("source", "split_file")
    @classmethod
    def _relative_to_study_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # relative paths mean the study file's folder (jobs run in work_dir, so they must not stay relative)
        base = (info.context or {}).get("base")
        return value if value is None or base is None else (Path(base) / value.expanduser()).resolve()

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
    # false: every fold's model predicts the target (compare averages each case over the folds before its tests);
    # true: nnU-Net's fold ensemble predicts it once (nnunet_lite zeroshot --ensemble), one prediction per case
    ensemble: bool = False


class Ensemble(_Strict):
    """Several trainers' test-set predictions averaged by nnUNetv2_ensemble (mean of the softmax .npz files)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9]+$")]
    trainers: list[str]
    configuration: str | None = None  # None: every configuration of the study


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
    ensemble: list[Ensemble] = []
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

    @field_validator("configurations")
    @classmethod
    def _configurations(cls, names: list[str]) -> list[str]:
        for name in names:
            if not CONFIGURATION_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a configuration name; nnU-Net's are {', '.join(NNUNET_CONFIGURATIONS)}"
                    + did_you_mean(name, NNUNET_CONFIGURATIONS)
                )
        if len(set(names)) != len(names):
            raise ValueError("a configuration is listed twice")
        if "3d_cascade_fullres" in names and "3d_lowres" not in names:
            raise ValueError("3d_cascade_fullres trains on 3d_lowres predictions: list 3d_lowres too")
        return names

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
            if pair.ensemble and len(self.folds) < 2:
                raise ValueError(
                    f"zeroshot[{i}].ensemble: a fold ensemble needs at least 2 folds (folds = {self.folds}); "
                    "set ensemble = false or list more folds"
                )
            if pair.source == pair.target:
                raise ValueError(
                    f"zeroshot[{i}]: source and target are both dataset {pair.source}; a zero-shot pair evaluates "
                    "on another dataset (the source's own test set is already in the report)"
                )
        if "3d_cascade_fullres" in self.configurations:
            # each cascade fold trains on the 3d_lowres predictions of its training cases, which the other folds'
            # validations write (nnU-Net: "all 5 folds of 3d_lowres must be trained first")
            if sorted(self.folds) != [0, 1, 2, 3, 4]:
                raise ValueError(
                    f"folds: 3d_cascade_fullres trains on the 3d_lowres predictions of all 5 folds (folds = "
                    f"{self.folds}); set folds = [0, 1, 2, 3, 4] or remove 3d_cascade_fullres"
                )
            if any(p != "default" for p in self.plans):
                raise ValueError(
                    "plans: 3d_cascade_fullres needs 3d_lowres trained with the same plans file, and plan-matched "
                    'plans are written per configuration; use plans = ["default"] for a cascade study'
                )
            if self.zeroshot or self.robustness:
                raise ValueError(
                    "3d_cascade_fullres: zero-shot and robustness runs predict without the 3d_lowres stage the cascade "
                    "needs; run them in a study without 3d_cascade_fullres"
                )
        self._check_ensembles()
        known = self.model_identifiers()
        if self.baseline is not None and self.baseline not in known:
            short = [k for k in known if not k.endswith("__nnUNetPlans")]
            raise ValueError(
                f"baseline: {self.baseline!r} is not one of the study's models"
                + (did_you_mean(self.baseline, known) or f"; choose one of {', '.join(short)}")
            )
        return self

    def _check_ensembles(self) -> None:
        names = [e.name for e in self.ensemble]
        for i, ens in enumerate(self.ensemble):
            where = f"ensemble[{i}]"
            if names.count(ens.name) > 1:
                raise ValueError(f"{where}.name: {ens.name!r} is used by two ensembles; give each its own name")
            if len(set(ens.trainers)) < 2:
                raise ValueError(
                    f"{where}.trainers: {ens.trainers} averages fewer than 2 different trainers; list at least 2 of "
                    f"trainers ({', '.join(self.trainers)})"
                )
            for t in ens.trainers:
                if t not in self.trainers:
                    raise ValueError(
                        f"{where}.trainers: {t!r} is not in trainers"
                        + (did_you_mean(t, self.trainers) or f"; choose from {', '.join(self.trainers)}")
                    )
            if "default" not in self.plans:
                raise ValueError(f"{where}: ensembles use the default plans; add 'default' to plans")
            if ens.configuration is not None and ens.configuration not in self.configurations:
                raise ValueError(
                    f"{where}.configuration: {ens.configuration!r} is not in configurations "
                    f"({', '.join(self.configurations)})" + did_you_mean(ens.configuration, self.configurations)
                )
        if self.ensemble and not any(d.train and d.test for d in self.datasets):
            raise ValueError(
                "ensemble: no training dataset has test = true, and ensembles average test-set predictions; "
                "set test = true on one or remove [[ensemble]]"
            )

    def model_identifiers(self) -> list[str]:
        """What ``baseline`` may name: ``TRAINER`` (default plans) or ``TRAINER__PLANS``, per configuration."""
        out = []
        if "default" in self.plans:
            out += [name for t in self.trainers for name in (t, f"{t}__nnUNetPlans")]
        for plans in self.plans:
            if plans != "default":
                model = Model("", plans)
                for cfg in self.configurations:
                    out += [f"{t}__{model.plans_identifier(cfg, self.configurations)}" for t in self.matched_trainers]
        return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Model:
    """One (trainer, plans) combination; trained on every (dataset, configuration, fold)."""

    trainer: str  # as written in the study file
    plans: str  # "default" or "matched:<trainer>"

    def plans_identifier(self, configuration: str, configurations: list[str]) -> str:
        if self.plans == "default":
            return "nnUNetPlans"
        name = matched_plans_name(self.plans.removeprefix("matched:"))
        # plan-matched writes one configuration per plans file
        return name if len(configurations) == 1 else f"{name}_{configuration}"


def _fields_at(loc: tuple) -> list[str]:
    """The field names of the table at ``loc`` (``("datasets", 0)`` -> Dataset's), for unknown-field suggestions."""
    model: type[BaseModel] | None = StudyModel
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        model, todo = None, [field.annotation] if field else []
        while todo:  # the BaseModel inside list[...], X | None, Annotated[...]
            t = todo.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
                break
            todo += typing.get_args(t)
    return list(model.model_fields) if model is not None else []


def format_validation_error(path: Path, error: ValidationError) -> str:
    errors = error.errors()
    lines, suggested = [], set()
    for e in errors:
        if e["type"] == "extra_forbidden":
            known = _fields_at(e["loc"][:-1])
            close = did_you_mean(str(e["loc"][-1]), known)
            e["msg"] += close or f" (known here: {', '.join(known)})"
            if close:  # a misspelt required field is one problem, not two ("epoch" given, "epochs" missing)
                suggested.add((*e["loc"][:-1], close.split("'")[1]))
    for e in errors:
        if e["type"] == "missing" and tuple(e["loc"]) in suggested:
            continue
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
        return StudyModel.model_validate(data, context={"base": path.resolve().parent})
    except ValidationError as e:
        raise StudyError(format_validation_error(path, e)) from e
