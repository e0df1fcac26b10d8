"""``nnunet_lite predict``: nnU-Net's inference pipeline with the network call going to onnxruntime.

:class:`OnnxPredictor` is ``nnUNetPredictor`` (preprocessing, padding, sliding window with Gaussian weighting,
mirroring, resampling back and export in the dataset's file format, all nnU-Net's own code) whose network is an
onnxruntime session built from an export folder (:mod:`nnunet_lite.deploy.export`). Only the model comes from the
export folder: no checkpoint, trainer class or nnU-Net environment variable is needed.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch

from .onnx_runtime import create_session, run_session
from .sidecar import ExportedModel, load_export

# Mirrored copies of a tile go through onnxruntime as one batch up to this many input elements (2D patches); larger
# (3D) tiles are run one copy at a time, as nnU-Net does, to keep the activation memory of a batch in check.
MAX_BATCHED_MIRROR_ELEMENTS = 2**22


class OnnxNetwork:
    """Stands in for the ``nn.Module`` that ``nnUNetPredictor`` calls: tensors in, tensors out, via onnxruntime."""

    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_session(self.session, x))

    def to(self, *args, **kwargs) -> OnnxNetwork:  # the predictor moves its network to its device
        return self

    def eval(self) -> OnnxNetwork:
        return self


def _make_predictor_class():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class OnnxPredictor(nnUNetPredictor):
        """``nnUNetPredictor`` running an exported ONNX model on the CPU (see the module docstring)."""

        def initialize_from_export(self, export: ExportedModel | str | os.PathLike, threads: int | None = None) -> None:
            """Loads an export folder: plans, dataset.json, mirroring axes and the onnxruntime session."""
            export = export if isinstance(export, ExportedModel) else load_export(export)
            plans_manager = export.plans_manager()
            self.plans_manager = plans_manager
            self.configuration_manager = plans_manager.get_configuration(export.configuration)
            self.dataset_json = export.dataset_json
            self.trainer_name = export.trainer_name
            self.allowed_mirroring_axes = export.mirror_axes
            self.label_manager = plans_manager.get_label_manager(export.dataset_json)
            self.list_of_parameters = [None]  # one model; nothing to load per fold
            self.dynamic_batch = bool(export.sidecar["model"].get("dynamic_batch"))
            self.network = OnnxNetwork(create_session(export.model_path, threads))
            if export.sidecar.get("precision", {}).get("precision") == "bf16":  # onnxruntime has no bf16 CPU path
                print("nnunet_lite predict: --nnunet-pipeline runs onnxruntime: this bf16 export runs in fp32 here")

        @torch.inference_mode()
        def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
            # nnUNetPredictor's version loads each fold's state dict first; the ONNX model holds its weights
            return self.predict_sliding_window_return_logits(data).to("cpu")

        @torch.inference_mode()
        def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
            mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else None
            copies = 2 ** len(mirror_axes) if mirror_axes is not None else 1
            if mirror_axes is None or not self.dynamic_batch or x.numel() * copies > MAX_BATCHED_MIRROR_ELEMENTS:
                return super()._internal_maybe_mirror_and_predict(x)
            # nnU-Net's test-time mirroring, with all flipped copies in one batch (one onnxruntime call per tile);
            # the sum is accumulated in nnU-Net's order
            assert max(mirror_axes) <= x.ndim - 3, "mirror_axes does not match the dimension of the input!"
            axes = [m + 2 for m in mirror_axes]
            combinations = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
            batch = torch.cat([x] + [torch.flip(x, c) for c in combinations])
            outputs = self.network(batch)
            prediction = outputs[:1].clone()
            for i, c in enumerate(combinations, start=1):
                prediction += torch.flip(outputs[i : i + 1], c)
            prediction /= len(combinations) + 1
            return prediction

    return OnnxPredictor


def __getattr__(name: str):
    # nnunetv2's predictor module imports a lot; build the subclass on first use
    if name == "OnnxPredictor":
        cls = _make_predictor_class()
        globals()["OnnxPredictor"] = cls
        return cls
    raise AttributeError(name)


def make_predictor(
    export_folder: str | os.PathLike,
    *,
    use_mirroring: bool = True,
    tile_step_size: float = 0.5,
    threads: int | None = None,
    verbose: bool = False,
):
    """An initialised :class:`OnnxPredictor` for an export folder (CPU, onnxruntime)."""
    predictor = __getattr__("OnnxPredictor")(
        tile_step_size=tile_step_size,
        use_gaussian=True,
        use_mirroring=use_mirroring,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=verbose,
        allow_tqdm=False,
    )
    predictor.initialize_from_export(export_folder, threads=threads)
    return predictor


def predict_folder(
    export_folder: str | os.PathLike,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    *,
    use_mirroring: bool = True,
    tile_step_size: float = 0.5,
    threads: int | None = None,
    save_probabilities: bool = False,
    overwrite: bool = True,
    num_processes_preprocessing: int = 1,
    num_processes_export: int = 1,
) -> list[str]:
    """Segments every case of ``input_folder`` (nnU-Net naming: ``CASE_0000.ext``, ...) with an exported model.

    Same steps and output files as ``nnUNetv2_predict`` with that model (segmentations in the dataset's file format,
    plus ``dataset.json``, ``plans.json`` and ``predict_from_raw_data_args.json``), the network running in
    onnxruntime on the CPU.

    Args:
        export_folder: folder written by ``nnunet_lite export``.
        input_folder: raw images.
        output_folder: where the segmentations go (created).
        use_mirroring: test-time mirroring along the model's allowed axes (``nnUNetv2_predict``'s default; off is
            ``--disable_tta``).
        tile_step_size: sliding-window step as a fraction of the patch size.
        threads: onnxruntime intra-op threads (None: one per physical core).
        save_probabilities: also write ``.npz`` probabilities and ``.pkl`` properties.
        overwrite: recompute cases whose output exists.
        num_processes_preprocessing: background preprocessing workers.
        num_processes_export: background resampling/export workers; both 0: everything in this process, one case
            after the other (``nnUNetv2_predict -npp 0 -nps 0``; no worker start-up, best for a few images).

    Returns:
        The segmentation files written (or that exist, when ``overwrite`` is False).
    """
    predictor = make_predictor(
        export_folder, use_mirroring=use_mirroring, tile_step_size=tile_step_size, threads=threads
    )
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise FileNotFoundError(f"input folder {input_folder} does not exist")
    file_ending = predictor.dataset_json["file_ending"]
    num_channels = len(predictor.dataset_json["channel_names"])
    cases = sorted({p.name[: -len(file_ending) - 5] for p in input_folder.glob(f"*_0000{file_ending}")})
    if not cases:
        raise FileNotFoundError(
            f"no images named CASE_0000{file_ending} in {input_folder} (nnU-Net naming, {num_channels} channel file(s) "
            f"per case)"
        )
    output_folder.mkdir(parents=True, exist_ok=True)
    if num_processes_preprocessing == 0 and num_processes_export == 0:  # as nnUNetv2_predict -npp 0 -nps 0
        predictor.predict_from_files_sequential(
            str(input_folder), str(output_folder), save_probabilities=save_probabilities, overwrite=overwrite
        )
    else:
        predictor.predict_from_files(
            str(input_folder),
            str(output_folder),
            save_probabilities=save_probabilities,
            overwrite=overwrite,
            num_processes_preprocessing=max(1, num_processes_preprocessing),
            num_processes_segmentation_export=max(1, num_processes_export),
        )
    return [str(output_folder / f"{case}{file_ending}") for case in cases]
