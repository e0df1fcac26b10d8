"""Fused training forms (on by default) against the reference forms (``reference_forms()``): same outputs, same
gradients for the input and every parameter, and checkpoints that load both ways and predict identically."""

import copy

import pytest
import torch
from torch import nn

from nnunet_lite.architectures import blocks
from nnunet_lite.architectures.aulunet import AKF, AULUNet
from nnunet_lite.architectures.blocks import embed_kernel, reference_forms, training_forms_enabled
from nnunet_lite.architectures.lgmsnet import LMS, LGMSNet

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL = 1e-5
DIMS = {2: (nn.Conv2d, nn.BatchNorm2d, (20, 16)), 3: (nn.Conv3d, nn.InstanceNorm3d, (10, 8, 12))}


def close(out: torch.Tensor, ref: torch.Tensor, what: str, rtol: float = RTOL) -> None:
    assert out.shape == ref.shape, what
    diff, scale = (out - ref).abs().max().item(), max(1.0, ref.abs().max().item())
    assert diff <= rtol * scale, f"{what}: max |difference| {diff:.3g} > {rtol:g} * {scale:.3g}"


def randomize(module: nn.Module) -> nn.Module:
    """Non-zero biases and norm affines, so that every parameter's gradient is really compared."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return module


def outputs_and_grads(module: nn.Module, x: torch.Tensor, reference: bool) -> tuple[torch.Tensor, dict]:
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    if reference:
        with reference_forms():
            out = module(x)
    else:
        out = module(x)
    # a loss with a non-uniform upstream gradient, so that sums of equal terms cannot hide a wrong gradient
    (out * torch.linspace(-1, 2, out.numel()).reshape(out.shape)).sum().backward()
    grads = {"input": x.grad} | {name: p.grad for name, p in module.named_parameters()}
    return out.detach(), grads


def assert_training_form_equivalent(module: nn.Module, x: torch.Tensor, rtol: float = RTOL) -> None:
    ref_out, ref_grads = outputs_and_grads(module, x, reference=True)
    out, grads = outputs_and_grads(module, x, reference=False)
    close(out, ref_out, "output", rtol)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert g is not None and ref_grads[name] is not None, f"{name} got no gradient"
        close(g, ref_grads[name], f"gradient of {name}", rtol)


def test_reference_forms_is_a_reentrant_switch():
    assert training_forms_enabled()
    with reference_forms():
        assert not training_forms_enabled()
        with reference_forms():
            assert not training_forms_enabled()
        assert not training_forms_enabled()
    assert training_forms_enabled()
    with pytest.raises(RuntimeError), reference_forms():
        raise RuntimeError("restored even on error")
    assert training_forms_enabled() and blocks._reference_forms is False
    with torch.no_grad():
        assert not training_forms_enabled(), "inference keeps the reference forms"


def test_inference_and_flop_counts_use_the_reference_forms(monkeypatch):
    from nnunet_lite.profiling import count_flops

    calls = count_blends(monkeypatch)
    net = AULUNet(3, 1)
    with torch.no_grad():
        net(torch.randn(1, 3, 64, 64))
    assert not calls
    # counted MACs stay the papers' (the reference form), not those of the fused forms' zero-padded kernels
    for net in (AULUNet(3, 1), LGMSNet(3, 1)):
        with reference_forms():
            reference = count_flops(net, (1, 3, 128, 128))
        assert count_flops(net, (1, 3, 128, 128)) == reference, type(net).__name__


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_embedded_kernel_is_the_same_convolution_with_zero_taps(dim, dilation):
    torch.manual_seed(0)
    conv_op, _, spatial = DIMS[dim]
    conv = conv_op(4, 4, 3, padding=dilation, dilation=dilation, groups=4, bias=False)
    size = 2 * dilation + 3  # one zero ring around the dilated kernel
    weight = embed_kernel(conv.weight, size, dilation)
    assert weight.shape == (4, 1, *(size,) * dim)
    assert weight.abs().gt(0).sum() == conv.weight.numel(), "only the kernel's own taps are non-zero"
    x = torch.randn(2, 4, *spatial)
    close(blocks.CONV_FN[dim](x, weight, padding=size // 2, groups=4), conv(x), "embedded convolution")
    weight.sum().backward()
    assert torch.equal(conv.weight.grad, torch.ones_like(conv.weight)), "each original tap gets its own gradient"


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("kernels", [(3, 5, 7, 9), (3, 3, 3, 3), (5, 5, 5, 5), (9, 3, 1, 5)])
def test_lms_training_form_equals_four_depthwise_convolutions(dim, kernels):
    torch.manual_seed(0)
    conv_op, norm_op, spatial = DIMS[dim]
    lms = randomize(LMS(conv_op, 16, norm_op, kernels))
    assert_training_form_equivalent(lms, torch.randn(2, 16, *spatial))


def test_lms_training_form_in_channels_last():
    torch.manual_seed(0)
    lms = randomize(LMS(nn.Conv2d, 16, nn.BatchNorm2d)).to(memory_format=torch.channels_last)
    assert_training_form_equivalent(lms, torch.randn(3, 16, 24, 20).to(memory_format=torch.channels_last))


def count_blends(monkeypatch) -> list:
    calls = []
    original = AKF._blend_as_one_convolution
    monkeypatch.setattr(AKF, "_blend_as_one_convolution", lambda self, *a: calls.append(1) or original(self, *a))
    return calls


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_akf_training_form_equals_gated_dense_and_dilated_branches(dim, batch, monkeypatch):
    torch.manual_seed(0)
    conv_op, _, spatial = DIMS[dim]
    akf = randomize(AKF(conv_op, 6))
    calls = count_blends(monkeypatch)
    assert_training_form_equivalent(akf, torch.randn(batch, 6, *spatial))
    assert len(calls) == 1, "the training form ran once (and the reference form once)"


@pytest.mark.parametrize("dilations", [(2, 1), (1, 3), (3, 5), (1, 3, 5), (1,)])
def test_akf_ablations_train_the_same_in_both_forms(dilations, monkeypatch):
    torch.manual_seed(0)
    akf = randomize(AKF(nn.Conv2d, 6, dilations))
    calls = count_blends(monkeypatch)
    assert_training_form_equivalent(akf, torch.randn(2, 6, 20, 16))
    # only two branches whose embedded kernel is at most 5x5 are fused; the others keep the reference form
    assert len(calls) == (1 if dilations == (2, 1) else 0)


def test_akf_keeps_the_reference_form_on_large_maps(monkeypatch):
    akf = AKF(nn.Conv2d, 5)
    calls = count_blends(monkeypatch)
    akf(torch.randn(2, 5, 64, 64))
    akf(torch.randn(2, 5, 64, 128))  # above fused_max_voxels: measured slower fused
    assert len(calls) == 1 and AKF.fused_max_voxels == 64 * 64


NETWORKS = {
    "lgmsnet": (LGMSNet, {}, 32),
    "lgmsnet_LMS3333": (LGMSNet, {"lms_kernels": (3, 3, 3, 3)}, 32),
    "aulunet": (AULUNet, {}, 32),
    "aulunet_d135": (AULUNet, {"akf_dilations": (1, 3, 5)}, 32),
}


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("dim", [2, 3])
def test_network_trains_the_same_in_both_forms(name, dim):
    arch, kwargs, size = NETWORKS[name]
    conv_op = DIMS[dim][0]
    torch.manual_seed(0)
    # eval mode: batch statistics of the 1x1 bottom maps of a batch of 2 amplify rounding arbitrarily (the blocks are
    # compared in training mode above); gradients still reach every parameter
    net = randomize(arch(2, 3, conv_op=conv_op, **kwargs)).eval()
    assert_training_form_equivalent(net, torch.randn(2, 2, *(size,) * dim), rtol=1e-4)


@pytest.mark.parametrize("name", NETWORKS)
def test_checkpoints_load_both_ways_and_predict_identically(name, tmp_path):
    arch, kwargs, size = NETWORKS[name]
    x = torch.randn(2, 3, size, size)
    torch.manual_seed(0)
    written = randomize(arch(3, 2, **kwargs))
    written(x)  # one training-mode pass: BatchNorm running statistics are part of the checkpoint
    with reference_forms():  # a checkpoint written by the reference form (as before this change) ...
        torch.save(written.state_dict(), tmp_path / "reference.pth")
        ref_prediction = written.eval()(x)
    torch.manual_seed(1)
    loaded = arch(3, 2, **kwargs)
    loaded.load_state_dict(torch.load(tmp_path / "reference.pth"))  # ... loads strictly into the training form
    close(loaded.eval()(x), ref_prediction, "training form from a reference checkpoint")
    torch.save(loaded.state_dict(), tmp_path / "training.pth")
    back = copy.deepcopy(written)
    back.load_state_dict(torch.load(tmp_path / "training.pth"))
    with reference_forms():  # and the reverse
        close(back.eval()(x), ref_prediction, "reference form from a training-form checkpoint")
    assert list(torch.load(tmp_path / "training.pth")) == list(written.state_dict()), "state_dict keys unchanged"
