"""``study report``: one markdown report for the whole study, with each dataset's ``compare`` output next to it.

Works on whatever exists: per (dataset, configuration) it runs nnunet_lite's comparison (the same code as
``nnunet_lite compare``) on the models that have results, adds the test-set predictions and zero-shot evaluations
the study produced and the network profiles, and builds the study table (rows: models, columns: datasets). Missing
trainings and folds are marked, never filled in; a baseline without results is said so, never replaced by another model.

The report step owns ``report/study_report.md`` and the per-dataset compare folders ``report/<dataset>_<config>/``
only: each is built in a temporary folder beside them and renamed into place. Other steps write into ``report/`` too
(``report/robustness/``, ``report/figures/``), and those are never touched here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..atomic import atomic_write_text, move_into_place
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
    """Writes ``<work_dir>/report/study_report.md`` (+ one folder of compare output per dataset); returns its path.

    Only those items are replaced, each atomically (built in a temporary sibling folder, then renamed into place);
    everything else under ``report/`` (robustness reports, figures) stays as it is.
    """
    os.environ.update(study.environment())  # the budget trainers must be found to count their parameters
    out = study.work_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".study_report.", suffix=".partial", dir=out))
    try:
        text, folders = _build(study, tmp, n_resamples)
        for sub, written in folders.items():
            if written:
                move_into_place(tmp / sub, out / sub)
            elif (out / sub).is_dir():  # no comparison any more: an old one would no longer match the report
                shutil.rmtree(out / sub)
        atomic_write_text(out / "study_report.md", text)  # last: when it appears, the folders it links are in place
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "study_report.md"


def _baseline_for(study: Study, identifiers: list[str]) -> tuple[str | None, str | None]:
    """``(baseline, no_baseline)`` for ``run_compare``: the study's baseline where it has results; where it has none,
    no baseline at all (and why), never another model; no configured baseline: compare's default."""
    if study.baseline is None:
        return None, None
    if study.baseline in identifiers:
        return study.baseline, None
    return None, f"baseline {study.baseline} has no results for this dataset: no paired tests"


def _build(study: Study, tmp: Path, n_resamples: int | None) -> tuple[str, dict[str, bool]]:
    """The report's text and, per compare folder name, whether it was written into ``tmp``."""
    from ..comparison.compare import run_compare
    from ..comparison.nnunet_io import ComparisonError, markdown_table
    from ..comparison.profile import format_profiles
    from ..comparison.report import write_report
    from ..robustness.report import compare_columns

    spec = study.spec
    folds = [str(f) for f in spec.folds]
    trainings = study.trainings()
    columns = sorted({(t.dataset_name, t.configuration) for t in trainings})
    models = list(dict.fromkeys((t.trainer, t.plans) for t in trainings))
    cells: dict[tuple[str, str], dict[tuple[str, str], str]] = {m: {} for m in models}
    sections, folders, without_baseline = [], {}, []
    for ds, cfg in columns:
        sub = f"{ds}_{cfg}"
        folders[sub] = False
        present = [m for m in models if (study.paths["nnUNet_results"] / ds / f"{m[0]}__{m[1]}__{cfg}").is_dir()]
        identifiers = [f"{tr}__{p}" for tr, p in present]
        tests = []
        labels = study.paths["nnUNet_raw"] / ds / "labelsTs"
        for tr, p in present:
            pred = study.work_dir / "predictions" / ds / f"{tr}__{p}__{cfg}"
            if pred.is_dir() and labels.is_dir() and any(pred.iterdir()):
                tests.append(f"{pred}={labels}")
        baseline, no_baseline = _baseline_for(study, identifiers)
        if no_baseline:
            without_baseline.append(ds if len(spec.configurations) == 1 else f"{ds} ({cfg})")
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
                extra_columns=compare_columns,
                no_baseline=no_baseline,
            )
            write_report(comparison, tmp / sub, f"nnunet_lite study report {study.file.name}")
            folders[sub] = True
            body = (tmp / sub / "comparison.md").read_text().split("\n", 2)[2]  # drop compare's own title
            section += [body.rstrip(), "", f"![Dice vs parameters]({sub}/comparison.png)", ""]
            for m in present:
                label = m[0] if m[1] == "nnUNetPlans" else f"{m[0]} ({m[1]})"
                row = comparison.table[comparison.table["model"] == label]
                if len(row):
                    cells[m][(ds, cfg)] = _cell(row.iloc[0])
            section += _ablation_sections(study, ds, comparison, tmp / sub, sub, n_resamples or spec.report.bootstrap)
            section += _ensemble_sections(study, ds, cfg, comparison, tmp / sub, n_resamples or spec.report.bootstrap)
        except ComparisonError as e:
            section += [f"No comparison yet: {e}.", ""]
            if no_baseline:
                section += [f"The {no_baseline}.", ""]
        for m in models:
            if no_baseline and f"{m[0]}__{m[1]}" == study.baseline:
                cells[m][(ds, cfg)] = "MISSING: baseline without results, no paired tests for this dataset"
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
        f"Study file: `{study.file}`; folds {', '.join(folds)}; baseline "
        f"{study.baseline or 'none configured (each dataset section says which model compare chose, and why)'}; "
        f"generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "Cross-validation Dice per case (mean ± std over the validation cases of all folds; p: Wilcoxon signed-rank "
        "against the baseline, Holm-corrected). MISSING: no results (or folds) yet; nothing is filled in.",
        "",
        markdown_table(header, rows),
        "",
    ]
    if without_baseline:
        lines += [
            f"Baseline {study.baseline} has no results for {', '.join(without_baseline)}: no paired tests (no p) "
            "there; no other model is used in its place.",
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
    return "\n".join(lines).rstrip() + "\n", folders


ABLATION_LEGEND = (
    "Cross-validation cases of the folds above; Dice and IoU: mean ± std over the cases (foreground labels averaged "
    "per case), n: cases (and the cases paired with the full network: same fold and case). ΔDice: mean per-case "
    "difference to the full network with its 95 % bootstrap CI; p: two-sided Wilcoxon signed-rank test on the same "
    "pairs, Holm-corrected over this table's variants. Params and GFLOPs (2 x MACs): the network built from this "
    "dataset's plans, batch 1 at the patch size. The last column is the paper's own number under its own pipeline "
    "(split, preprocessing, metric), for orientation only, not comparable cell by cell."
)


def _ablation_sections(study: Study, ds: str, comparison, folder: Path, sub: str, n_resamples: int) -> list[str]:
    """Per ablation group of the study (a full network and its variants, from the trainer registry): the ablation
    table as markdown lines, with ``ablation_<full>.md``/``.csv`` written into ``folder``."""
    from ..comparison.ablation import (
        REPORTED,
        REPORTED_NOTES,
        ablation_groups,
        ablation_markdown,
        ablation_table,
        describe_variant,
        write_ablation,
    )

    if "default" not in study.spec.plans:
        return []
    convert = next((t.dataset.convert for t in study.trainings() if t.dataset_name == ds), None)  # keys REPORTED
    lines = []
    for group in ablation_groups(study.spec.trainers):
        if not group.full_listed:
            lines += [
                f"{', '.join(group.variants)}: ablation(s) of {group.full}, which the study does not train: no "
                "ablation table (list the full network in `trainers` to get one).",
                "",
            ]
            continue
        label = study.trainer_name  # the model label of a default-plans trainer is its (budget) class name
        costs = {
            row["model"]: {"params": row["params"], "flops": row["flops"]}
            for row in comparison.table.to_dict("records")
        }
        table = ablation_table(
            comparison.cases,
            label(group.full),
            [label(v) for v in group.variants],
            costs,
            changes={label(v): describe_variant(v) for v in group.variants},
            reported=REPORTED.get((group.architecture, convert)),
            n_resamples=n_resamples,
        )
        md, csv = write_ablation(table, folder, group.full)
        lines += [f"### Ablation table: {group.full} and its variants", "", ABLATION_LEGEND, ""]
        lines += [ablation_markdown(table), ""]
        extra = REPORTED_NOTES.get((group.architecture, convert))
        for note in [*table.notes, *([f"Paper's number, its own pipeline: {extra}."] if extra else [])]:
            lines += [note, ""]
        lines += [f"Files: [{md.name}]({sub}/{md.name}), [{csv.name}]({sub}/{csv.name}).", ""]
    return lines


ENSEMBLE_LEGEND = (
    "Test set (labelsTs), one prediction per case and model (each model's folds averaged by nnUNetv2_predict); the "
    "ensemble averages its members' softmax probabilities (nnUNetv2_ensemble, equal weights) and takes the argmax, "
    "evaluated with nnU-Net's compute_metrics_on_folder. Dice: mean ± std over the cases (foreground labels averaged "
    "per case), n: cases. ΔDice: mean per-case difference to the baseline with its 95 % bootstrap CI; p: two-sided "
    "Wilcoxon signed-rank test on the same cases, Holm-corrected over this table's rows. Params: the network's, for "
    "the ensemble the sum of its members'."
)


def _ensemble_sections(study: Study, ds: str, cfg: str, comparison, folder: Path, n_resamples: int) -> list[str]:
    """Per ``[[ensemble]]`` of ``ds``/``cfg``: its test-set evaluation next to its members and the baseline."""
    import pandas as pd

    from ..comparison.ablation import REPORTED_NOTES
    from ..comparison.cases import describe, label_names, paired_statistics, summary_rows
    from ..comparison.nnunet_io import ComparisonError, evaluate_folder, markdown_table

    jobs = [e for e in study.ensembles() if (e.dataset_name, e.configuration) == (ds, cfg)]
    if not jobs:
        return []
    labels = study.paths["nnUNet_raw"] / ds / "labelsTs"
    models = {m.path.name: m for m in comparison.models}
    baseline = comparison.baseline.label if comparison.baseline is not None else None
    test = comparison.cases[comparison.cases["source"] == "test"]
    costs = dict(zip(comparison.table["model"], comparison.table["params"], strict=True))
    convert = study.dataset(next(d.id for d in study.spec.datasets if study.dataset_name(d) == ds)).convert
    lines = []
    for job in jobs:
        title = f"### Test-set ensemble {job.name}: {', '.join(job.members)}"
        members = [models.get(m) for m in job.members]
        if not (job.folder.is_dir() and any(job.folder.iterdir())) or None in members or not labels.is_dir():
            lines += [title, "", f"MISSING: no ensemble predictions in {job.folder} yet (or no labelsTs).", ""]
            continue
        label = f"ensemble {job.name} ({len(job.members)} models)"
        dataset_json = json.loads((members[0].path / "dataset.json").read_text())
        out = folder / "test_evaluations" / f"ensemble_{job.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            evaluate_folder(
                labels, job.folder, dataset_json, json.loads((members[0].path / "plans.json").read_text()), out
            )
        except ComparisonError as e:
            lines += [title, "", f"Not evaluated: {e}.", ""]
            continue
        names, ending = label_names(dataset_json), dataset_json["file_ending"]
        cases = pd.concat([test, pd.DataFrame(summary_rows(out, label, "test", "test", names, ending))])
        rows_of = [baseline] if baseline in set(cases["model"]) else []
        rows_of += [m.label for m in members if m.label not in rows_of] + [label]
        cases = cases[cases["model"].isin(rows_of)]
        fg = cases.groupby(["model", "case"], as_index=False)[["Dice"]].mean()
        stats = (
            paired_statistics(cases, baseline, "test", n_resamples).set_index("model")
            if rows_of[0] == baseline
            else None
        )
        table = []
        for model in rows_of:
            mean, std = describe(fg.loc[fg["model"] == model, "Dice"])
            params = (
                sum(costs.get(m.label, math.nan) for m in members) if model == label else costs.get(model, math.nan)
            )
            delta, p = "", ""
            if model == baseline:
                delta = "baseline"
            elif stats is not None and model in stats.index:
                r = stats.loc[model]
                delta = f"{r['delta_dice']:+.3f} [{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}]"
                p = f"{r['p_holm']:.2g}" if r["p_holm"] < 0.001 else f"{r['p_holm']:.3f}"
            n = int(fg.loc[fg["model"] == model, "Dice"].notna().sum())
            dice = "MISSING" if not n else f"{mean:.3f} ± {std:.3f}"
            params_text = "" if math.isnan(params) else f"{params / 1e6:.2f} M"
            table.append([model, n, dice, delta, p, params_text])
        lines += [title, "", ENSEMBLE_LEGEND, ""]
        lines += [
            markdown_table(["model", "n", "test Dice", "ΔDice vs baseline [95 % CI]", "p (Holm)", "params"], table)
        ]
        lines += [""]
        if baseline is None or baseline not in rows_of:
            lines += ["No baseline with test-set predictions: no paired tests.", ""]
        trained = [
            t.removeprefix("nnUNetTrainer") for t in next(e for e in study.spec.ensemble if e.name == job.name).trainers
        ]
        for (arch, conv), note in REPORTED_NOTES.items():
            if conv == convert and all(t.startswith(arch) for t in trained):
                lines += [f"Paper's number, its own pipeline (not comparable cell by cell): {note}.", ""]
    return lines
