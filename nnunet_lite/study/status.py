"""``study status``: the state of every training, read from nnU-Net's fold folders and the study's job markers.

nnU-Net's files are the truth (on SLURM stdout is incomplete): ``checkpoint_final.pth`` + ``validation/summary.json``
= done, and nothing else is: a fold whose final checkpoint is gone is left to do even if its summary exists, and the
Snakefile schedules exactly those folds again. ``checkpoint_final.pth`` alone = interrupted during validation (the
next run reruns it with ``--val``); ``checkpoint_latest.pth`` or ``checkpoint_best.pth`` = interrupted (resumed with
``--c``, as the job wrapper decides). Epochs done come from ``training_log_*.txt`` ("Epoch N" ... "Epoch time"),
epochs planned from ``debug.json`` (the trainer's fields).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .job import BEST, FINAL, LATEST, live_job, state_files
from .study import Study, Training

EPOCH = re.compile(r": Epoch (\d+)\s*$")
EPOCH_END = re.compile(r": Epoch time: ")


def epochs_done(fold_dir: Path) -> int:
    done = 0
    for log in sorted(fold_dir.glob("training_log_*.txt")):
        current = None
        for line in log.read_text(errors="replace").splitlines():
            m = EPOCH.search(line)
            if m:
                current = int(m.group(1))
            elif EPOCH_END.search(line) and current is not None:
                done = max(done, current + 1)
    return done


def epochs_planned(study: Study, fold_dir: Path) -> int | None:
    debug = fold_dir / "debug.json"
    if debug.is_file():
        try:
            return int(json.loads(debug.read_text())["num_epochs"])
        except (KeyError, ValueError, json.JSONDecodeError):
            pass
    return study.spec.budget.epochs if study.spec.budget else None


def fold_done(fold_dir: Path) -> bool:
    """The one definition of a finished training, shared with the Snakefile."""
    return (fold_dir / FINAL).is_file() and (fold_dir / "validation" / "summary.json").is_file()


def log_file(study: Study, t: Training) -> Path:
    return study.work_dir / "logs" / "train" / t.dataset_name / t.model_folder / f"fold_{t.fold}.log"


def training_status(study: Study, t: Training) -> dict:
    fold = t.fold_dir
    log = log_file(study, t)
    running, failed = state_files(log)
    gone = (fold / "validation" / "summary.json").is_file() and not (fold / FINAL).is_file()
    resume = next((n for n in (LATEST, BEST) if (fold / n).is_file()), None)
    if fold_done(fold):
        state, note = "done", ""
    elif running.is_file() and live_job(running) is not None:
        state, note = "running", str(log)
    elif failed.is_file():
        info = json.loads(failed.read_text())
        state, note = "failed", f"exit {info.get('exit_code')}, read {info.get('log', log)}"
    elif (fold / FINAL).is_file():
        state, note = "interrupted", "validation missing: reruns it with --val"
    elif resume:
        state, note = "interrupted", f"resumes from {resume} with --c"
    else:
        state, note = "missing", ""
    if gone and state != "running":
        note = f"{FINAL} is gone: trained again" + (f"; {note}" if note else "")
    planned = epochs_planned(study, fold)
    done = epochs_done(fold) if fold.is_dir() else 0
    if state == "done" and planned is not None:
        done = planned
    return {
        "dataset": t.dataset_name,
        "configuration": t.configuration,
        "trainer": t.trainer,
        "plans": t.plans,
        "fold": t.fold,
        "status": state,
        "epochs_done": done,
        "epochs_planned": planned,
        "note": note,
        "fold_dir": str(fold),
    }


def _has_predictions(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.name != "dataset.json" and p.suffix not in (".npz", ".pkl") for p in folder.iterdir()
    )


def ensemble_status(study: Study) -> list[dict]:
    """One row per ``[[ensemble]]`` job (``kind`` = "ensemble"): done when its folder has segmentations."""
    rows = []
    for job in study.ensembles():
        waiting = [m for m, f in zip(job.members, job.member_folders, strict=True) if not _has_predictions(f)]
        if _has_predictions(job.folder):
            state, note = "done", ""
        elif waiting:
            state, note = "waiting", f"test predictions missing: {', '.join(waiting)}"
        else:
            state, note = "missing", "members predicted: runs next"
        rows.append(
            {
                "kind": "ensemble",
                "dataset": job.dataset_name,
                "configuration": job.configuration,
                "ensemble": job.name,
                "members": list(job.members),
                "status": state,
                "note": note,
                "folder": str(job.folder),
            }
        )
    return rows


def study_status(study: Study) -> list[dict]:
    """Every training's row, then every test-set ensemble's (rows with ``kind`` = "ensemble")."""
    return [training_status(study, t) for t in study.trainings()] + ensemble_status(study)


def format_status(rows: list[dict]) -> str:
    from ..comparison.nnunet_io import markdown_table

    ensembles = [r for r in rows if r.get("kind") == "ensemble"]
    rows = [r for r in rows if r.get("kind") != "ensemble"]
    header = ["dataset", "config", "trainer", "plans", "fold", "status", "epochs", "note"]
    body = [
        [
            r["dataset"],
            r["configuration"],
            r["trainer"],
            r["plans"],
            r["fold"],
            r["status"],
            f"{r['epochs_done']}/{r['epochs_planned'] if r['epochs_planned'] is not None else '?'}",
            r["note"],
        ]
        for r in rows
    ]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "interrupted", "failed", "missing")}
    left = [r for r in rows if r["status"] != "done"]
    epochs_left = sum(max(0, (r["epochs_planned"] or 0) - r["epochs_done"]) for r in left)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    text = markdown_table(header, body)
    text = f"{text}\n\n{len(rows)} trainings: {summary}; left: {len(left)} trainings, {epochs_left} epochs"
    if ensembles:
        table = [[r["dataset"], r["configuration"], r["ensemble"], r["status"], r["note"]] for r in ensembles]
        done = sum(r["status"] == "done" for r in ensembles)
        text += "\n\n" + markdown_table(["dataset", "config", "ensemble", "status", "note"], table)
        text += f"\n\n{len(ensembles)} test-set ensembles: {done} done"
    return text
