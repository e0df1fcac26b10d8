"""CUDA: the networks under nnU-Net's mixed precision, and a test trainer through nnUNetv2_train on the GPU.

Marked ``gpu``; skipped where torch sees no CUDA device (CI runs on CPU). ``pytest -m gpu`` runs only these.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_lite.architectures import AULUNet, LGMSNet, MedLiteNet

from .baselines import assert_beats_constant_baselines, read_masks
from .conftest import run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SHAPES = {"2d": (nn.Conv2d, (2, 3, 64, 64)), "3d": (nn.Conv3d, (2, 1, 32, 32, 32))}


@pytest.fixture
def exact_fp32():
    """No TF32 in fp32 convolutions and matmuls, so that CUDA fp32 can be held to CPU fp32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("dim", SHAPES)
@pytest.mark.parametrize("arch", (AULUNet, LGMSNet, MedLiteNet), ids=lambda a: a.__name__)
def test_cuda_forward_matches_cpu_and_amp_training_step(arch, dim, exact_fp32):
    conv_op, shape = SHAPES[dim]
    torch.manual_seed(0)
    net = arch(shape[1], 3, conv_op=conv_op).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        reference = net(x)
        on_gpu = net.cuda()(x.cuda()).cpu()
    scale = reference.abs().max().item()
    assert (on_gpu - reference).abs().max().item() <= 1e-3 * max(1.0, scale)

    # one training step as nnU-Net does it on CUDA: fp16 autocast, GradScaler (a small initial scale, so that the
    # first step is not skipped as overflowing, which is normal for GradScaler but would leave nothing to check)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", init_scale=256.0)
    target = torch.randint(0, 3, (shape[0], *shape[2:]), device="cuda")
    before = [p.detach().clone() for p in net.parameters()]
    with torch.autocast("cuda", dtype=torch.float16):
        logits = net(x.cuda())
        loss = nn.functional.cross_entropy(logits.float(), target)
    assert logits.dtype == torch.float16 and torch.isfinite(logits).all()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    scaler.step(optimizer)
    scaler.update()
    assert sum(bool(g.any()) for g in grads) > 0.9 * len(grads)
    # float32 absorbs updates far below a weight's own magnitude (e.g. 1e-9 on a BN weight of 1), so not every
    # tensor must change, but most do
    changed = sum(not torch.equal(b, p.detach()) for b, p in zip(before, net.parameters(), strict=True))
    assert changed > 0.5 * len(before), f"only {changed} of {len(before)} parameter tensors were updated"


def test_nnunet_training_on_cuda_learns(nnunet_env):
    """nnUNetv2_train -device cuda (nnU-Net's AMP; torch.compile off, as in the other tests) with the seeded 3 x 40
    iteration test trainer, held to the same learning bar as on CPU."""
    from nnunet_lite.synthetic import make_lesion_dataset_2d

    from .test_nnunet_integration import MARGIN, MIN_CASES, NUM_TRAIN, SPREAD, fold_split

    trainer = "nnUNetTrainerLGMSNet_test"
    raw = make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), 931, num_train=NUM_TRAIN, num_test=0, seed=1, **SPREAD)
    run_cli("nnUNetv2_plan_and_preprocess", "-d", "931", "-c", "2d", "-np", "1", "-npfp", "1")
    run_cli("nnUNetv2_train", "931", "2d", "0", "-tr", trainer, "-device", "cuda", "--npz")
    fold = Path(os.environ["nnUNet_results"]) / raw.name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 3 and checkpoint["grad_scaler_state"] is not None  # AMP was on
    train_ids, val_ids = fold_split(raw)
    score, baselines = assert_beats_constant_baselines(
        read_masks(fold / "validation", val_ids),
        read_masks(raw / "labelsTr", val_ids),
        read_masks(raw / "labelsTr", train_ids),
        MARGIN[trainer],
        MIN_CASES,
    )
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] == pytest.approx(score)
    assert np.isfinite(checkpoint["logging"]["train_losses"]).all()
