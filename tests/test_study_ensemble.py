"""``[[ensemble]]``: several trainers' test-set predictions averaged by nnU-Net's own ``nnUNetv2_ensemble``, evaluated
by ``study report`` next to its members and the baseline (docs/paper-protocols.md, "The three-variant ensemble")."""

import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import wilcoxon

import nnunet_lite.comparison.compare as compare_module

from .test_paired_cases import model_folder, no_costs, write_summary
from .test_study_ablation import holm_by_hand

pytest.importorskip("tomllib", reason="nnunet_lite study needs Python >= 3.11")

from nnunet_lite.study.study import Study  # noqa: E402

BASE, MEMBERS = "nnUNetTrainer", ("nnUNetTrainerMedLiteNet", "nnUNetTrainerMedLiteNet_wideASPP")
STUDY = f"""
name = "ensemble"
work_dir = "work"
trainers = ["{BASE}", "{MEMBERS[0]}", "{MEMBERS[1]}"]
folds = [0]
baseline = "{BASE}"

[nnunet]
raw = "nnUNet_raw"
preprocessed = "nnUNet_preprocessed"
results = "nnUNet_results"

[[datasets]]
id = 962
convert = "isic2018"
source = "downloads"

[[ensemble]]
name = "lite"
trainers = ["{MEMBERS[0]}", "{MEMBERS[1]}"]

[budget]
epochs = 1
iterations_per_epoch = 4

[report]
bootstrap = 200
latency = false
"""
PLANS = {"image_reader_writer": "NaturalImage2DIO", "label_manager": "LabelManager"}
CASES = [f"case_{i}" for i in range(7)]
SHAPE = (12, 12)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    tp, fp, fn = ((pred == 1) & (ref == 1)).sum(), ((pred == 1) & (ref == 0)).sum(), ((pred == 0) & (ref == 1)).sum()
    return float(2 * tp / (2 * tp + fp + fn))


def write_png(path: Path, seg: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(seg.astype(np.uint8)).save(path)


def write_member(folder: Path, probabilities: dict[str, np.ndarray]) -> None:
    """What ``nnUNetv2_predict --save_probabilities`` leaves: segmentation, .npz (C, 1, H, W), .pkl, dataset/plans."""
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".png", "channel_names": {"0": "R"}})
    )
    (folder / "plans.json").write_text(json.dumps(PLANS))
    for case, prob in probabilities.items():
        write_png(folder / f"{case}.png", prob.argmax(0)[0])
        np.savez_compressed(folder / f"{case}.npz", probabilities=prob)
        (folder / f"{case}.pkl").write_bytes(pickle.dumps({"spacing": [999, 1, 1]}))


def probabilities(rng: np.random.Generator, ref: np.ndarray, noise: float) -> np.ndarray:
    fg = np.clip(0.5 * ref + 0.25 + rng.normal(0, noise, ref.shape), 0, 1).astype(np.float32)
    return np.stack([1 - fg, fg])[:, None]  # (classes, 1, H, W): nnU-Net's 2D layout


@pytest.mark.slow  # Snakemake + nnU-Net's command line and its spawned worker: ~40 s on 2 busy cores
def test_snakefile_ensemble_rule_gives_the_argmax_of_the_members_mean_probabilities(tmp_path):
    """The study's own ``ensemble`` rule (nnUNetv2_ensemble) on hand-made member predictions: no training."""
    from nnunet_lite.study.runner import RunOptions, snakemake_command

    (tmp_path / "study.toml").write_text(STUDY)
    (tmp_path / "downloads").mkdir()
    study = Study.load(tmp_path / "study.toml", environ={})
    (job,) = study.ensembles()
    rng = np.random.default_rng(0)
    refs = {c: (rng.random(SHAPE) < 0.4).astype(np.uint8) for c in CASES[:3]}
    probs = [{c: probabilities(rng, r, 0.35) for c, r in refs.items()} for _ in job.member_folders]
    for folder, p in zip(job.member_folders, probs, strict=True):
        write_member(folder, p)
    # only the ensemble rule: the members' predictions stand in for the trainings and predictions upstream
    cmd = snakemake_command(study, RunOptions(gpus=0, cores=1)) + ["--allowed-rules", "ensemble", "--", str(job.folder)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **study.environment()})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"nnUNetv2_ensemble -i {' '.join(map(str, job.member_folders))} -o {job.folder} -np 1" in run.stderr
    assert sorted(p.name for p in job.folder.glob("*.png")) == [f"{c}.png" for c in refs]
    differs = set()
    for case in refs:
        want = ((probs[0][case] + probs[1][case]) / 2).argmax(0)[0]
        got = np.asarray(Image.open(job.folder / f"{case}.png"))
        assert got.shape == SHAPE and (got == want).all()
        differs |= {i for i in range(2) if (probs[i][case].argmax(0)[0] != want).any()}
    assert differs == {0, 1}  # the mean decides pixels differently from each member alone: not a copy of one


def test_study_report_evaluates_the_ensemble_next_to_its_members_and_the_baseline(tmp_path, monkeypatch):
    from nnunet_lite.study.report import write_study_report

    (tmp_path / "study.toml").write_text(STUDY)
    (tmp_path / "downloads").mkdir()
    study = Study.load(tmp_path / "study.toml", environ={})
    for key, value in study.environment().items():
        monkeypatch.setenv(key, value)
    params = {f"{BASE}_1ep4it": 1_000_000, f"{MEMBERS[0]}_1ep4it": 3_000_000, f"{MEMBERS[1]}_1ep4it": 3_470_000}

    def costs(model, folds) -> dict:  # no checkpoints in a hand-built tree
        return no_costs(model, folds) | {"params": params.get(model.trainer, np.nan), "flops": 1e8}

    monkeypatch.setattr(compare_module, "model_costs", costs)
    (job,) = study.ensembles()
    ds = job.dataset_name
    assert ds == "Dataset962_ISIC2018" and job.folder == study.work_dir / "predictions" / ds / "ensemble_lite__2d"
    rng = np.random.default_rng(1)
    refs = {c: (rng.random(SHAPE) < 0.4).astype(np.uint8) for c in CASES}
    for case, ref in refs.items():
        write_png(study.paths["nnUNet_raw"] / ds / "labelsTs" / f"{case}.png", ref)
    segs = {}
    for trainer, noise in ((BASE, 0.45), (MEMBERS[0], 0.3), (MEMBERS[1], 0.3)):
        name = f"{trainer}_1ep4it"
        folder = model_folder(study.paths["nnUNet_results"], name, dataset=ds)
        (folder / "plans.json").write_text(json.dumps(PLANS))
        write_summary(folder / "fold_0" / "validation" / "summary.json", {"v0": 0.7, "v1": 0.8})
        probs = {c: probabilities(rng, r, noise) for c, r in refs.items()}
        segs[name] = {c: p.argmax(0)[0] for c, p in probs.items()}
        for case, p in probs.items():
            write_png(study.work_dir / "predictions" / ds / f"{name}__nnUNetPlans__2d" / f"{case}.png", p.argmax(0)[0])
        segs.setdefault("probs", {})[name] = probs
    mean = {c: sum(segs["probs"][f"{m}_1ep4it"][c] for m in MEMBERS) / 2 for c in CASES}
    segs["ensemble"] = {c: m.argmax(0)[0] for c, m in mean.items()}
    for case, seg in segs["ensemble"].items():
        write_png(job.folder / f"{case}.png", seg)

    text = write_study_report(study).read_text()
    section = text.split("### Test-set ensemble lite: ")[1]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| model")
    }
    names = [f"{BASE}_1ep4it", *(f"{m}_1ep4it" for m in MEMBERS), "ensemble lite (2 models)"]
    assert list(rows) == names  # baseline first, then the members, then the ensemble
    per_case = {
        n: np.array([dice(segs[k][c], refs[c]) for c in CASES])
        for n, k in zip(names, [*names[:3], "ensemble"], strict=True)
    }
    diffs = {n: per_case[n] - per_case[names[0]] for n in names[1:]}
    p_holm = dict(zip(names[1:], holm_by_hand([float(wilcoxon(d).pvalue) for d in diffs.values()]), strict=True))
    for n in names:
        n_cases, test_dice, delta, p, size = rows[n]
        assert n_cases == "7" and test_dice == f"{per_case[n].mean():.3f} ± {per_case[n].std(ddof=1):.3f}"
        if n == names[0]:
            assert delta == "baseline" and p == ""
        else:
            assert delta.startswith(f"{diffs[n].mean():+.3f} [") and float(p) == pytest.approx(p_holm[n], rel=0.01)
    assert rows[names[3]][4] == "6.47 M"  # the members' parameters together
    assert "Paper's number, its own pipeline (not comparable cell by cell): MedLiteNet paper, three-variant " in section
    assert "Dice 0.904 ± 0.012" in section


def test_study_report_says_when_the_ensemble_has_not_run(tmp_path, monkeypatch):
    from nnunet_lite.study.report import _ensemble_sections

    (tmp_path / "study.toml").write_text(STUDY)
    study = Study.load(tmp_path / "study.toml", environ={})

    class Empty:  # a comparison without the members' test results
        models, baseline = [], None
        cases = compare_module.pd.DataFrame(columns=["model", "source", "fold", "case", "label", "Dice"])
        table = compare_module.pd.DataFrame(columns=["model", "params"])

    (job,) = study.ensembles()
    lines = _ensemble_sections(study, job.dataset_name, "2d", Empty(), tmp_path, 100)
    assert f"MISSING: no ensemble predictions in {job.folder} yet (or no labelsTs)." in lines


def test_study_status_lists_the_ensemble_and_what_it_waits_for(tmp_path):
    from nnunet_lite.study.status import format_status, study_status

    (tmp_path / "study.toml").write_text(STUDY)
    study = Study.load(tmp_path / "study.toml", environ={})
    (job,) = study.ensembles()
    member_a, member_b = job.members
    write_member(job.member_folders[0], {"case_0": np.zeros((2, 1, 4, 4), np.float32)})
    rows = study_status(study)
    assert [r["status"] for r in rows if r.get("kind") != "ensemble"] == ["missing"] * 3  # 3 trainers x fold 0
    (ens,) = [r for r in rows if r.get("kind") == "ensemble"]
    assert (ens["status"], ens["note"]) == ("waiting", f"test predictions missing: {member_b}")
    write_member(job.member_folders[1], {"case_0": np.zeros((2, 1, 4, 4), np.float32)})
    assert study_status(study)[-1]["status"] == "missing"
    write_png(job.folder / "case_0.png", np.zeros((4, 4)))
    text = format_status(study_status(study))
    assert "3 trainings: 3 missing; left: 3 trainings" in text and text.endswith("1 test-set ensembles: 1 done")
    assert f"| {job.dataset_name} | 2d     | lite     | done   |" in text
