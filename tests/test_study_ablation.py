"""The study report's ablation table: each ablation variant against its full network (paired on the same cases).

Fast tests build nnU-Net results trees by hand (``summary.json`` files, no training) and compute the expected numbers
independently (scipy's Wilcoxon, Holm by hand); one slow test runs a tiny ablation study end to end.
"""

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

import nnunet_lite.comparison.compare as compare_module
from nnunet_lite.comparison.ablation import REPORTED_HEADER, ablation_groups, ablation_markdown, ablation_table
from nnunet_lite.comparison.compare import collect_cases
from nnunet_lite.comparison.nnunet_io import ModelFolder

from .conftest import BIN
from .test_paired_cases import model_folder, no_costs, write_summary

FULL, NO_RGF, NO_LSG = "nnUNetTrainerAULUNet", "nnUNetTrainerAULUNet_noRGF", "nnUNetTrainerAULUNet_noLSG"
FOLDS = ["0", "1"]
RESAMPLES = 500


def holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def read_dice(summary: Path, key: str = "Dice") -> dict[str, float]:
    """Per case, the label-1 metric straight from an nnU-Net summary.json (no nnunet_lite code)."""
    cases = json.loads(summary.read_text())["metric_per_case"]
    return {Path(c["reference_file"]).stem: c["metrics"]["1"][key] for c in cases}


def expected(results: Path, dataset: str, models: dict[str, str], full: str, folds: list[str]) -> dict[str, dict]:
    """Mean Dice per model and, per variant, the (fold, case)-paired difference, Wilcoxon p and Holm p."""
    dice = {
        label: {
            (fold, case): d
            for fold in folds
            for case, d in read_dice(results / dataset / folder / f"fold_{fold}/validation/summary.json").items()
        }
        for label, folder in models.items()
    }
    out = {label: {"Dice_mean": float(np.mean(list(d.values()))), "n_cases": len(d)} for label, d in dice.items()}
    variants = [m for m in models if m != full]
    for v in variants:
        keys = sorted(set(dice[v]) & set(dice[full]))
        diff = np.array([dice[v][k] - dice[full][k] for k in keys])
        out[v].update(delta_dice=float(diff.mean()), n_pairs=len(keys), p=float(wilcoxon(diff).pvalue))
    for v, p in zip(variants, holm_by_hand([out[v]["p"] for v in variants]), strict=True):
        out[v]["p_holm"] = p
    return out


# ------------------------------------------------------------------------------------------------ hand-made trees
@pytest.fixture
def tree(tmp_path):
    """Full network and two variants, 2 folds x 8 validation cases; each variant's summaries list the cases in a
    different order and one variant lacks a case, so pairing by position instead of (fold, case) gives other numbers.
    """
    results = tmp_path / "nnUNet_results"
    ds = "Dataset960_HandAblation"
    rng = np.random.default_rng(7)
    shift = {FULL: 0.0, NO_RGF: -0.04, NO_LSG: -0.01}
    for trainer in (FULL, NO_RGF, NO_LSG):
        folder = model_folder(results, trainer, dataset=ds)
        for fold in FOLDS:
            cases = [f"case_{fold}{i}" for i in range(8)]
            if trainer != FULL:
                rng.shuffle(cases)
            if trainer == NO_LSG and fold == "1":
                cases = cases[1:]
            base = {c: 0.6 + 0.04 * int(c[-1]) for c in cases}
            scores = {c: float(np.clip(base[c] + shift[trainer] + rng.normal(0, 0.02), 0, 1)) for c in cases}
            write_summary(folder / f"fold_{fold}" / "validation" / "summary.json", scores)
    return results, ds


def _cases(results: Path, ds: str, trainers: list[str]) -> pd.DataFrame:
    models = [ModelFolder(t, "nnUNetPlans", "2d", results / ds / f"{t}__nnUNetPlans__2d") for t in trainers]
    return collect_cases(models, FOLDS, [], None)[0]


def test_ablation_table_pairs_on_fold_and_case_and_matches_scipy(tree):
    results, ds = tree
    cases = _cases(results, ds, [FULL, NO_RGF, NO_LSG])
    costs = {FULL: {"params": 28_642, "flops": 1.16e8}, NO_RGF: {"params": 25_042, "flops": 1.16e8}}
    table = ablation_table(cases, FULL, [NO_RGF, NO_LSG], costs, n_resamples=RESAMPLES, reported="DSC 90.37")
    rows = table.rows.set_index("model")
    folders = {t: f"{t}__nnUNetPlans__2d" for t in (FULL, NO_RGF, NO_LSG)}
    want = expected(results, ds, folders, FULL, FOLDS)
    for model, values in want.items():
        for key, value in values.items():
            assert rows.loc[model, key] == pytest.approx(value, rel=1e-9), (model, key)
    assert rows.loc[NO_LSG, "n_pairs"] == 15 and rows.loc[NO_RGF, "n_pairs"] == 16
    assert rows.loc[NO_RGF, "delta_dice"] < -0.02  # the shift written into the tree, found case by case
    assert rows.loc[NO_RGF, "delta_ci_low"] <= rows.loc[NO_RGF, "delta_dice"] <= rows.loc[NO_RGF, "delta_ci_high"]
    assert rows.loc[NO_RGF, "delta_params"] == -3_600 and np.isnan(rows.loc[NO_LSG, "params"])
    assert rows.loc[FULL, "reported"] == "DSC 90.37" and rows.loc[NO_RGF, "reported"] == ""
    assert table.missing == []

    # pairing by row order (what a broken implementation would do) gives a different difference
    fg = cases.groupby(["model", "fold", "case"], sort=False)["Dice"].mean().reset_index()
    by_order = fg[fg.model == NO_RGF]["Dice"].to_numpy() - fg[fg.model == FULL]["Dice"].to_numpy()
    assert abs(by_order.mean() - rows.loc[NO_RGF, "delta_dice"]) > 1e-6 or wilcoxon(by_order).pvalue != pytest.approx(
        rows.loc[NO_RGF, "p"]
    )

    text = ablation_markdown(table)
    assert REPORTED_HEADER in text and "| DSC 90.37" in text and "-3,600" in text
    line = next(r for r in text.splitlines() if r.startswith(f"| {NO_LSG} "))
    assert "15 pairs" in line and f"{rows.loc[NO_LSG, 'p_holm']:.3f}" in line


def test_missing_variant_and_missing_full_network_are_said(tree):
    results, ds = tree
    cases = _cases(results, ds, [FULL, NO_RGF])
    table = ablation_table(cases, FULL, [NO_RGF, "nnUNetTrainerAULUNet_noAKF"], n_resamples=RESAMPLES)
    assert table.missing == ["nnUNetTrainerAULUNet_noAKF"]
    assert "Missing results on cv: nnUNetTrainerAULUNet_noAKF" in table.notes[0]
    line = next(r for r in ablation_markdown(table).splitlines() if "_noAKF " in r)
    assert line.count("MISSING") == 2
    # Holm over the one variant with results: its p unchanged
    assert table.rows.set_index("model").loc[NO_RGF, "p_holm"] == pytest.approx(
        table.rows.set_index("model").loc[NO_RGF, "p"]
    )

    no_full = ablation_table(_cases(results, ds, [NO_RGF, NO_LSG]), FULL, [NO_RGF, NO_LSG], n_resamples=RESAMPLES)
    assert no_full.missing == [FULL] and no_full.rows["p"].isna().all()
    assert any(f"The full network {FULL} has no results" in n for n in no_full.notes)


def test_groups_come_from_the_trainer_registry_not_the_names():
    groups = ablation_groups(
        [
            "nnUNetTrainer",
            FULL,
            NO_RGF,
            "nnUNetTrainerAULUNet_paper",
            "nnUNetTrainerAULUNet_paper_d135",
            "nnUNetTrainerAULUNet_bf16",  # a registry trainer, but not an ablation
            "nnUNetTrainerLGMSNet_GMSconv",  # its full network is not listed
        ]
    )
    assert [(g.full, g.variants, g.architecture, g.full_listed) for g in groups] == [
        (FULL, [NO_RGF], "AULUNet", True),
        ("nnUNetTrainerAULUNet_paper", ["nnUNetTrainerAULUNet_paper_d135"], "AULUNet", True),
        ("nnUNetTrainerLGMSNet", ["nnUNetTrainerLGMSNet_GMSconv"], "LGMSNet", False),
    ]


# ------------------------------------------------------------------------------------------------ study report
STUDY = """
name = "ablation"
work_dir = "work"
trainers = ["nnUNetTrainerAULUNet", "nnUNetTrainerAULUNet_noRGF", "nnUNetTrainerAULUNet_noLSG"]
folds = [0, 1]
baseline = "nnUNetTrainerAULUNet"

[nnunet]
raw = "work/nnUNet_raw"
preprocessed = "work/nnUNet_preprocessed"
results = "work/nnUNet_results"

[[datasets]]
id = 993
synthetic = { num_train = 10, num_test = 2, seed = 3 }

[budget]
epochs = 1
iterations_per_epoch = 4
val_iterations_per_epoch = 1

[report]
bootstrap = 200
latency = false
"""


def test_study_report_writes_the_ablation_table_and_names_missing_variants(tmp_path, monkeypatch):
    pytest.importorskip("tomllib", reason="nnunet_lite study needs Python >= 3.11")
    from nnunet_lite.study.report import write_study_report
    from nnunet_lite.study.study import Study

    (tmp_path / "study.toml").write_text(STUDY)
    study = Study.load(tmp_path / "study.toml", environ={})
    for key, value in study.environment().items():
        monkeypatch.setenv(key, value)
    params = {"nnUNetTrainerAULUNet_1ep4it": 28_642, "nnUNetTrainerAULUNet_noRGF_1ep4it": 25_042}

    def costs(model, folds) -> dict:  # no checkpoints or plans in a hand-built tree
        return no_costs(model, folds) | {"params": params.get(model.trainer, np.nan), "flops": 1.2e8}

    monkeypatch.setattr(compare_module, "model_costs", costs)
    ds = "Dataset993_SyntheticLesions"
    rng = np.random.default_rng(3)
    for trainer in ("nnUNetTrainerAULUNet_1ep4it", "nnUNetTrainerAULUNet_noRGF_1ep4it"):  # _noLSG: no results
        folder = model_folder(study.paths["nnUNet_results"], trainer, dataset=ds)
        for fold in ("0", "1"):
            scores = {f"case_{fold}{i}": float(rng.uniform(0.4, 0.9)) for i in range(6)}
            write_summary(folder / f"fold_{fold}" / "validation" / "summary.json", scores)

    text = write_study_report(study).read_text()
    section = text.split("### Ablation table: nnUNetTrainerAULUNet")[1]
    assert REPORTED_HEADER in section and "Holm-corrected over this table's variants" in section
    assert "Missing results on cv: nnUNetTrainerAULUNet_noLSG_1ep4it" in section
    csv = pd.read_csv(study.work_dir / "report" / f"{ds}_2d" / "ablation_nnUNetTrainerAULUNet.csv")
    assert csv["model"].tolist() == [f"{t}_1ep4it" for t in (FULL, NO_RGF, NO_LSG)]
    assert csv["ablation"].fillna("").tolist() == ["", "noRGF", "noLSG"]
    assert csv.loc[1, "delta_params"] == -3_600 and csv.loc[1, "n_pairs"] == 12
    folders = {f"{t}_1ep4it": f"{t}_1ep4it__nnUNetPlans__2d" for t in (FULL, NO_RGF)}
    want = expected(study.paths["nnUNet_results"], ds, folders, f"{FULL}_1ep4it", ["0", "1"])
    assert csv.loc[1, "delta_dice"] == pytest.approx(want[f"{NO_RGF}_1ep4it"]["delta_dice"])
    assert csv.loc[1, "p_holm"] == pytest.approx(want[f"{NO_RGF}_1ep4it"]["p_holm"])
    assert (study.work_dir / "report" / f"{ds}_2d" / "ablation_nnUNetTrainerAULUNet.md").is_file()
    # a synthetic dataset is none of the papers' datasets: no reported figure
    assert "| 90.37" not in section and "DSC" not in section.split("Files:")[0]


# ------------------------------------------------------------------------------------------------ end to end
E2E = """
name = "tiny_ablation"
work_dir = "work"
configurations = ["2d"]
trainers = ["nnUNetTrainerAULUNet", "nnUNetTrainerAULUNet_noRGF", "nnUNetTrainerAULUNet_noLSG"]
folds = [0]
baseline = "nnUNetTrainerAULUNet"

[nnunet]
raw = "work/nnUNet_raw"
preprocessed = "work/nnUNet_preprocessed"
results = "work/nnUNet_results"

[[datasets]]
id = 961
synthetic = { num_train = 15, num_test = 0, size = 32, seed = 5 }
test = false

[budget]
epochs = 1
iterations_per_epoch = 2
val_iterations_per_epoch = 1

[resources.train]
cpus = 1

[resources.predict]
cpus = 1

[env]
nnUNet_compile = "f"

[report]
bootstrap = 200
latency = false
"""


@pytest.mark.slow
def test_tiny_ablation_study_end_to_end(tmp_path):
    (tmp_path / "study.toml").write_text(E2E)
    for command in (["run", "--cores", "2", "--gpus", "0"], ["report"]):
        cmd = [str(BIN / "nnunet_lite"), "study", command[0], str(tmp_path / "study.toml"), *command[1:]]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output = proc.communicate(timeout=900)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its trainings too, not only the runner
            raise
        assert proc.returncode == 0, output[-4000:]
    check_tiny_ablation_study(tmp_path)


def check_tiny_ablation_study(tmp_path: Path) -> None:
    """The ablation table of a finished E2E study against nnU-Net's summary.json files and the networks."""
    import torch

    from nnunet_lite.trainers import TRAINERS

    work, ds = tmp_path / "work", "Dataset961_SyntheticLesions"
    csv = pd.read_csv(work / "report" / f"{ds}_2d" / "ablation_nnUNetTrainerAULUNet.csv").set_index("model")
    folders = {f"{t}_1ep2it": f"{t}_1ep2it__nnUNetPlans__2d" for t in (FULL, NO_RGF, NO_LSG)}
    want = expected(work / "nnUNet_results", ds, folders, f"{FULL}_1ep2it", ["0"])
    for model, values in want.items():
        for key, value in values.items():
            assert csv.loc[model, key] == pytest.approx(value, rel=1e-9, nan_ok=True), (model, key)
    assert csv.loc[f"{NO_RGF}_1ep2it", "n_pairs"] == 3  # fold 0 of nnU-Net's 5-fold split of 15 cases

    # parameter deltas against the networks themselves (3 input channels, 2 outputs: the synthetic dataset)
    def params(trainer: str) -> int:
        cls = TRAINERS[trainer]
        net = cls.architecture(3, 2, conv_op=torch.nn.Conv2d, **cls.arch_kwargs)
        return sum(p.numel() for p in net.parameters())

    def trained(trainer: str) -> int:  # the weights nnU-Net saved, BatchNorm statistics left out
        checkpoint = work / "nnUNet_results" / ds / folders[f"{trainer}_1ep2it"] / "fold_0" / "checkpoint_final.pth"
        weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
        return sum(v.numel() for k, v in weights.items() if "running_" not in k and "num_batches" not in k)

    assert csv.loc[f"{FULL}_1ep2it", "params"] == params(FULL) == trained(FULL) == 28_642
    for variant, removed in ((NO_RGF, 3_600), (NO_LSG, 4_580)):
        delta = params(variant) - params(FULL)
        assert delta == trained(variant) - trained(FULL) == -removed
        assert csv.loc[f"{variant}_1ep2it", "delta_params"] == delta
    report = (work / "report" / "study_report.md").read_text()
    assert "### Ablation table: nnUNetTrainerAULUNet" in report and "MISSING" not in report.split("### Ablation")[1]
