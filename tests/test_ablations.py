"""Ablation trainers (issue 21): names, parameter changes, 2D/3D forward and backward, nnU-Net's ``train_step``.

Every variant is the full network built with other constructor options; a variant that only removes modules must lose
exactly those modules' parameters, which is computed here from the full network itself.
"""

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nnunet_lite.architectures import AULUNet, LGMSNet, MedLiteNet
from nnunet_lite.architectures.aulunet import AKF
from nnunet_lite.architectures.lgmsnet import GMS, LMS
from nnunet_lite.architectures.medlitenet import MobileNetV2Encoder, ResNet18Encoder
from nnunet_lite.synthetic import make_lesion_dataset_2d
from nnunet_lite.trainers import TRAINERS

from .conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

# The table: study files and scripts rely on these names.
SUFFIXES = {
    "AULUNet": "noAKF noRGF noLSG onlyAKF onlyRGF onlyLSG plain d13 d24 d15 d17 d35 d135 d357".split(),
    "LGMSNet": "LMS3333 LMS5555 GMS1to1 GMS1to3 GMSconv GMSattn".split(),
    "MedLiteNet": "noBAA noTransformer ResNet18".split(),
}
VARIANTS = [f"nnUNetTrainer{arch}_{s}" for arch, suffixes in SUFFIXES.items() for s in suffixes]
PAPER_VARIANTS = [f"nnUNetTrainer{arch}_paper_{s}" for arch, suffixes in SUFFIXES.items() for s in suffixes]
# 2D: a square patch that every network takes (32 = their total stride); 3D: a small anisotropic nnU-Net plan (LGMSNet
# groups tokens with patch 1 along the thin axis where it is odd).
PLAN_2D = ([32, 32], [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]])
PLAN_3D = ([4, 32, 32], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]])
# sha256 of "key shape" lines of the default networks' state_dicts (3 inputs in 2D, 1 in 3D, 2 classes), measured on
# the code before the ablation options existed: checkpoints trained then must keep loading.
STATE_DICT_FINGERPRINTS = {
    ("AULUNet", 2): "26abf1cdb37be2fe",
    ("AULUNet", 3): "367d9b710ce3c9ab",
    ("LGMSNet", 2): "6638d55ba3ecc26b",
    ("LGMSNet", 3): "c550aacb56c8ac34",
    ("MedLiteNet", 2): "62b3920b30a9ff5f",
    ("MedLiteNet", 3): "3c85ca76024ae5c9",
}


def num_params(module: nn.Module | None) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def build(name: str, plan: tuple = PLAN_2D, in_channels: int = 3) -> nn.Module:
    configuration = SimpleNamespace(patch_size=plan[0], pool_op_kernel_sizes=plan[1], data_identifier="stub")
    return TRAINERS[name].build_network_architecture(None, configuration, in_channels, 2, False)


def full_network(name: str, plan: tuple = PLAN_2D) -> nn.Module:
    return build(TRAINERS[name].ablation_of.__name__, plan)


def test_every_named_variant_exists_with_both_recipes():
    for name in VARIANTS + PAPER_VARIANTS:
        cls = TRAINERS[name]
        base = name.rsplit("_", 1)[0]
        assert cls.ablation_of is TRAINERS[base] and cls.ablation == name.rsplit("_", 1)[1]
        assert issubclass(cls, TRAINERS[base]) and cls.__module__ == TRAINERS[base].__module__
        assert set(TRAINERS[base].arch_kwargs) < set(cls.arch_kwargs), f"{name} changes no option"
    ablations = {n for n, c in TRAINERS.items() if getattr(c, "ablation", None)}
    assert ablations == set(VARIANTS + PAPER_VARIANTS)
    assert TRAINERS["nnUNetTrainerAULUNet_paper_noAKF"].hyperparameters["num_epochs"] == 400  # the paper's recipe


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("arch", [AULUNet, LGMSNet, MedLiteNet], ids=lambda a: a.__name__)
def test_default_options_keep_the_published_state_dict(arch, dim):
    net = arch(3 if dim == 2 else 1, 2, conv_op=nn.Conv2d if dim == 2 else nn.Conv3d)
    text = "\n".join(f"{k} {tuple(v.shape)}" for k, v in net.state_dict().items())
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == STATE_DICT_FINGERPRINTS[(arch.__name__, dim)]


def _akf_parts(net: nn.Module) -> int:
    """What ``_noAKF`` removes: every AKF's dilated branch and gate."""
    return sum(num_params(m.dw_dilated) + num_params(m.gate_conv) for m in net.modules() if isinstance(m, AKF))


# Per removal, the full network's parameters that it takes away (the variant must lose exactly these).
AULUNET_PARTS = {
    "AKF": _akf_parts,
    "RGF": lambda net: num_params(net.bottleneck),
    "LSG": lambda net: num_params(net.skip_gates),
}
REMOVED = {
    "noAKF": ["AKF"],
    "noRGF": ["RGF"],
    "noLSG": ["LSG"],
    "onlyAKF": ["RGF", "LSG"],
    "onlyRGF": ["AKF", "LSG"],
    "onlyLSG": ["AKF", "RGF"],
    "plain": ["AKF", "RGF", "LSG"],
}


@pytest.mark.parametrize("plan", [PLAN_2D, PLAN_3D], ids=["2d", "3d"])
def test_aulunet_variants_lose_exactly_the_removed_modules(plan):
    full = full_network("nnUNetTrainerAULUNet_noAKF", plan)
    full_keys = dict(full.state_dict())
    for suffix, parts in REMOVED.items():
        variant = build(f"nnUNetTrainerAULUNet_{suffix}", plan)
        removed = sum(AULUNET_PARTS[p](full) for p in parts)
        assert num_params(full) - num_params(variant) == removed, suffix
        # what remains is the full network's own modules: same names and shapes
        assert all(full_keys[k].shape == v.shape for k, v in variant.state_dict().items()), suffix
    assert (
        num_params(full) - num_params(build("nnUNetTrainerAULUNet_plain", plan)) == {2: 14_455, 3: 17_785}[len(plan[0])]
    )


def test_aulunet_dilation_variants():
    full = full_network("nnUNetTrainerAULUNet_d13")
    shapes = {k: v.shape for k, v in full.state_dict().items()}
    akfs = [m for m in full.modules() if isinstance(m, AKF)]
    # three branches: one more depthwise 3x3 per AKF and a C -> 3C softmax gate instead of the C -> C sigmoid gate
    extra = sum(num_params(m.dw_local) + 2 * num_params(m.gate_conv) for m in akfs)
    for suffix, dilations in [("d13", (1, 3)), ("d24", (2, 4)), ("d15", (1, 5)), ("d17", (1, 7)), ("d35", (3, 5))]:
        net = build(f"nnUNetTrainerAULUNet_{suffix}")
        assert {k: v.shape for k, v in net.state_dict().items()} == shapes  # same weights, other dilations
        assert {m.dilations for m in net.modules() if isinstance(m, AKF)} == {dilations}
        assert net.decoders[0].dw_dilated.dilation == (dilations[1],) * 2
    for suffix in ("d135", "d357"):
        net = build(f"nnUNetTrainerAULUNet_{suffix}")
        assert num_params(net) == num_params(full) + extra, suffix
        assert len([m for m in net.modules() if isinstance(m, AKF)]) == len(akfs) == 11


def test_akf_softmax_gating_weights_the_branches():
    torch.manual_seed(0)
    akf = AKF(nn.Conv2d, 4, (1, 3, 5)).eval()
    x = torch.randn(2, 4, 12, 12)
    weights = akf.branch_weights(x)
    assert len(weights) == 3 and all(w.shape == (2, 4, 1, 1) for w in weights)
    torch.testing.assert_close(sum(weights), torch.ones(2, 4, 1, 1))
    with torch.no_grad():
        akf.gate_conv.weight.zero_()
        akf.gate_conv.bias.copy_(torch.tensor([0.0] * 4 + [100.0] * 4 + [0.0] * 4))  # all weight on branch 2
        torch.testing.assert_close(akf(x), akf.project(akf.dw_dilated(x)))
    single = AKF(nn.Conv2d, 4, (1,)).eval()
    assert not hasattr(single, "gate_conv") and not hasattr(single, "dw_dilated")
    torch.testing.assert_close(single(x), single.project(single.dw_local(x)))
    with pytest.raises(ValueError, match=r"AKF dilations must be one or more positive integers, got \(0, 2\)"):
        AKF(nn.Conv2d, 4, (0, 2))


@pytest.mark.parametrize("plan", [PLAN_2D, PLAN_3D], ids=["2d", "3d"])
def test_lgmsnet_kernel_variants_change_only_the_lms_depthwise_kernels(plan):
    dim = len(plan[0])
    full = full_network("nnUNetTrainerLGMSNet_LMS3333", plan)
    lms_convs = [conv for m in full.modules() if isinstance(m, LMS) for conv in m.dw]
    for k in (3, 5):
        net = build(f"nnUNetTrainerLGMSNet_LMS{k}{k}{k}{k}", plan)
        # each group's depthwise kernel (with bias) becomes k x k: out_channels * k^dim weights + out_channels biases
        expected = num_params(full) - sum(num_params(c) - c.out_channels * (k**dim + 1) for c in lms_convs)
        assert num_params(net) == expected
        assert {m.kernels for m in net.modules() if isinstance(m, LMS)} == {(k,) * 4}


@pytest.mark.parametrize(
    ("suffix", "transformer_share"), [("GMS1to1", 1 / 2), ("GMS1to3", 1 / 4), ("GMSconv", 0), ("GMSattn", 1)]
)
def test_lgmsnet_gms_split_variants(suffix, transformer_share):
    full = full_network("nnUNetTrainerLGMSNet_GMSconv")
    net = build(f"nnUNetTrainerLGMSNet_{suffix}")

    def outside_branches(model: nn.Module) -> dict:
        return {
            k: v.shape for k, v in model.state_dict().items() if ".transformer." not in k and "conv_branch" not in k
        }

    assert outside_branches(net) == outside_branches(full)  # only the two branches of the GMS blocks change
    full_gms = [m for m in full.modules() if isinstance(m, GMS)]
    gms = [m for m in net.modules() if isinstance(m, GMS)]
    assert len(gms) == len(full_gms) == 4
    for block, reference in zip(gms, full_gms, strict=True):
        channels = reference.merge[0].in_channels
        assert block.transformer_channels == channels * transformer_share
        assert (block.transformer is None) == (transformer_share == 0)
        assert (block.conv_branch is None) == (transformer_share == 1)
        if block.conv_branch is not None:  # depthwise branch: its parameters scale with its channels
            per_channel = num_params(reference.conv_branch) / (channels - reference.transformer_channels)
            assert num_params(block.conv_branch) == per_channel * (channels - block.transformer_channels)
    if suffix == "GMSconv":  # only removes the Transformers ... and gives their channels to the conv branch
        transformers = sum(num_params(m.transformer) for m in full_gms)
        widened = sum(num_params(m.conv_branch) * 3 for m in full_gms)  # 3:1 -> 0:1 quadruples the branch
        assert num_params(full) - num_params(net) == transformers - widened


def test_medlitenet_variants():
    full = full_network("nnUNetTrainerMedLiteNet_noBAA")
    no_baa = build("nnUNetTrainerMedLiteNet_noBAA")
    removed = num_params(full.encoder_boundary) + num_params(full.decoder_boundary)
    assert num_params(full) - num_params(no_baa) == removed == 2 * 149
    no_transformer = build("nnUNetTrainerMedLiteNet_noTransformer")
    removed = num_params(full.local_global) - num_params(full.local_global.local)
    assert num_params(full) - num_params(no_transformer) == removed == 979_520 - 418_560
    for variant in (no_baa, no_transformer):
        full_keys = dict(full.state_dict())
        assert all(full_keys[k].shape == v.shape for k, v in variant.state_dict().items())

    resnet = build("nnUNetTrainerMedLiteNet_ResNet18")
    assert isinstance(resnet.encoder, ResNet18Encoder) and isinstance(full.encoder, MobileNetV2Encoder)
    assert num_params(resnet.encoder) == 11_176_512  # torchvision's resnet18 without avgpool and fc
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = [f.shape[2:] for f in resnet.encoder.eval()(x)]
        assert stages == [f.shape[2:] for f in full.encoder.eval()(x)]  # the same five stage resolutions
    assert resnet.encoder.out_channels == (64, 64, 128, 256, 512)


@pytest.mark.parametrize("plan", [PLAN_2D, PLAN_3D], ids=["2d", "3d"])
def test_every_variant_gives_logits_and_gradients_to_every_parameter(plan):
    torch.manual_seed(0)
    in_channels = 3 if len(plan[0]) == 2 else 1
    x = torch.randn(2, in_channels, *plan[0])
    for name in VARIANTS:
        net = build(name, plan, in_channels)
        out = net(x)
        assert out.shape == (2, 2, *plan[0]) and torch.isfinite(out).all(), name
        (out * torch.randn_like(out)).sum().backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"{name}: no gradient for {missing}"


def _plans_2d() -> tuple[dict, dict]:
    """Minimal nnU-Net plans and dataset.json with one 2D configuration (what the trainers read)."""
    configuration = {
        "data_identifier": "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "patch_size": PLAN_2D[0],
        "spacing": [1.0, 1.0],
        "batch_size": 2,
        "batch_dice": True,
        "architecture": {"network_class_name": "unused", "arch_kwargs": {"strides": PLAN_2D[1]}},
    }
    plans = {
        "dataset_name": "Dataset999_Stub",
        "plans_name": "nnUNetPlans",
        "label_manager": "LabelManager",
        "configurations": {"2d": configuration},
    }
    return plans, {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 1}}


def test_every_variant_runs_nnunet_train_step(tmp_path, monkeypatch):
    """nnU-Net's own ``train_step`` (loss, backward, clipping, optimizer step) once per variant and recipe, with the
    trainer's own network, loss and optimizer (what ``initialize`` builds, without a preprocessed dataset)."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans, dataset_json = _plans_2d()
    torch.manual_seed(0)
    batch = {"data": torch.randn(2, 3, *PLAN_2D[0]), "target": (torch.rand(2, 1, *PLAN_2D[0]) > 0.7).float()}
    for name in VARIANTS + PAPER_VARIANTS:
        trainer = TRAINERS[name]({**plans, "continue_training": False}, "2d", 0, dataset_json, torch.device("cpu"))
        trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 3, 2)
        trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
        trainer.loss = trainer._build_loss()
        before = [p.detach().clone() for p in trainer.network.parameters()]
        loss = float(trainer.train_step(batch)["loss"])
        assert 0 < loss < 10, f"{name}: loss {loss}"
        assert all(p.grad is not None for p in trainer.network.parameters()), f"{name}: parameter without gradient"
        changed = sum(not torch.equal(a, p) for a, p in zip(before, trainer.network.parameters(), strict=True))
        assert changed > 0.9 * len(before), f"{name}: the optimizer step moved only {changed} of {len(before)} tensors"


def test_architecture_options_rebuild_the_variant_exactly():
    """What ``nnunet_lite export`` records: the options (JSON) plus the plans rebuild the same network."""
    for name in VARIANTS:
        net = build(name)
        options = json.loads(json.dumps(net.architecture_options))
        assert all(options[k] == json.loads(json.dumps(v)) for k, v in TRAINERS[name].arch_kwargs.items())
        kwargs = type(net).kwargs_from_plans(*PLAN_2D)
        # in the trainer's layout (channels-last for most 2D networks): the same kernels, so the same numbers
        rebuilt = type(net)(3, 2, conv_op=nn.Conv2d, **kwargs, **options).to(
            memory_format=TRAINERS[name].memory_format_2d
        )
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in net.state_dict().items()
        }
        rebuilt.load_state_dict(net.state_dict())
        x = torch.randn(1, 3, *PLAN_2D[0])
        with torch.no_grad():
            torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x))
    custom = LGMSNet(3, 2, norm_op=nn.InstanceNorm2d, gms_ratio=(1, 1))  # ops are recorded as nnU-Net's dotted names
    options = json.loads(json.dumps(custom.architecture_options))
    assert options["norm_op"] == "torch.nn.modules.instancenorm.InstanceNorm2d"
    assert LGMSNet(3, 2, **options).architecture_options == custom.architecture_options
    with pytest.raises(ValueError, match=r"GMS ratio \(3, 1, 1\) must be two non-negative integers"):
        LGMSNet(3, 2, gms_ratio=(3, 1, 1))
    with pytest.raises(ValueError, match=r"LMS needs 4 odd kernel sizes .*got \(3, 4, 5, 7\)"):
        LGMSNet(3, 2, lms_kernels=(3, 4, 5, 7))
    with pytest.raises(ValueError, match=r"backbone 'resnet50' is not one of \['mobilenet_v2', 'resnet18'\]"):
        MedLiteNet(3, 2, backbone="resnet50")


# --- the real nnU-Net commands: one variant per network trains; one is exported and rebuilt from its sidecar ---------

SMOKE_TRAINERS = """
from nnunet_lite import trainers

SMOKE = {"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1}


class nnUNetTrainerAULUNet_d135_smoke(trainers.nnUNetTrainerAULUNet_d135):
    hyperparameters = SMOKE


class nnUNetTrainerLGMSNet_GMSconv_smoke(trainers.nnUNetTrainerLGMSNet_GMSconv):
    hyperparameters = SMOKE


class nnUNetTrainerMedLiteNet_ResNet18_smoke(trainers.nnUNetTrainerMedLiteNet_ResNet18):
    hyperparameters = SMOKE
"""
SMOKE_DATASET = "941"


@pytest.mark.slow
def test_variants_train_with_nnunetv2_train_and_export_rebuilds_exactly(nnunet_env, monkeypatch):
    """``nnUNetv2_train -tr <variant>`` for one variant per network (1 epoch of 2 iterations; nnU-Net's final
    validation included), then ``nnunet_lite export`` of one: its sidecar records the variant's options, and the network
    rebuilt from them and the plans, with the checkpoint's weights, gives onnxruntime's logits."""
    pytest.importorskip("onnxruntime")
    from nnunet_lite.deploy.onnx_runtime import create_session, run_session

    ext = nnunet_env / "ablation_trainers"
    ext.mkdir()
    (ext / "nnunet_lite_ablation_smoke_trainers.py").write_text(SMOKE_TRAINERS)
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([os.environ["nnUNet_extTrainer"], str(ext)]))
    raw = make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), int(SMOKE_DATASET), num_train=10, num_test=1, seed=4)
    run_cli("nnUNetv2_plan_and_preprocess", "-d", SMOKE_DATASET, "-c", "2d", "-np", "1", "-npfp", "1")
    # training only (planning crashes with 0): augmentation in the training process, no worker start-up
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    results = Path(os.environ["nnUNet_results"]) / raw.name
    for variant in ("nnUNetTrainerAULUNet_d135", "nnUNetTrainerLGMSNet_GMSconv", "nnUNetTrainerMedLiteNet_ResNet18"):
        run_cli("nnUNetv2_train", SMOKE_DATASET, "2d", "0", "-tr", f"{variant}_smoke", "-device", "cpu")
        fold = results / f"{variant}_smoke__nnUNetPlans__2d" / "fold_0"
        checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert checkpoint["current_epoch"] == 1 and checkpoint["trainer_name"] == f"{variant}_smoke"
        reference = build(variant, in_channels=3)  # the variant's own module tree, not the full network's
        assert {k: v.shape for k, v in checkpoint["network_weights"].items()} == {
            k: v.shape for k, v in reference.state_dict().items()
        }
        assert json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"] >= 0

    trainer = "nnUNetTrainerMedLiteNet_ResNet18_smoke"
    export = nnunet_env / "exports" / "ablation"
    run_cli("nnunet_lite", "export", "-d", SMOKE_DATASET, "-c", "2d", "-tr", trainer, "-f", "0", "-o", str(export))
    sidecar = json.loads((export / "model.json").read_text())
    options = sidecar["source"]["network_options"]
    assert options["backbone"] == "resnet18" and options["use_transformer"] and options["use_boundary_attention"]
    assert sidecar["source"]["network_class"] == "nnunet_lite.architectures.medlitenet.MedLiteNet"
    configuration = json.loads((export / "plans.json").read_text())["configurations"]["2d"]
    patch, pools = configuration["patch_size"], configuration["architecture"]["arch_kwargs"]["strides"]
    rebuilt = MedLiteNet(3, 2, conv_op=nn.Conv2d, **MedLiteNet.kwargs_from_plans(patch, pools), **options)
    weights = torch.load(
        results / f"{trainer}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth",
        map_location="cpu",
        weights_only=False,
    )["network_weights"]
    rebuilt.load_state_dict(weights)  # strict: same modules, same shapes
    x = torch.randn(2, 3, *patch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = rebuilt.eval()(x).numpy()
    got = run_session(create_session(export / "model.onnx", threads=1), x)
    assert abs(got - expected).max() <= 1e-4 * max(1.0, abs(expected).max())


def test_docs_list_every_variant_with_its_parameters():
    """docs/ablations.md's table comes from ``nnunet_lite profile`` (2 output channels, 1x3x256x256); it must match
    the code: every parameter count, and the GMACs (3 decimals) of the full networks and one variant each (counting
    all of them would add ~15 s of CPU)."""
    from nnunet_lite.profiling import count_flops

    doc = (Path(__file__).resolve().parents[1] / "docs" / "ablations.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`nnUNetTrainer"):
            rows[cells[0].strip("`")] = (int(cells[3].replace(",", "")), float(cells[6]))
    bases = [f"nnUNetTrainer{arch}" for arch in SUFFIXES]
    assert set(rows) == set(VARIANTS + bases)
    for name, (params, gmacs) in rows.items():
        net = build(name)
        assert num_params(net) == params, name
        if name in bases or name.endswith(("_d135", "_GMSconv", "_ResNet18")):  # meta tensors: no arithmetic
            assert round(count_flops(net.to("meta"), (1, 3, 256, 256)) / 2e9, 3) == gmacs, name
