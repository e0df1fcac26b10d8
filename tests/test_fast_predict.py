"""The fast folder path of ``nnunet_lite predict`` (nnunet_lite.deploy.fast_predict) against nnU-Net's own code.

The sliding window is compared with ``nnUNetPredictor.predict_sliding_window_return_logits`` on small networks;
end-to-end comparisons with ``nnUNetv2_predict`` on trained models are in tests/test_deploy.py (2D PNG) and below
(3D NIfTI, an untrained checkpoint saved by the trainer: the equality does not depend on training).
"""

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_lite.deploy.fast_predict import _groups
from nnunet_lite.deploy.sliding_window import mirror_combinations, sliding_window_logits

from .conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


class Asymmetric(nn.Module):
    """A position- and orientation-sensitive network: mirroring and window position change its output."""

    def __init__(self, conv_op, channels: int, heads: int) -> None:
        super().__init__()
        self.a = conv_op(channels, 6, 3, padding=1)
        self.b = conv_op(6, heads, 3, padding=1)
        torch.manual_seed(0)
        for p in self.parameters():
            nn.init.normal_(p, std=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def nnunet_reference(network, image, patch, heads, mirror_axes, step=0.5):
    """nnUNetPredictor's own sliding window (the attributes it reads, set by hand)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=step,
        use_mirroring=mirror_axes is not None,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.network = network
    predictor.configuration_manager = SimpleNamespace(patch_size=list(patch))
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=heads)
    predictor.allowed_mirroring_axes = mirror_axes
    return predictor.predict_sliding_window_return_logits(image)


CASES = {
    # name: (conv, image shapes (C, *spatial) of one group, patch, mirror axes)
    "2d one window": (nn.Conv2d, [(3, 1, 32, 32)] * 3, (32, 32), (0, 1)),
    "2d sliding, padded": (nn.Conv2d, [(3, 1, 45, 70)] * 2, (32, 32), (0, 1)),
    "2d no mirroring": (nn.Conv2d, [(3, 1, 45, 70)], (32, 32), None),
    "2d on a 3d volume": (nn.Conv2d, [(1, 3, 40, 40)], (32, 32), (0, 1)),
    "3d": (nn.Conv3d, [(1, 20, 24, 28)] * 2, (16, 16, 16), (0, 1, 2)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "max_batch_elements, max_batch",
    [(1, None), (2**22, None), (2**22, 1), (2**22, 3)],
    ids=["one window per call", "batched", "max batch 1", "max batch 3"],
)
def test_sliding_window_equals_nnunet(case, max_batch_elements, max_batch):
    conv_op, shapes, patch, mirror_axes = CASES[case]
    network = Asymmetric(conv_op, shapes[0][0], heads=3).eval()
    generator = torch.Generator().manual_seed(1)
    images = [torch.randn(*s, generator=generator) for s in shapes]
    config = SimpleNamespace(patch_size=list(patch))
    ours = sliding_window_logits(
        network, images, config, 3, mirror_axes=mirror_axes, max_batch_elements=max_batch_elements, max_batch=max_batch
    )
    for image, got in zip(images, ours, strict=True):
        reference = nnunet_reference(network, image, patch, 3, mirror_axes)
        assert got.dtype == reference.dtype == torch.float16 and got.shape == reference.shape
        assert got.abs().max() > 0.1, "logits near zero: the comparison would be vacuous"
        # a batch may round differently in the last float32 bit; after nnU-Net's fp16 accumulation the logits are
        # equal or one fp16 step apart, and the argmax differs only at exact near-ties
        diff = (got.float() - reference.float()).abs()
        assert diff.max() <= 2e-3 * max(1.0, reference.abs().max().item()), diff.max()
        differing = (got.argmax(0) != reference.argmax(0)).float().mean().item()
        assert differing <= 1e-3, differing
        if max_batch_elements == 1 or max_batch == 1:
            assert torch.equal(got, reference), "one window per call must reproduce nnU-Net bit for bit"


def test_sliding_window_respects_mirroring():
    """With an orientation-sensitive network, mirroring must change the logits (else the test above is vacuous)."""
    network = Asymmetric(nn.Conv2d, 3, heads=2).eval()
    image = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    config = SimpleNamespace(patch_size=[32, 32])
    with_tta = sliding_window_logits(network, [image], config, 2, mirror_axes=(0, 1))[0]
    without = sliding_window_logits(network, [image], config, 2, mirror_axes=None)[0]
    assert (with_tta.float() - without.float()).abs().max() > 0.05


def test_mirror_combinations_follow_nnunet_order():
    assert mirror_combinations((0, 1)) == [(0,), (1,), (0, 1)]
    assert mirror_combinations(None) == []
    assert len(mirror_combinations((0, 1, 2))) == 7


def test_groups_split_on_shape_and_size():
    items = [(c, torch.zeros(s), None) for c, s in [("a", (1, 4)), ("b", (1, 4)), ("c", (1, 5)), ("d", (1, 5))]]
    assert [[c for c, _, _ in g] for g in _groups(iter(items), 3)] == [["a", "b"], ["c", "d"]]
    assert [[c for c, _, _ in g] for g in _groups(iter(items), 1)] == [["a"], ["b"], ["c"], ["d"]]


# --- 3D NIfTI end to end, against nnUNetv2_predict ------------------------------------------------------------------


def save_untrained_checkpoint(dataset: str, configuration: str, trainer_name: str) -> Path:
    """An untrained checkpoint that records the trainer's mirroring axes, so that both predictors run TTA."""
    from nnunet_lite.nnunet_env import make_trainers_discoverable
    from nnunet_lite.synthetic import save_untrained_checkpoint as save

    make_trainers_discoverable()
    model = save(dataset, configuration, trainer_name)
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["inference_allowed_mirroring_axes"], "no mirroring axes: the TTA comparison would be vacuous"
    return model


@pytest.fixture(scope="module")
def untrained_2d(nnunet_env):
    """64x64 RGB PNGs planned by nnU-Net, an untrained MedLiteNet checkpoint and its ONNX export; the test images:
    four of the patch size (one batch) and one larger (sliding window)."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from nnunet_lite.synthetic import make_lesion_dataset_2d

    raw = make_lesion_dataset_2d(Path(os.environ["nnUNet_raw"]), 924, num_train=4, num_test=4, seed=6)
    big = Image.open(raw / "imagesTs" / "lesion_ts_000_0000.png").resize((100, 77), Image.BILINEAR)
    big.save(raw / "imagesTs" / "lesion_ts_big_0000.png")
    run_cli("nnUNetv2_plan_and_preprocess", "-d", "924", "-c", "2d", "-np", "1", "-npfp", "1")
    model = save_untrained_checkpoint("924", "2d", "nnUNetTrainerMedLiteNet")
    export = nnunet_env / "exports" / "untrained_medlitenet"
    run_cli(
        "nnunet_lite", "export", "-d", "924", "-c", "2d", "-tr", "nnUNetTrainerMedLiteNet", "-f", "0", "-o", str(export)
    )
    reference = nnunet_env / "reference_924"
    run_cli(
        "nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(reference), "-d", "924", "-c", "2d",
        "-tr", "nnUNetTrainerMedLiteNet", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
    )  # fmt: skip
    return {"raw": raw, "model": model, "export": export, "reference": reference}


def count_differing_pixels(reference: Path, ours: Path, file_ending: str) -> tuple[int, int]:
    """(differing, total) voxels over all segmentations of ``reference`` (nnU-Net's reader); asserts the same files,
    shapes and geometry, and that the reference is not a single label (a vacuous comparison)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending

    files = sorted(p.name for p in reference.glob(f"*{file_ending}"))
    assert files and files == sorted(p.name for p in ours.glob(f"*{file_ending}"))
    reader = determine_reader_writer_from_file_ending(file_ending, str(reference / files[0]))()
    labels, differing, total = set(), 0, 0
    for name in files:
        a, props_a = reader.read_seg(str(reference / name))
        b, props_b = reader.read_seg(str(ours / name))
        assert a.shape == b.shape and np.allclose(props_a["spacing"], props_b["spacing"]), name
        labels |= set(np.unique(a).tolist())
        differing += int((a != b).sum())
        total += a.size
    assert len(labels) > 1, "reference has one label only: the comparison would be vacuous"
    return differing, total


# untrained logits have many near-ties, so a last-bit rounding difference (batched windows, the onnxruntime graph,
# folded BatchNorm) can flip a voxel; the tests count them. A broken pipeline differs in a large share.
MAX_DIFFERING_SHARE = 2e-3


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "onnx", "openvino"])
def test_2d_png_matches_nnunetv2_predict(untrained_2d, engine, tmp_path):
    if engine == "openvino":
        pytest.importorskip("openvino")
    model = untrained_2d["model"] if engine == "torch" else untrained_2d["export"]
    ours = tmp_path / "ours"
    proc = run_cli(
        "nnunet_lite", "predict", "-i", str(untrained_2d["raw"] / "imagesTs"), "-o", str(ours), "-m", str(model),
        "--threads", "1", "--disable-progress-bar", "--engine", "auto" if engine != "openvino" else "openvino",
    )  # fmt: skip
    assert "5 segmentations" in proc.stdout and ("onnxruntime" in proc.stdout) == (engine == "onnx")
    assert ("OpenVINO" in proc.stdout) == (engine == "openvino")
    differing, total = count_differing_pixels(untrained_2d["reference"], ours, ".png")
    assert differing / total <= MAX_DIFFERING_SHARE, (differing, total)
    assert (ours / "dataset.json").is_file() and (ours / "plans.json").is_file()
    assert not list(ours.glob(".*partial*")), "temporary files left behind"


@pytest.mark.slow
def test_2d_torch_engine_unoptimised_is_pixel_identical(untrained_2d, tmp_path):
    """Without the inference rewrites and one image per batch, the PyTorch engine runs nnU-Net's exact numerics."""
    ours = tmp_path / "ours"
    run_cli(
        "nnunet_lite", "predict", "-i", str(untrained_2d["raw"] / "imagesTs"), "-o", str(ours),
        "-d", "924", "-c", "2d", "-tr", "nnUNetTrainerMedLiteNet", "-f", "0", "--no-optimize", "--batch-images", "1",
        "--threads", "1", "--disable-progress-bar",
    )  # fmt: skip
    differing, total = count_differing_pixels(untrained_2d["reference"], ours, ".png")
    assert differing <= total * 1e-4, (differing, total)


@pytest.mark.slow
def test_continue_prediction_and_refusal_to_overwrite(untrained_2d, tmp_path, capsys):
    from nnunet_lite.cli import main

    images, ours = untrained_2d["raw"] / "imagesTs", tmp_path / "ours"
    args = ["predict", "-i", str(images), "-o", str(ours), "-m", str(untrained_2d["model"]), "--disable-tta"]
    args += ["--disable-progress-bar", "--threads", "1"]
    assert main(args) == 0
    first = (ours / "lesion_ts_001.png").stat().st_mtime_ns
    (ours / "lesion_ts_002.png").unlink()
    capsys.readouterr()
    assert main(args) == 1
    assert "--continue-prediction" in capsys.readouterr().err
    assert main([*args, "--continue-prediction"]) == 0
    out = capsys.readouterr().out
    assert "1 segmentations" in out and "4 existing skipped" in out
    assert (ours / "lesion_ts_002.png").is_file() and (ours / "lesion_ts_001.png").stat().st_mtime_ns == first
    assert main([*args, "-i", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "-i", str(images), "-o", str(tmp_path / "x"), "-m", str(tmp_path)]) == 1
    assert "not an nnunet_lite export folder" in capsys.readouterr().err
    export = ["-m", str(untrained_2d["export"]), "--engine", "openvino"]
    assert main(["predict", "-i", str(images), "-o", str(tmp_path / "y"), *export, "--device", "cuda"]) == 1
    assert "runs on the CPU" in capsys.readouterr().err
    results_folder = ["-m", str(untrained_2d["model"]), "--engine", "openvino"]
    assert main(["predict", "-i", str(images), "-o", str(tmp_path / "z"), *results_folder]) == 1
    assert "run nnunet_lite export first" in capsys.readouterr().err


@pytest.fixture(scope="module")
def untrained_3d(nnunet_env):
    """Anisotropic NIfTI volumes planned by nnU-Net (3d_fullres) and an untrained LGMSNet checkpoint."""
    from nnunet_lite.synthetic import make_organ_dataset_3d

    raw = make_organ_dataset_3d(Path(os.environ["nnUNet_raw"]), 923, num_train=4, num_test=2, seed=5)
    run_cli("nnUNetv2_plan_and_preprocess", "-d", "923", "-c", "3d_fullres", "-np", "1", "-npfp", "1")
    return {"raw": raw, "model": save_untrained_checkpoint("923", "3d_fullres", "nnUNetTrainerLGMSNet")}


@pytest.mark.slow
def test_3d_nifti_torch_engine_matches_nnunetv2_predict(untrained_3d, tmp_path):
    images = untrained_3d["raw"] / "imagesTs"
    reference, ours = tmp_path / "nnunetv2", tmp_path / "ours"
    run_cli(
        "nnUNetv2_predict", "-i", str(images), "-o", str(reference), "-d", "923", "-c", "3d_fullres",
        "-tr", "nnUNetTrainerLGMSNet", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
    )  # fmt: skip
    proc = run_cli(
        "nnunet_lite", "predict", "-i", str(images), "-o", str(ours), "-m", str(untrained_3d["model"]),
        "--no-optimize", "--threads", "1", "--disable-progress-bar",
    )  # fmt: skip
    assert "images/s" in proc.stdout
    differing, total = count_differing_pixels(reference, ours, ".nii.gz")
    assert differing / total <= MAX_DIFFERING_SHARE, (differing, total)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_fast_png_io_equals_nnunet_reader_writer(mode, tmp_path):
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from PIL import Image

    from nnunet_lite.deploy.fast_predict import fast_reader_writer

    fast = fast_reader_writer(NaturalImage2DIO)()
    assert type(fast) is not NaturalImage2DIO
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (23, 31, channels) if channels else (23, 31)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 60000, (23, 31)).astype(np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), "L" if mode == "P" else None)
        image = image.convert(mode) if mode == "P" else image
    path = tmp_path / "img_0000.png"
    image.save(path)
    ours, props = fast.read_images([str(path)])
    reference, reference_props = NaturalImage2DIO().read_images([str(path)])
    assert ours.dtype == reference.dtype and np.array_equal(ours, reference) and props == reference_props
    assert ours.std() > 0
    seg = rng.integers(0, 4, (1, 23, 31)).astype(np.uint8)
    fast.write_seg(seg, str(tmp_path / "seg.png"), props)
    assert np.array_equal(NaturalImage2DIO().read_seg(str(tmp_path / "seg.png"))[0], seg[None].astype(np.float32))


# --- CUDA (pytest -m gpu; skipped without a CUDA device) ------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_sliding_window_on_cuda_matches_cpu(precision):
    """The batched sliding window on CUDA (logits accumulated on the GPU, autocast) against nnU-Net on the CPU."""
    from nnunet_lite.deploy.engines import _torch_forward

    network = Asymmetric(nn.Conv2d, 3, heads=3).eval()
    images = [torch.randn(3, 1, 45, 70, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    config = SimpleNamespace(patch_size=[32, 32])
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    forward = _torch_forward(network.cuda(), torch.device("cuda"), dtype, channels_last=False)
    ours = sliding_window_logits(forward, images, config, 3, mirror_axes=(0, 1), device="cuda")
    network = network.cpu()
    for image, got in zip(images, ours, strict=True):
        reference = nnunet_reference(network, image, (32, 32), 3, (0, 1))
        assert got.device.type == "cuda" and got.shape == reference.shape
        got = got.float().cpu()
        scale = reference.float().abs().max().item()
        tolerance = {"fp32": 2e-3, "fp16": 1e-2, "bf16": 5e-2}[precision]
        assert (got - reference.float()).abs().max() <= tolerance * scale
        assert (got.argmax(0) == reference.argmax(0)).float().mean() >= 0.98


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
@pytest.mark.parametrize("extra", [[], ["--compile"]], ids=["fp16", "fp16 compiled"])
def test_cuda_torch_engine_matches_nnunetv2_predict(untrained_2d, extra, tmp_path):
    ours = tmp_path / "ours"
    proc = run_cli(
        "nnunet_lite", "predict", "-i", str(untrained_2d["raw"] / "imagesTs"), "-o", str(ours),
        "-m", str(untrained_2d["model"]), "--device", "cuda", "--disable-progress-bar", *extra,
    )  # fmt: skip
    assert "cuda fp16" in proc.stdout
    differing, total = count_differing_pixels(untrained_2d["reference"], ours, ".png")
    assert differing / total <= 0.02, (differing, total)  # fp16 autocast against nnU-Net's fp32 CPU reference


@pytest.mark.parametrize(
    "image_size, patch, step",
    [((1, 45, 70), (32, 32), 0.5), ((3, 40, 40), (32, 32), 0.5), ((20, 24, 28), (16, 16, 16), 0.5),
     ((1, 64, 64), (64, 64), 0.5), ((30, 90, 70), (16, 32, 32), 0.25)],
)  # fmt: skip
def test_sliding_window_slicers_equal_nnunet(image_size, patch, step):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_lite.deploy.sliding_window import sliding_window_slicers

    predictor = SimpleNamespace(
        configuration_manager=SimpleNamespace(patch_size=list(patch)), tile_step_size=step, verbose=False
    )
    reference = nnUNetPredictor._internal_get_sliding_window_slicers(predictor, image_size)
    assert sliding_window_slicers(image_size, patch, step) == reference and len(reference) >= 1


def test_list_cases_follows_nnunet_naming(tmp_path):
    from nnunetv2.utilities.utils import (
        create_lists_from_splitted_dataset_folder,
        get_identifiers_from_splitted_dataset_folder,
    )

    from nnunet_lite.deploy.engines import PredictError
    from nnunet_lite.deploy.fast_predict import list_cases

    names = ["b_0000.nii.gz", "b_0001.nii.gz", "a_1_0000.nii.gz", "a_0000.nii.gz", "c_0000.png", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("")
    ids = [str(i) for i in get_identifiers_from_splitted_dataset_folder(str(tmp_path), ".nii.gz")]
    reference = create_lists_from_splitted_dataset_folder(str(tmp_path), ".nii.gz", ids, num_processes=1)
    assert list_cases(tmp_path, ".nii.gz") == dict(zip(ids, reference, strict=True))
    assert list(list_cases(tmp_path, ".nii.gz")) == ["a", "a_1", "b"]
    with pytest.raises(PredictError, match="no images named CASE_0000.tif"):
        list_cases(tmp_path, ".tif")


# --- the plans' preprocessor and writers with auxiliary files (a stub engine: no training, no nnU-Net planning) -----


def stub_plans(reader: str, preprocessor: str) -> dict:
    """Hand-written nnU-Net plans of a 3D dataset whose images need no resampling (spacing = the target spacing)."""
    configuration = {
        "data_identifier": "stub", "preprocessor_name": preprocessor, "batch_size": 2, "patch_size": [8, 16, 16],
        "median_image_size_in_voxels": [10, 20, 24], "spacing": [2.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "batch_dice": False,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {}, "_kw_requires_import": [],
        },
    }  # fmt: skip
    intensities = {"mean": 0.0, "std": 1.0, "percentile_00_5": -2.0, "percentile_99_5": 2.0, "min": -3.0, "max": 3.0}
    return {
        "dataset_name": "Dataset999_Stub", "plans_name": "nnUNetPlans", "image_reader_writer": reader,
        "original_median_spacing_after_transp": [2.0, 1.0, 1.0], "original_median_shape_after_transp": [10, 20, 24],
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {**intensities, "median": 0.0}},
    }  # fmt: skip


def stub_engine(reader: str = "Tiff3DIO", preprocessor: str = "DefaultPreprocessor", file_ending: str = ".tif"):
    """An :class:`Engine` whose network copies the normalised image into the foreground logit (background logit 0):
    the segmentation is ``normalised image > 0``, i.e. ``image > image.mean()`` under z-scoring (see thresholded)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_lite.deploy.engines import Engine

    pm = PlansManager(stub_plans(reader, preprocessor))
    dataset_json = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}, "numTraining": 1}
    network = nn.Conv3d(1, 2, 1).eval()
    with torch.no_grad():
        network.weight.zero_(), network.bias.zero_()
        network.weight[1, 0] = 1.0

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(x)

    dataset_json["file_ending"] = file_ending
    return Engine(pm, pm.get_configuration("3d_fullres"), dataset_json, None, torch.device("cpu"), [forward], "stub")


def thresholded(volume: np.ndarray, segmentation: np.ndarray, foreground_above: bool = True) -> bool:
    """Whether ``segmentation`` is ``volume`` thresholded at its mean in at least 99% of the voxels (nnU-Net's fp16
    accumulation of Gaussian-weighted logits rounds a few small ones at the windows' edges to 0, a tie)."""
    expected = volume > volume.mean() if foreground_above else volume < volume.mean()
    return segmentation.shape == volume.shape and (segmentation == expected).mean() > 0.99


@pytest.fixture
def tiff_cases(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """Two 3D TIFF cases in nnU-Net's Tiff3DIO layout: CASE_0000.tif and its spacing sidecar CASE.json."""
    import json

    import tifffile

    images, rng, volumes = tmp_path / "images", np.random.default_rng(0), {}
    images.mkdir()
    for case in ("a", "b"):
        volumes[case] = rng.normal(size=(10, 20, 24)).astype(np.float32)
        tifffile.imwrite(images / f"{case}_0000.tif", volumes[case])
        (images / f"{case}.json").write_text(json.dumps({"spacing": [2.0, 1.0, 1.0]}))
    return images, volumes


def test_tiff3d_output_has_final_names_and_spacing_sidecar(tiff_cases, tmp_path):
    """Tiff3DIO writes its spacing next to the segmentation, named after it: CASE.tif and CASE.json, no temporaries."""
    import json

    import tifffile

    from nnunet_lite.deploy.fast_predict import predict_folder_fast

    images, volumes = tiff_cases
    out = tmp_path / "out"
    report = predict_folder_fast(stub_engine(), images, out, save_probabilities=True, progress=False)
    assert sorted(Path(f).name for f in report.written) == ["a.tif", "b.tif"]
    expected = {"dataset.json", "plans.json"} | {f"{c}{e}" for c in volumes for e in (".tif", ".json", ".npz", ".pkl")}
    assert {p.name for p in out.iterdir()} == expected, "temporary (.CASE.partial*) or misnamed files left"
    for case, volume in volumes.items():
        assert json.loads((out / f"{case}.json").read_text())["spacing"] == [2.0, 1.0, 1.0]
        seg = tifffile.imread(out / f"{case}.tif")
        assert thresholded(volume, seg) and 0.3 < seg.mean() < 0.7
        assert np.load(out / f"{case}.npz")["probabilities"].shape == (2, *volume.shape)


def _preprocessor_classes():
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    class NegatingPreprocessor(DefaultPreprocessor):
        """nnU-Net's preprocessing, then the intensities negated: the segmentation flips if this class runs."""

        def run_case_npy(self, data, seg, properties, plans_manager, configuration_manager, dataset_json):
            data, seg, properties = super().run_case_npy(
                data, seg, properties, plans_manager, configuration_manager, dataset_json
            )
            return -data, seg, properties

    class NegatingFilePreprocessor(DefaultPreprocessor):
        """One that reads its own files (overrides ``run_case``, as nnUNetPredictor calls it)."""

        def run_case(self, image_files, seg_file, plans_manager, configuration_manager, dataset_json):
            data, seg, properties = super().run_case(
                image_files, seg_file, plans_manager, configuration_manager, dataset_json
            )
            return -data, seg, properties

    return {c.__name__: c for c in (NegatingPreprocessor, NegatingFilePreprocessor)}


@pytest.mark.parametrize("name", ["NegatingPreprocessor", "NegatingFilePreprocessor"])
def test_fast_predict_uses_the_plans_preprocessor_class(name, tiff_cases, tmp_path, monkeypatch):
    """The plans' preprocessor_name is looked up by nnU-Net's own ConfigurationManager.preprocessor_class (its
    search of nnunetv2.preprocessing is extended by the test with the custom classes) and instantiated."""
    import tifffile
    from nnunetv2.utilities.plans_handling import plans_handler

    from nnunet_lite.deploy.fast_predict import predict_folder_fast

    custom, original = _preprocessor_classes(), plans_handler.recursive_find_python_class
    monkeypatch.setattr(
        plans_handler,
        "recursive_find_python_class",
        lambda folder, class_name, current_module: (
            custom.get(class_name) or original(folder, class_name, current_module)
        ),
    )
    images, volumes = tiff_cases
    predict_folder_fast(stub_engine(preprocessor=name), images, tmp_path / "out", progress=False)
    for case, volume in volumes.items():
        assert thresholded(volume, tifffile.imread(tmp_path / "out" / f"{case}.tif"), foreground_above=False)


def test_fast_predict_refuses_an_unknown_preprocessor(tiff_cases, tmp_path):
    from nnunet_lite.deploy.engines import PredictError
    from nnunet_lite.deploy.fast_predict import predict_folder_fast

    with pytest.raises(PredictError, match="preprocessor_name 'NoSuchPreprocessor'.*cannot find") as error:
        predict_folder_fast(stub_engine(preprocessor="NoSuchPreprocessor"), tiff_cases[0], tmp_path, progress=False)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("flag", [["--nnunet-pipeline"], ["--preprocess-workers", "0"]], ids=["pipeline", "workers"])
def test_nnunet_pipeline_without_export_folder_is_one_line(flag, tmp_path, capsys):
    """``-d`` names an nnUNet_results model; nnU-Net's own pipeline here runs export folders (-m) only."""
    from nnunet_lite.cli import main

    args = ["predict", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", "924", *flag]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag[0]}" in err.split(" runs ")[0] and "-m EXPORT_FOLDER" in err
    assert not (tmp_path / "out").exists()
