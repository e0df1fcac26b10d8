"""A loaded study: the study file resolved into nnU-Net folders, trainer names and the list of trainings.

The Snakefile, ``study status`` and ``study report`` all read the study through this class, so the file targets
they look at are the same: ``nnUNet_results/<dataset>/<trainer>__<plans>__<config>/fold_N/checkpoint_final.pth``
and ``validation/summary.json``, exactly what ``nnUNetv2_train`` writes.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..nnunet_env import SHIM_FOLDER
from .model import SYNTHETIC_NAME, Dataset, Model, StudyError, StudyModel, load_study_model

PATH_VARS = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}
BUDGET_MODULE = "nnunet_lite_study_trainers"


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
        from ..comparison.nnunet_io import ComparisonError, find_trainer_class

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
        for trainer in dict.fromkeys([*self.spec.trainers, *self.spec.matched_trainers]):
            try:
                cls = find_trainer_class(trainer)
            except ComparisonError as e:
                raise StudyError(f"{self.file}: trainers: {e}") from e
            module = cls.__module__
            try:
                __import__(module)
            except ImportError as e:
                raise StudyError(
                    f"{self.file}: budget: trainer {trainer} lives in {module!r}, which is not importable by name "
                    "(a module of an nnUNet_extTrainer folder); install it as a package or drop the budget"
                ) from e
            name = self.trainer_name(trainer)
            lines.append(f"{name} = _budget({module!r}, {cls.__name__!r}, {name!r})")
        path = self.budget_folder / f"{BUDGET_MODULE}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:  # unchanged file: unchanged mtime
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return path
