"""Training-speed changes that change no result (issue 23): channels-last 2D networks, CPU compile opt-in, and the
opt-in ``_bf16`` variants of every main trainer."""

import copy
from types import SimpleNamespace

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lite.trainer_base import nnUNetTrainerLite
from nnunet_lite.trainers import TRAINERS
from nnunet_lite.trainers.precision import BF16_BASES, Bf16Training

pytestmark = pytest.mark.usefixtures("one_thread")
NETWORKS = ("AULUNet", "LGMSNet", "MedLiteNet")
PLAN_2D = ([32, 32], [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]])
PLAN_3D = ([4, 32, 32], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]])


def build(name: str, plan: tuple, in_channels: int) -> torch.nn.Module:
    configuration = SimpleNamespace(patch_size=plan[0], pool_op_kernel_sizes=plan[1], data_identifier="stub")
    return TRAINERS[name].build_network_architecture(None, configuration, in_channels, 2, False)


def forward_backward(network: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    network.zero_grad(set_to_none=True)
    out = network(x)
    (out.square().mean() + out[:, 1].mean()).backward()
    return out.detach(), [p.grad.detach().clone() for p in network.parameters()]


CHANNELS_LAST = ("LGMSNet", "MedLiteNet")  # AULUNet's training step measured no faster in NHWC: it stays NCHW


def test_channels_last_where_it_was_measured_faster():
    for arch in NETWORKS:
        layout = torch.channels_last if arch in CHANNELS_LAST else torch.contiguous_format
        weights = [
            p for p in build(f"nnUNetTrainer{arch}", PLAN_2D, 3).parameters() if p.dim() == 4 and p.shape[-1] > 1
        ]
        assert weights and all(p.is_contiguous(memory_format=layout) for p in weights), arch
        assert all(TRAINERS[n].memory_format_2d == layout for n in TRAINERS if n.startswith(f"nnUNetTrainer{arch}"))


@pytest.mark.parametrize("arch", CHANNELS_LAST)
def test_2d_networks_train_channels_last_with_the_reference_numbers(arch):
    torch.manual_seed(0)
    fast = build(f"nnUNetTrainer{arch}", PLAN_2D, 3).train()
    convolution_weights = [p for p in fast.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convolution_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolution_weights)
    reference = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)  # the layout before the change
    assert not any(p.is_contiguous() is False for p in reference.parameters())
    x = torch.randn(2, 3, *PLAN_2D[0])
    out_fast, grads_fast = forward_backward(fast, x)
    out_ref, grads_ref = forward_backward(reference, x)
    assert out_fast.is_contiguous(memory_format=torch.channels_last)  # the activations follow the weights' layout
    # other kernels sum in another order: float32 rounding, scaled to each tensor's magnitude
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-3, atol=1e-4 * float(out_ref.abs().max()))
    # weight gradients sum over batch and pixels; a bias before a normalisation has a true gradient of 0 and noise
    floor = 1e-5 * max(float(g.abs().max()) for g in grads_ref)
    for (name, _), g_fast, g_ref in zip(fast.named_parameters(), grads_fast, grads_ref, strict=True):
        tolerance = 1e-3 * float(g_ref.abs().max()) + floor
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=tolerance, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("arch", CHANNELS_LAST)
def test_checkpoints_of_the_contiguous_layout_load_and_predict_identically(arch):
    """A state_dict saved before the change (contiguous weights) loads into today's network and gives the same logits,
    and a state_dict saved today loads into a contiguous network (older nnunet_lite, other tools)."""
    torch.manual_seed(1)
    old = build(f"nnUNetTrainer{arch}", PLAN_2D, 3).to(memory_format=torch.contiguous_format).eval()
    state = {k: v.clone() for k, v in old.state_dict().items()}
    assert all(v.is_contiguous() for v in state.values())
    new = build(f"nnUNetTrainer{arch}", PLAN_2D, 3).eval()
    new.load_state_dict(state)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in new.parameters() if p.dim() == 4)
    x = torch.randn(1, 3, *PLAN_2D[0])
    with torch.no_grad():
        reference = old(x)
        tolerance = 1e-4 * float(reference.abs().max())
        torch.testing.assert_close(new(x), reference, rtol=1e-3, atol=tolerance)
        back = build(f"nnUNetTrainer{arch}", PLAN_2D, 3).to(memory_format=torch.contiguous_format).eval()
        back.load_state_dict(new.state_dict())
        torch.testing.assert_close(back(x), reference, rtol=0, atol=0)  # the same layout: the same numbers


def test_3d_networks_keep_the_default_layout():
    network = build("nnUNetTrainerLGMSNet", PLAN_3D, 1)
    assert all(p.is_contiguous() for p in network.parameters())


def test_cpu_compile_is_opt_in_for_lite_trainers_only(monkeypatch):
    cpu = SimpleNamespace(device=torch.device("cpu"), print_to_log_file=lambda *a, **k: None)
    monkeypatch.delenv("nnUNet_compile", raising=False)
    assert nnUNetTrainerLite._do_i_compile(cpu) is False
    for value, expected in (("t", True), ("TRUE", True), ("1", True), ("f", False), ("false", False)):
        monkeypatch.setenv("nnUNet_compile", value)
        assert nnUNetTrainerLite._do_i_compile(cpu) is expected, value
        assert nnUNetTrainer._do_i_compile(cpu) is False  # nnU-Net's own trainer: unchanged, never on CPU


def test_bf16_variants_of_every_main_trainer_including_nnunets():
    names = {f"{base.__name__}_bf16" for base in BF16_BASES}
    assert "nnUNetTrainer_bf16" in names and "nnUNetTrainerLGMSNet_paper_bf16" in names
    assert names <= set(TRAINERS)
    for base in BF16_BASES:
        variant = TRAINERS[f"{base.__name__}_bf16"]
        assert variant.__mro__[1:3] == (Bf16Training, base)
        # nothing but the precision differs: same hyperparameters, network and loss weights as the base
        for attribute in ("hyperparameters", "arch_kwargs", "loss_weights", "architecture"):
            assert getattr(variant, attribute, None) == getattr(base, attribute, None)


def _stub_plans() -> tuple[dict, dict]:
    configuration = {
        "data_identifier": "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "patch_size": PLAN_2D[0],
        "spacing": [1.0, 1.0],
        "batch_size": 2,
        "batch_dice": True,
        "UNet_class_name": "PlainConvUNet",
        "UNet_base_num_features": 8,
        "n_conv_per_stage_encoder": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "num_pool_per_axis": [2, 2],
        "pool_op_kernel_sizes": [[1, 1], [2, 2], [2, 2]],
        "conv_kernel_sizes": [[3, 3], [3, 3], [3, 3]],
        "unet_max_num_features": 32,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": 3,
                "features_per_stage": [8, 16, 32],
                "conv_op": "torch.nn.modules.conv.Conv2d",
                "kernel_sizes": [[3, 3], [3, 3], [3, 3]],
                "strides": [[1, 1], [2, 2], [2, 2]],
                "n_conv_per_stage": [1, 1, 1],
                "n_conv_per_stage_decoder": [1, 1],
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
    }
    plans = {
        "dataset_name": "Dataset999_Stub",
        "plans_name": "nnUNetPlans",
        "label_manager": "LabelManager",
        "configurations": {"2d": configuration},
    }
    return plans, {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 1}}


@pytest.mark.parametrize("name", ["nnUNetTrainer", "nnUNetTrainerAULUNet"])
def test_bf16_variant_runs_nnunets_train_step_in_bf16_and_the_base_in_fp32(name, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans, dataset_json = _stub_plans()
    batch = {"data": torch.randn(2, 3, *PLAN_2D[0]), "target": (torch.rand(2, 1, *PLAN_2D[0]) > 0.7).float()}
    dtypes = {}
    for trainer_name in (name, f"{name}_bf16"):
        cls = nnUNetTrainer if trainer_name == "nnUNetTrainer" else TRAINERS[trainer_name]
        trainer = cls({**plans, "continue_training": False}, "2d", 0, dataset_json, torch.device("cpu"))
        trainer.network = trainer.build_network_architecture(
            trainer.plans_manager, trainer.configuration_manager, 3, 2, trainer.enable_deep_supervision
        )
        trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
        trainer.loss = trainer._build_loss()
        if trainer.enable_deep_supervision:
            batch_target = [batch["target"], batch["target"][:, :, ::2, ::2], batch["target"][:, :, ::4, ::4]]
        else:
            batch_target = batch["target"]
        seen = []
        handle = trainer.network.register_forward_hook(
            lambda module, args, output, seen=seen: seen.append(
                output[0].dtype if isinstance(output, list) else output.dtype
            )
        )
        loss = float(trainer.train_step({"data": batch["data"], "target": batch_target})["loss"])
        handle.remove()
        assert 0 < loss < 10
        assert all(p.dtype == torch.float32 for p in trainer.network.parameters())  # master weights stay fp32
        dtypes[trainer_name] = seen[0]
    assert dtypes == {name: torch.float32, f"{name}_bf16": torch.bfloat16}
