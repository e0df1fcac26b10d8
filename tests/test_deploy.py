"""Deployment: CPU inference rewrites, ONNX export and onnxruntime parity, sidecar, ``nnunet_lite export/predict``."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nnunet_lite.architectures import AULUNet, LGMSNet, MedLiteNet
from nnunet_lite.architectures.blocks import ConvNormAct
from nnunet_lite.deploy.optimize import count_rewrites, fuse_batchnorm, optimize_for_cpu_inference, to_channels_last

from .conftest import run_cli

ARCHITECTURES = (AULUNet, LGMSNet, MedLiteNet)
SHAPES = {"2d": (nn.Conv2d, (2, 3, 64, 64)), "3d": (nn.Conv3d, (2, 1, 32, 32, 32))}
# float32 rounding through ~50 layers: the unchanged network itself differs from its float64 evaluation by ~2e-5 of
# the output scale (LGMSNet 3D), so rewrites are held to 1e-4 of it
RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def onnx_available():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def assert_close(out: torch.Tensor, ref: torch.Tensor, rtol: float = RTOL) -> None:
    assert out.shape == ref.shape
    diff, scale = (out.float() - ref.float()).abs().max().item(), max(1.0, ref.abs().max().item())
    assert diff <= rtol * scale, f"max |difference| {diff:.3g} > {rtol:g} * {scale:.3g}"


def build(arch, dim: str, num_classes: int = 3) -> tuple[nn.Module, torch.Tensor]:
    conv_op, shape = SHAPES[dim]
    torch.manual_seed(0)
    model = randomize_batchnorm(arch(shape[1], num_classes, conv_op=conv_op))
    return model, torch.randn(shape, generator=torch.Generator().manual_seed(1))


# --- inference rewrites: each one equals the original -----------------------------------------------------------


@pytest.mark.parametrize("dim", SHAPES)
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.__name__)
def test_optimize_for_cpu_inference_is_output_identical(arch, dim):
    model, x = build(arch, dim)
    with torch.no_grad():
        reference = model(x)
        fast = optimize_for_cpu_inference(model)
        assert_close(fast(to_channels_last(x)), reference)
        assert_close(fast(x), reference)  # contiguous inputs work too, only slower
        exportable = optimize_for_cpu_inference(model, for_export=True)
        assert_close(exportable(x), reference)
    rewrites = count_rewrites(model, fast)
    expected = {AULUNet: {"fused_akf", "project_then_upsample"}, LGMSNet: {"fused_lms"}}
    assert expected.get(arch, set()) <= set(rewrites), rewrites
    if arch is not LGMSNet or dim == "2d":  # LGMSNet 3D uses InstanceNorm (not foldable) in most places
        assert rewrites.get("fuse_batchnorm", 0) > 0
    assert model.training is False and any(p.requires_grad for p in model.parameters()), "original was modified"


def test_fuse_batchnorm_folds_forward_and_backward_pairs_only_where_exact():
    torch.manual_seed(0)
    model = randomize_batchnorm(
        nn.Sequential(
            ConvNormAct(nn.Conv2d, 4, 8, 3, norm_op=nn.BatchNorm2d),  # conv -> BN: folded
            nn.GELU(),
            nn.BatchNorm2d(8),  # BN -> unpadded 1x1 conv: folded into the conv after it
            nn.Conv2d(8, 6, 1),
            nn.GELU(),
            nn.BatchNorm2d(6),  # BN -> padded 3x3 conv: padding would see BN(0) != 0, so kept
            nn.Conv2d(6, 5, 3, padding=1),
        )
    )
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        reference = model(x)
        fused = fuse_batchnorm(randomize_batchnorm(_copy(model)))
        assert_close(fused(x), reference, rtol=1e-5)
    kinds = [type(m).__name__ for m in fused.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == ["BatchNorm2d"], "exactly the BN before the padded conv must remain"
    with pytest.raises(ValueError, match="eval mode"):
        fuse_batchnorm(_copy(model).train())


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


# --- ONNX export and onnxruntime parity -------------------------------------------------------------------------


@pytest.mark.parametrize("dim", SHAPES)
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.__name__)
def test_onnx_export_matches_pytorch_with_dynamic_batch(arch, dim, onnx_available, tmp_path):
    from nnunet_lite.deploy.onnx_runtime import create_session, export_onnx, max_abs_difference

    model, x = build(arch, dim)
    exportable = optimize_for_cpu_inference(model, for_export=True)
    export_onnx(exportable, x[:1], tmp_path / "model.onnx")  # traced with batch 1 ...
    session = create_session(tmp_path / "model.onnx", threads=1)
    diff, scale = max_abs_difference(session, model, x)  # ... run with batch 2, against the original network
    assert diff <= RTOL * max(1.0, scale), f"onnxruntime differs from PyTorch by {diff:.3g}"


def test_latency_benchmark_smoke(onnx_available):
    from nnunet_lite.deploy.benchmark import VARIANTS, benchmark_latency, format_latency_table

    networks = {"tiny AULUNet": AULUNet(3, 2).eval(), "tiny MedLiteNet": MedLiteNet(3, 2).eval()}
    variants = [v for v in VARIANTS if v != "compiled"]  # compiling takes tens of seconds
    rows = benchmark_latency(
        networks, (1, 3, 32, 32), threads=1, variants=variants, rounds=2, block_seconds=0.01, log=None
    )
    assert [(r["network"], r["variant"]) for r in rows] == [(n, v) for n in networks for v in variants]
    assert all(r["median_ms"] > 0 for r in rows) and rows[0]["speedup"] == pytest.approx(1.0)
    table = format_latency_table(rows)
    assert table.count("\n") == 1 + len(networks) and "onnxruntime ms" in table


def test_openvino_variant_equals_pytorch():
    pytest.importorskip("openvino")
    from nnunet_lite.deploy.benchmark import prepare_variant

    torch.manual_seed(0)
    model = LGMSNet(3, 2).eval()
    run = prepare_variant(model, "openvino", (1, 3, 64, 64), threads=1)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # prepare_variant's input
    with torch.no_grad():
        reference = model(x).numpy()
    out = run()
    assert out.shape == reference.shape and reference.std() > 0
    assert np.abs(out - reference).max() <= 1e-3 * max(1.0, np.abs(reference).max())


def test_profile_times_cpu_deployment_paths(onnx_available, tmp_path):
    report = tmp_path / "profile.json"
    args = ["--shape", "1", "3", "64", "64", "--num-classes", "2", "-tr", "nnUNetTrainerAULUNet", "--threads", "1"]
    args += ["--min-run-time", "0.05", "--skip-memory", "--cpu-paths", "optimized", "onnxruntime"]
    run_cli("nnunet_lite", "profile", *args, "--json", str(report))
    latency = json.loads(report.read_text())["profiles"][0]["latency"]
    assert [lat["path"] for lat in latency] == ["eager", "optimized", "onnxruntime"]
    assert all(lat["device"] == "cpu" and lat["threads"] == 1 and lat["median_s"] > 0 for lat in latency)
    table = run_cli("nnunet_lite", "profile", *args).stdout
    assert "forward cpu fp32 onnxruntime (1 thread) ms" in table and "forward cpu fp32 (1 thread) ms" in table


def test_benchmark_script_rewrites_only_the_marked_readme_table(onnx_available, tmp_path):
    script = Path(__file__).resolve().parent.parent / "scripts" / "benchmark_latency.py"
    sys.path.insert(0, str(script.parent))
    try:
        import benchmark_latency
    finally:
        sys.path.remove(str(script.parent))
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nintro\n", "\n## Next section\nkept\n"
    readme.write_text(f"{before}{benchmark_latency.BEGIN_MARKER}\nold table\n{benchmark_latency.END_MARKER}{after}")
    args = ["--shape", "1", "3", "128", "128", "--rounds", "1", "--block-seconds", "0.01", "--threads", "1"]
    assert benchmark_latency.main([*args, "--skip-compile", "--update-readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(before + benchmark_latency.BEGIN_MARKER)
    assert text.endswith(benchmark_latency.END_MARKER + after)
    assert "old table" not in text and "| nnU-Net default (PlainConvUNet) | 33.472 M |" in text
    assert "| AULUNet | 0.029 M |" in text and "onnxruntime ms (x)" in text

    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="needs exactly one"):
        benchmark_latency.main([*args, "--skip-compile", "--skip-onnxruntime", "--update-readme", str(readme)])
    assert readme.read_text() == "no markers here\n"


def test_sidecar_describes_regions_and_ct_normalisation():
    from types import SimpleNamespace

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_lite.deploy.sidecar import label_entries, normalization_entries

    ct = {"mean": 50.0, "std": 20.0, "percentile_00_5": -100.0, "percentile_99_5": 300.0}
    plans = PlansManager({"foreground_intensity_properties_per_channel": {"0": ct}})
    dataset_json = {
        "labels": {"background": 0, "organ": [1, 2], "lesion": 2},
        "regions_class_order": [1, 2],
        "channel_names": {"0": "CT"},
    }
    labels = label_entries(plans, dataset_json)
    assert labels["has_regions"] and labels["inference_nonlin"] == "sigmoid"
    assert labels["output_channels"] == [{"channel": 0, "region": [1, 2]}, {"channel": 1, "region": [2]}]
    (entry,) = normalization_entries(
        plans, SimpleNamespace(normalization_schemes=["CTNormalization"], use_mask_for_norm=[False]), dataset_json
    )
    assert entry["name"] == "CT" and entry["parameters"] == {
        "mean": 50.0,
        "std": 20.0,
        "clip_lower": -100.0,
        "clip_upper": 300.0,
    }


# --- a model trained with the stock nnU-Net commands: export, sidecar, predict ----------------------------------

DATASET_ID = "921"
TRAINER = "nnUNetTrainerMedLiteNet_test"  # conftest: 3 epochs x 40 iterations; learns visible lesions
MAX_DIFFERING_PIXELS = 2  # per case, of 4,096-9,856


@pytest.fixture(scope="module")
def trained(nnunet_env):  # the tests using it are marked slow: they drive the real nnU-Net commands
    """Dataset 921 planned and trained on fold 0 with nnUNetv2_* commands; one test image is larger than the patch,
    so that prediction slides a window over it."""
    pytest.importorskip("onnxruntime")
    from nnunet_lite.synthetic import make_lesion_dataset_2d

    export = nnunet_env / "exports" / "medlitenet"
    if (export / "model.json").is_file():  # trained by another module of this session (tests/test_precision.py)
        raw = Path(os.environ["nnUNet_raw"]) / f"Dataset{DATASET_ID}_SyntheticLesions"
        yield {"raw": raw, "export": export, "root": nnunet_env}
        return
    with pytest.MonkeyPatch.context() as mp:
        # the commands below run 2 intra-op threads; idle threads that spin stall badly on a shared, busy CPU
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")
        raw = make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), int(DATASET_ID), num_train=10, num_test=2, seed=3)
        big = Image.open(raw / "imagesTs" / "lesion_ts_000_0000.png").resize((112, 88), Image.BILINEAR)
        big.save(raw / "imagesTs" / "lesion_ts_big_0000.png")
        run_cli("nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "2d", "-np", "1", "-npfp", "1")
        run_cli("nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", TRAINER, "-device", "cpu")
        run_cli("nnunet_lite", "export", "-d", DATASET_ID, "-c", "2d", "-tr", TRAINER, "-f", "0", "-o", str(export))
        yield {"raw": raw, "export": export, "root": nnunet_env}


@pytest.mark.slow
def test_export_writes_verified_model_and_sidecar(trained):
    export = trained["export"]
    assert sorted(p.name for p in export.iterdir()) == ["dataset.json", "model.json", "model.onnx", "plans.json"]
    assert not list(export.parent.glob(".*tmp*")), "temporary export folder left behind"
    sidecar = json.loads((export / "model.json").read_text())
    plans = json.loads((export / "plans.json").read_text())
    assert sidecar["model"]["input_shape"] == ["batch", 3, *plans["configurations"]["2d"]["patch_size"]]
    assert sidecar["model"]["output_shape"][1] == 2 and sidecar["model"]["dynamic_batch"] is True
    source = sidecar["source"]
    assert (source["trainer_name"], source["plans_name"], source["configuration"]) == (TRAINER, "nnUNetPlans", "2d")
    assert source["nnunet_lite_version"] and source["checkpoint_epoch"] == 3
    prep = sidecar["preprocessing"]
    assert prep["spacing"] == plans["configurations"]["2d"]["spacing"] and prep["file_ending"] == ".png"
    assert [n["scheme"] for n in prep["normalization"]] == ["RGBTo01Normalization"] * 3
    assert sidecar["inference"]["allowed_mirroring_axes"] == [0, 1]
    assert sidecar["labels"]["labels"] == {"background": 0, "lesion": 1}
    assert sidecar["labels"]["inference_nonlin"] == "softmax"
    checks = sidecar["verification"]["checks"]
    assert any(c["input"].startswith("real image") for c in checks) and any("batch 2" in c["input"] for c in checks)
    assert sidecar["verification"]["max_relative_difference"] <= sidecar["verification"]["tolerance"]


@pytest.mark.slow
def test_sidecar_round_trip(trained, tmp_path):
    from nnunet_lite.deploy.sidecar import SidecarError, load_export, read_sidecar, write_json

    loaded = load_export(trained["export"])
    assert loaded.configuration_manager().patch_size == loaded.sidecar["inference"]["patch_size"]
    assert loaded.plans_manager().plans_name == loaded.sidecar["source"]["plans_name"]
    assert loaded.mirror_axes == (0, 1) and loaded.model_path.is_file()
    copy = tmp_path / "copy"
    shutil.copytree(trained["export"], copy)
    write_json(copy / "model.json", read_sidecar(copy))
    assert read_sidecar(copy) == loaded.sidecar
    (copy / "plans.json").unlink()
    with pytest.raises(SidecarError, match="plans.json is missing"):
        load_export(copy)
    (copy / "model.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(SidecarError, match="not an nnunet_lite export sidecar"):
        read_sidecar(copy)
    with pytest.raises(SidecarError, match="not an nnunet_lite export folder"):
        read_sidecar(tmp_path)


@pytest.mark.slow
def dice_between_folders(folder_a: Path, folder_b: Path, file_ending: str) -> dict:
    """Per-label Dice between two folders of segmentations with the same file names (nnU-Net's reader):
    ``{case: {label: dice}}``."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending

    files = sorted(p.name for p in folder_a.glob(f"*{file_ending}"))
    assert files, f"no *{file_ending} files in {folder_a}"
    reader = determine_reader_writer_from_file_ending(file_ending, str(folder_a / files[0]))()
    out = {}
    for name in files:
        a, _ = reader.read_seg(str(folder_a / name))
        b, _ = reader.read_seg(str(folder_b / name))
        labels = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
        out[name] = {
            int(label): float(2 * np.sum((a == label) & (b == label)) / max(1, np.sum(a == label) + np.sum(b == label)))
            for label in labels
        }
    return out


def test_predict_matches_nnunetv2_predict(trained, tmp_path):

    images = trained["raw"] / "imagesTs"
    reference, ours = tmp_path / "nnunetv2_predict", tmp_path / "nnunet_lite_predict"
    reference.mkdir()
    run_cli(
        "nnUNetv2_predict", "-i", str(images), "-o", str(reference), "-d", DATASET_ID, "-c", "2d", "-tr", TRAINER,
        "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
    )  # fmt: skip
    run_cli(
        "nnunet_lite", "predict", "-i", str(images), "-o", str(ours), "-m", str(trained["export"]),
        "--preprocess-workers", "0", "--export-workers", "0", "--threads", "1",
    )  # fmt: skip
    cases = ["lesion_ts_000.png", "lesion_ts_001.png", "lesion_ts_big.png"]
    assert sorted(p.name for p in ours.glob("*.png")) == sorted(p.name for p in reference.glob("*.png")) == cases
    dice = dice_between_folders(reference, ours, ".png")
    for case in cases:
        ref, seg = np.asarray(Image.open(reference / case)), np.asarray(Image.open(ours / case))
        assert seg.shape == ref.shape and (ref == 1).any(), case  # a real lesion segmentation, not an empty one
        # onnxruntime and PyTorch differ by float rounding (<= 1e-4 relative): only a pixel whose two logits tie that
        # closely may flip
        differing = int((seg != ref).sum())
        assert differing <= MAX_DIFFERING_PIXELS, f"{case}: {differing} of {ref.size} pixels differ"
        assert dice[case][1] == pytest.approx(
            2 * ((seg == 1) & (ref == 1)).sum() / ((seg == 1).sum() + (ref == 1).sum())
        )
    big = np.asarray(Image.open(ours / "lesion_ts_big.png"))
    assert big.shape == (88, 112), "segmentation not in the image's own size"


@pytest.mark.slow
def test_export_refuses_bad_input_with_clear_errors(trained, capsys):
    from nnunet_lite.cli import main

    export = str(trained["export"])
    common = ["export", "-d", DATASET_ID, "-c", "2d", "-tr", TRAINER]
    assert main([*common, "-f", "0", "-o", export]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*common, "-f", "1", "-o", export + "_fold1"]) == 1
    err = capsys.readouterr().err
    assert "fold_1" in err and f"nnUNetv2_train {DATASET_ID} 2d 1 -tr {TRAINER}" in err
    assert main([*common, "-f", "0", "-chk", "checkpoint_nope.pth", "-o", export + "_x"]) == 1
    assert "checkpoint_final.pth" in capsys.readouterr().err  # lists the checkpoints that exist
    assert main(["export", "-d", DATASET_ID, "-c", "2d", "-tr", "nnUNetTrainer", "-f", "0", "-o", export + "_x"]) == 1
    assert "no trained model at" in capsys.readouterr().err
    assert main(["predict", "-i", ".", "-o", export + "_pred", "-m", str(trained["root"])]) == 1
    assert "not an nnunet_lite export folder" in capsys.readouterr().err
    assert not Path(export + "_x").exists() and not Path(export + "_fold1").exists()


@pytest.mark.slow
def test_export_overwrite_replaces_folder_atomically(trained, tmp_path):
    from nnunet_lite.deploy.export import export_trained_model

    target = tmp_path / "export"
    target.mkdir()
    (target / "stale.txt").write_text("from an earlier export")
    result = export_trained_model(DATASET_ID, "2d", TRAINER, "0", target, overwrite=True, log=None)
    assert result.folder == target.resolve() and not (target / "stale.txt").exists()
    assert (target / "model.onnx").is_file() and not list(tmp_path.glob(".*"))
