"""``study report``: one markdown report for the whole study, with each dataset's ``compare`` output next to it.

Works on whatever exists: per (dataset, configuration) it runs nnunet_lite's comparison (the same code as
``nnunet_lite compare``) on the models that have results, adds the test-set predictions and zero-shot evaluations
the study produced and the network profiles, and builds the study table (rows: models, columns: datasets). Missing
trainings and folds are marked, never filled in.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from .study import Study


def _cell(row) -> str:
    mean, std = row["Dice_mean_cases"], row["Dice_std_cases"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "MISSING"
    text = f"{mean:.3f} ± {std:.3f}" if not math.isnan(std) else f"{mean:.3f}"
    p = row.get("p_holm")
    if p is not None and not (isinstance(p, float) and math.isnan(p)):
        text += f" (p={p:.2g})" if p < 0.001 else f" (p={p:.3f})"
    if row["folds_missing"]:
        text += f" MISSING fold {', '.join(row['folds_missing'])}"
    return text


def write_study_report(study: Study, n_resamples: int | None = None) -> Path:
    """Writes ``<work_dir>/report/study_report.md`` (+ one folder of compare output per dataset); returns its path."""
    from ..comparison.compare import run_compare
    from ..comparison.nnunet_io import ComparisonError, markdown_table
    from ..comparison.profile import format_profiles
    from ..comparison.report import write_report

    os.environ.update(study.environment())  # the budget trainers must be found to count their parameters
    spec = study.spec
    folds = [str(f) for f in spec.folds]
    out = study.work_dir / "report"
    tmp = study.work_dir / f".report.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainings = study.trainings()
    columns = sorted({(t.dataset_name, t.configuration) for t in trainings})
    models = list(dict.fromkeys((t.trainer, t.plans) for t in trainings))
    cells: dict[tuple[str, str], dict[tuple[str, str], str]] = {m: {} for m in models}
    sections = []
    for ds, cfg in columns:
        sub = f"{ds}_{cfg}"
        present = [m for m in models if (study.paths["nnUNet_results"] / ds / f"{m[0]}__{m[1]}__{cfg}").is_dir()]
        identifiers = [f"{tr}__{p}" for tr, p in present]
        tests = []
        labels = study.paths["nnUNet_raw"] / ds / "labelsTs"
        for tr, p in present:
            pred = study.work_dir / "predictions" / ds / f"{tr}__{p}__{cfg}"
            if pred.is_dir() and labels.is_dir() and any(pred.iterdir()):
                tests.append(f"{pred}={labels}")
        baseline = study.baseline if study.baseline in identifiers else None
        section = [f"## {ds}, configuration {cfg}", ""]
        try:
            if not identifiers:
                raise ComparisonError("no model has results yet")
            (tmp / sub).mkdir()
            comparison = run_compare(
                ds,
                cfg,
                trainers=identifiers,
                folds=folds,
                baseline=baseline,
                test_folders=tests,
                n_resamples=n_resamples or spec.report.bootstrap,
                evaluation_folder=tmp / sub / "test_evaluations",
            )
            write_report(comparison, tmp / sub, f"nnunet_lite study report {study.file.name}")
            body = (tmp / sub / "comparison.md").read_text().split("\n", 2)[2]  # drop compare's own title
            section += [body.rstrip(), "", f"![Dice vs parameters]({sub}/comparison.png)", ""]
            for m in present:
                label = m[0] if m[1] == "nnUNetPlans" else f"{m[0]} ({m[1]})"
                row = comparison.table[comparison.table["model"] == label]
                if len(row):
                    cells[m][(ds, cfg)] = _cell(row.iloc[0])
        except ComparisonError as e:
            section += [f"No comparison yet: {e}.", ""]
        for m in models:
            cells[m].setdefault((ds, cfg), "MISSING")
        profile_files = sorted((study.work_dir / "profile" / ds).glob(f"*__{cfg}.json"))
        profiles = [p for f in profile_files for p in json.loads(f.read_text())["profiles"]]
        if profiles:
            section += ["Network cost (nnunet_lite profile, batch 1 at the plans' patch size):", ""]
            section += [format_profiles(profiles), ""]
        sections.append("\n".join(section))

    header = ["model"] + [f"{ds} ({cfg})" if len(spec.configurations) > 1 else ds for ds, cfg in columns]
    rows = [[tr if p == "nnUNetPlans" else f"{tr} ({p})"] + [cells[(tr, p)][c] for c in columns] for tr, p in models]
    lines = [f"# Study {spec.name}", ""]
    lines += [
        f"Study file: `{study.file}`; folds {', '.join(folds)}; baseline {study.baseline or 'first model'}; "
        f"generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "Cross-validation Dice per case (mean ± std over the validation cases of all folds; p: Wilcoxon signed-rank "
        "against the baseline, Holm-corrected). MISSING: no results (or folds) yet; nothing is filled in.",
        "",
        markdown_table(header, rows),
        "",
    ]
    if spec.budget:
        b = spec.budget
        lines += [
            f"Budget: {b.epochs} epochs x {b.iterations_per_epoch} iterations "
            f"({b.val_iterations_per_epoch} validation iterations) per training: a smoke-test budget, not a result.",
            "",
        ]
    lines += sections
    (tmp / "study_report.md").write_text("\n".join(lines).rstrip() + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out / "study_report.md"
