"""A loaded study: the study file resolved into nnU-Net folders, trainer names and the list of trainings.

The Snakefile, ``study status`` and ``study report`` all read the study through this class, so the file targets
they look at are the same: ``nnUNet_results/<dataset>/<trainer>__<plans>__<config>/fold_N/checkpoint_final.pth``
and ``validation/summary.json``, exactly what ``nnUNetv2_train`` writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..nnunet_env import SHIM_FOLDER
from .model import (
    NNUNET_CONFIGURATIONS,
    SYNTHETIC_NAME,
    Dataset,
    Model,
    StudyError,
    StudyModel,
    did_you_mean,
    load_study_model,
)

PATH_VARS = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}
BUDGET_MODULE = "nnunet_lite_study_trainers"
DEFAULT_FOLDS = 5  # nnU-Net's split when the dataset has no splits_final.json
IMAGE_2D_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg")  # nnU-Net's NaturalImage2DIO: these datasets plan only 2d


@dataclass(frozen=True)
class Training:
    """One nnUNetv2_train job."""

    dataset: Dataset
    dataset_name: str
    configuration: str
    model: Model
    trainer: str  # the class nnUNetv2_train gets (the budget subclass if the study has a budget)
    plans: str  # plans identifier (nnUNetPlans, nnUNetPlans_matched_<arch>)
    fold: int
    fold_dir: Path

    @property
    def model_folder(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    @property
    def key(self) -> str:
        return f"{self.dataset_name}/{self.model_folder}/fold_{self.fold}"


@dataclass(frozen=True)
class EnsembleJob:
    """One nnUNetv2_ensemble run: the members' test-set predictions (with probabilities) averaged."""

    name: str
    dataset_name: str
    configuration: str
    members: tuple[str, ...]  # model folder names (TRAINER__nnUNetPlans__CFG) under predictions/<dataset>/
    predictions: Path  # predictions/<dataset>/

    @property
    def folder(self) -> Path:
        return self.predictions / f"ensemble_{self.name}__{self.configuration}"

    @property
    def member_folders(self) -> list[Path]:
        return [self.predictions / m for m in self.members]


class Study:
    def __init__(self, file: Path, spec: StudyModel, environ: dict[str, str] | None = None) -> None:
        self.file = Path(file).resolve()
        self.spec = spec
        base = self.file.parent
        self.work_dir = (base / spec.work_dir).resolve()
        environ = dict(os.environ if environ is None else environ)
        self.paths: dict[str, Path] = {}
        for field, var in PATH_VARS.items():
            value = getattr(spec.nnunet, field)
            if value is not None:
                self.paths[var] = (base / value).resolve()
            elif environ.get(var):
                self.paths[var] = Path(environ[var]).resolve()
            else:
                raise StudyError(f"{self.file}: nnunet.{field} is not set and neither is ${var}; set one of them")
        self._inherited_ext = environ.get("nnUNet_extTrainer", "")
        self._names: dict[int, str] = {}

    @classmethod
    def load(cls, file: Path, environ: dict[str, str] | None = None) -> Study:
        return cls(file, load_study_model(file), environ)

    # ---- names and folders -------------------------------------------------------------------------------------
    def dataset_name(self, dataset: Dataset) -> str:
        """``DatasetXXX_Name``; for datasets that already exist, looked up like nnU-Net does (raw, preprocessed)."""
        if dataset.id not in self._names:
            if dataset.kind == "convert":
                from ..dataset_conversion import dataset_folder

                name = dataset_folder(dataset.convert, dataset.id)
            elif dataset.kind == "synthetic":
                name = f"Dataset{dataset.id:03d}_{SYNTHETIC_NAME}"
            else:
                found = sorted(
                    {
                        p.name
                        for var in ("nnUNet_raw", "nnUNet_preprocessed")
                        for p in self.paths[var].glob(f"Dataset{dataset.id:03d}_*")
                        if p.is_dir()
                    }
                )
                if len(found) != 1:
                    where = f"{self.paths['nnUNet_raw']} or {self.paths['nnUNet_preprocessed']}"
                    problem = "no" if not found else f"{len(found)} ({', '.join(found)})"
                    raise StudyError(
                        f"{self.file}: datasets id {dataset.id}: {problem} folder Dataset{dataset.id:03d}_* in "
                        f"{where}; give convert = NAME and source = FOLDER, or synthetic = {{...}}"
                    )
                name = found[0]
            self._names[dataset.id] = name
        return self._names[dataset.id]

    def dataset(self, dataset_id: int) -> Dataset:
        return next(d for d in self.spec.datasets if d.id == dataset_id)

    @property
    def models(self) -> list[Model]:
        spec = self.spec
        out = [Model(t, "default") for t in spec.trainers] if "default" in spec.plans else []
        out += [Model(t, p) for p in spec.plans if p != "default" for t in spec.matched_trainers]
        return out

    def trainer_name(self, trainer: str) -> str:
        budget = self.spec.budget
        return trainer if budget is None else f"{trainer}_{budget.epochs}ep{budget.iterations_per_epoch}it"

    def plans_identifier(self, model: Model, configuration: str) -> str:
        return model.plans_identifier(configuration, self.spec.configurations)

    def model_folder(self, dataset_name: str, configuration: str, model: Model) -> Path:
        folder = f"{self.trainer_name(model.trainer)}__{self.plans_identifier(model, configuration)}__{configuration}"
        return self.paths["nnUNet_results"] / dataset_name / folder

    def trainings(self) -> list[Training]:
        out = []
        for dataset in self.spec.datasets:
            if not dataset.train:
                continue
            name = self.dataset_name(dataset)
            for configuration in self.spec.configurations:
                for model in self.models:
                    folder = self.model_folder(name, configuration, model)
                    for fold in self.spec.folds:
                        out.append(
                            Training(
                                dataset,
                                name,
                                configuration,
                                model,
                                self.trainer_name(model.trainer),
                                self.plans_identifier(model, configuration),
                                fold,
                                folder / f"fold_{fold}",
                            )
                        )
        return out

    def ensembles(self) -> list[EnsembleJob]:
        """One nnUNetv2_ensemble job per ``[[ensemble]]``, trained dataset with a test set and configuration."""
        out = []
        for ens in self.spec.ensemble:
            for dataset in self.spec.datasets:
                if not (dataset.train and dataset.test):
                    continue
                name = self.dataset_name(dataset)
                for cfg in [ens.configuration] if ens.configuration else self.spec.configurations:
                    members = tuple(f"{self.trainer_name(t)}__nnUNetPlans__{cfg}" for t in ens.trainers)
                    out.append(EnsembleJob(ens.name, name, cfg, members, self.work_dir / "predictions" / name))
        return out

    @property
    def baseline(self) -> str | None:
        """The baseline as ``TRAINER__PLANS`` with the trained (budget) trainer name."""
        chosen = self.spec.baseline
        if chosen is None:
            chosen = "nnUNetTrainer" if "nnUNetTrainer" in self.spec.trainers else None
        if chosen is None:
            return None
        trainer, _, plans = chosen.partition("__")
        return f"{self.trainer_name(trainer)}__{plans or 'nnUNetPlans'}"

    # ---- environment of every job ------------------------------------------------------------------------------
    @property
    def budget_folder(self) -> Path:
        return self.work_dir / "nnunet_ext"

    def environment(self) -> dict[str, str]:
        """nnU-Net's folders, trainer discovery (nnunet_lite's shim, the budget subclasses, the user's own folders)
        and the study's extra variables; set for every job."""
        ext = [p for p in self._inherited_ext.split(os.pathsep) if p]
        for folder in (SHIM_FOLDER, self.budget_folder if self.spec.budget else None):
            if folder is not None and str(folder) not in ext:
                ext.append(str(folder))
        env = {var: str(path) for var, path in self.paths.items()}
        env["nnUNet_extTrainer"] = os.pathsep.join(ext)
        env.update(self.spec.env)
        return env

    def env_prefix(self) -> str:
        """``env VAR=value ...`` for shell rules (SLURM jobs do not see this process's environment changes)."""
        return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in self.environment().items())

    def write_budget_trainers(self) -> Path | None:
        """Writes the subclasses that give every study trainer the study's budget; returns the module's path.

        nnU-Net looks trainers up by class name only, so the budget has to be a class: ``<trainer>_<E>ep<I>it``,
        the way nnU-Net's own ``nnUNetTrainer_5epochs`` variants work. Each subclass imports its base by its
        real module, so it pickles like the base does.
        """
        budget = self.spec.budget
        if budget is None:
            return None
        lines = [
            '"""Generated by nnunet_lite study from ' + self.file.name + ': the study budget as trainer classes."""',
            "",
            "import importlib",
            "",
            "import torch",
            "",
            "",
            "def _budget(base_module, base_name, name):",
            "    base = getattr(importlib.import_module(base_module), base_name)",
            "",
            "    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device('cuda')):",
            "        base.__init__(self, plans, configuration, fold, dataset_json, device)",
            f"        self.num_epochs = {budget.epochs}",
            f"        self.num_iterations_per_epoch = {budget.iterations_per_epoch}",
            f"        self.num_val_iterations_per_epoch = {budget.val_iterations_per_epoch}",
            "        # a checkpoint_latest.pth at least every fifth of the run, so that --c resumes short budgets too",
            f"        self.save_every = min(self.save_every, {max(1, budget.epochs // 5)})",
            "",
            "    return type(name, (base,), {'__init__': __init__, '__module__': __name__, '__qualname__': name})",
            "",
            "",
        ]
        for trainer, cls in self._budget_bases().items():
            name = self.trainer_name(trainer)
            lines.append(f"{name} = _budget({cls.__module__!r}, {cls.__name__!r}, {name!r})")
        path = self.budget_folder / f"{BUDGET_MODULE}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:  # unchanged file: unchanged mtime
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return path

    def _budget_bases(self) -> dict[str, type]:
        """The trainer classes the budget subclasses derive from; each must be importable by its module's name."""
        out = {}
        with self._trainer_lookup():
            for trainer in dict.fromkeys([*self.spec.trainers, *self.spec.matched_trainers]):
                cls = out[trainer] = self._find_trainer(trainer, "trainers")
                try:
                    __import__(cls.__module__)
                except ImportError as e:
                    raise StudyError(
                        f"{self.file}: budget: trainer {trainer} lives in {cls.__module__!r}, which is not importable "
                        "by name (a module of an nnUNet_extTrainer folder); install it as a package or drop the budget"
                    ) from e
        return out

    # ---- checks before anything runs ---------------------------------------------------------------------------
    def check_runnable(self) -> None:
        """Refuses, with one line naming the field, what jobs would only fail on, or silently get wrong, later:
        an unusable work_dir, a missing download, a configuration the plans cannot have, folds the split does
        not have, unknown trainers. Reads files only; creates and writes nothing."""
        self._check_work_dir()
        for i, dataset in enumerate(self.spec.datasets):
            name = self.dataset_name(dataset)  # one line for an existing dataset that is not there
            self._check_source(i, dataset, name)
            if dataset.train:
                self._check_configurations(dataset, name)
                self._check_folds(dataset, name)
        self.check_trainers()

    def _fail(self, field: str, message: str) -> StudyError:
        return StudyError(f"{self.file}: {field}: {message}")

    def _check_work_dir(self) -> None:
        work = self.work_dir
        if work.exists() and not work.is_dir():
            raise self._fail("work_dir", f"{work} is a file, not a folder; name a folder (it is created if missing)")
        existing = work
        while not existing.exists():  # the folder that `mkdir -p` would create work_dir in
            existing = existing.parent
        if not existing.is_dir():
            raise self._fail("work_dir", f"{work} cannot be created: {existing} is a file; name a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            what = "is not writable" if existing == work else f"cannot be created: {existing} is not writable"
            raise self._fail("work_dir", f"{work} {what} by this user; choose a folder you can write to")

    def _check_source(self, i: int, dataset: Dataset, name: str) -> None:
        if dataset.kind != "convert" or (self.paths["nnUNet_raw"] / name / "dataset.json").is_file():
            return  # nothing to convert (a converted dataset no longer needs its download)
        for field in ("source", "split_file"):
            path = getattr(dataset, field)
            if path is not None and not path.exists():
                kind = "the official download" if field == "source" else "the split lists"
                raise self._fail(
                    f"datasets[{i}].{field}",
                    f"{path} does not exist; give the folder of {kind} (see nnunet_lite "
                    f"convert {dataset.convert} --help), relative paths meaning the study file's folder",
                )

    def _dimension(self, dataset: Dataset, name: str) -> int | None:
        if dataset.kind == "synthetic":
            return 2
        if dataset.kind == "convert":
            from ..dataset_conversion import DATASETS

            return DATASETS[dataset.convert].dimension
        dataset_json = self.paths["nnUNet_raw"] / name / "dataset.json"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return 2 if json.loads(dataset_json.read_text()).get("file_ending") in IMAGE_2D_ENDINGS else None
        return None

    def _check_configurations(self, dataset: Dataset, name: str) -> None:
        plans = self.paths["nnUNet_preprocessed"] / name / "nnUNetPlans.json"
        if plans.is_file():
            # the plans that exist decide: custom configurations defined there are fine, missing ones never appear
            try:
                available = list(json.loads(plans.read_text())["configurations"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise self._fail("configurations", f"cannot read {plans} ({e}); delete it to plan again") from e
            where = f"{plans} has {', '.join(available)}"
        elif self._dimension(dataset, name) == 2:
            available, where = ["2d"], f"{name} is 2D: nnU-Net plans only 2d for it"
        else:
            available = list(NNUNET_CONFIGURATIONS)
            where = f"nnU-Net's configurations are {', '.join(available)} ({name} has no nnUNetPlans.json yet)"
        for cfg in self.spec.configurations:
            if cfg not in available:
                hint = did_you_mean(cfg, available) or f"; use {' or '.join(available)}"
                raise self._fail("configurations", f"{cfg!r} cannot be trained: {where}{hint}")

    def fold_count(self, dataset: Dataset, name: str) -> tuple[int | None, str]:
        """How many folds the dataset's split has, and where that comes from; None if only its conversion knows."""
        for var in ("nnUNet_preprocessed", "nnUNet_raw"):  # nnU-Net copies raw's splits_final.json when planning
            path = self.paths[var] / name / "splits_final.json"
            if path.is_file():
                try:
                    splits = json.loads(path.read_text())
                except (OSError, ValueError) as e:
                    raise self._fail("folds", f"cannot read {path} ({e}); fix or delete it") from e
                if not isinstance(splits, list) or not splits:
                    raise self._fail("folds", f"{path} is not a list of folds; fix or delete it")
                return len(splits), str(path)
        if dataset.kind == "convert":
            from ..dataset_conversion import DATASETS

            split = dataset.split or next(iter(DATASETS[dataset.convert].splits))
            if dataset.split_file is not None or split != "nnunet":
                return None, f"split {split!r}"  # the converter writes splits_final.json
        return DEFAULT_FOLDS, "nnU-Net's default split (no splits_final.json)"

    def _check_folds(self, dataset: Dataset, name: str) -> None:
        count, source = self.fold_count(dataset, name)
        if count is None:
            return
        for fold in self.spec.folds:
            if fold >= count:
                raise self._fail(
                    "folds",
                    f"fold {fold} does not exist for {name}: {source} has {count} fold{'s' * (count > 1)} "
                    f"(0-{count - 1}); nnU-Net would train a random 80:20 split instead; use folds below {count}",
                )

    @contextlib.contextmanager
    def _trainer_lookup(self) -> Iterator[None]:
        """nnU-Net's trainer lookup as the jobs will see it (the study's nnUNet_extTrainer), quietly."""
        from ..comparison.nnunet_io import quiet

        before = os.environ.get("nnUNet_extTrainer")
        os.environ["nnUNet_extTrainer"] = self.environment()["nnUNet_extTrainer"]
        try:
            with quiet(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # import-time deprecation warnings of nnU-Net's trainer tree
                yield
        finally:
            if before is None:
                os.environ.pop("nnUNet_extTrainer", None)
            else:
                os.environ["nnUNet_extTrainer"] = before

    def _find_trainer(self, name: str, field: str) -> type:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        try:
            return recursive_find_trainer_class_by_name(name)
        except (RuntimeError, AssertionError) as e:
            why = "is not an nnUNetTrainer subclass" if isinstance(e, AssertionError) else "is not a trainer"
            where = f"nnUNet_extTrainer={os.environ['nnUNet_extTrainer']!r}"
            hint = did_you_mean(name, trainer_names()) or f"; add the folder of its module to {where}"
            raise self._fail(
                field, f"{name!r} {why} that nnU-Net can find (its own, nnunet_lite's or yours){hint}"
            ) from e

    def check_trainers(self) -> None:
        """Every trainer of the study exists where nnUNetv2_train will look (imports nnU-Net's trainer tree)."""
        spec = self.spec
        with self._trainer_lookup():
            for field in ("trainers", "matched_trainers"):
                for i, name in enumerate(getattr(spec, field)):
                    if field == "trainers" or any(p != "default" for p in spec.plans):
                        self._find_trainer(name, f"{field}[{i}]")
            for i, plans in enumerate(spec.plans):
                if plans != "default":
                    self._find_trainer(plans.removeprefix("matched:"), f"plans[{i}]")
        if spec.budget is not None:
            self._budget_bases()


def trainer_names() -> list[str]:
    """Every trainer class name nnU-Net's lookup can find: its own trainer tree, then each nnUNet_extTrainer folder
    (walked the way ``recursive_find_python_class`` walks them). For suggestions only."""
    import importlib
    import pkgutil

    import nnunetv2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_class_by_name import (
        temporarily_cleanup_imports_from_path,
        temporarily_extend_syspath,
    )

    def walk(folder: str, module: str | None) -> set[str]:
        names = set()
        for _, name, is_package in pkgutil.iter_modules([folder]):
            dotted = name if module is None else f"{module}.{name}"
            if is_package:
                names |= walk(os.path.join(folder, name), dotted)
                continue
            try:
                imported = importlib.import_module(dotted)
            except Exception:  # nnU-Net's own lookup reports broken modules; here we only collect names
                continue
            names |= {n for n, v in vars(imported).items() if isinstance(v, type) and issubclass(v, nnUNetTrainer)}
        return names

    names = walk(os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), "nnunetv2.training.nnUNetTrainer")
    for path in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep):
        if path.strip() and os.path.isdir(path):
            with temporarily_extend_syspath(path), temporarily_cleanup_imports_from_path(path):
                names |= walk(path, None)
    return sorted(names)
