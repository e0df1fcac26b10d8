"""The fast folder path of ``nnunet_lite predict``: nnU-Net's inference in one process, pipelined and batched.

``nnUNetv2_predict`` spends most of a small network's time outside the network (docs/deployment.md, "Where the time
goes"): spawned preprocessing and export processes, inter-process transfer, and a sliding window that runs one
window (and one mirrored copy) per network call. This module keeps nnU-Net's own steps and numerics and removes the
overhead:

- reading and preprocessing (the plans' ``preprocessor_class``, as nnU-Net; ``DefaultPreprocessor``'s transpose,
  crop to nonzero, normalisation, resampling, which nnU-Net already skips when the shape matches) run in reader
  threads ahead of the network;
- the sliding window is nnU-Net's (its padding, window positions, Gaussian importance map and fp16 accumulation in
  the same order), but the windows of one image, their mirrored copies and the windows of consecutive images of the
  same preprocessed shape go through the network as batches;
- resampling back, argmax and writing (``convert_predicted_logits_to_segmentation_with_correct_shape`` and the
  dataset's reader/writer) run in a writer thread while the network works on the next batch.

Two engines: :class:`OnnxEngine` (an ``nnunet_lite export`` folder, onnxruntime on CPU or its CUDA provider) and
:class:`TorchEngine` (any trainer's checkpoint loaded as ``nnUNetv2_predict`` loads it; on CPU with the output-
preserving rewrites of :mod:`nnunet_lite.deploy.optimize`, on CUDA with fp16/bf16 autocast and optional
``torch.compile``). The segmentations equal ``nnUNetv2_predict``'s up to the network's float rounding in a batch
(tests count the differing pixels).
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .engines import Engine, PredictError
from .sliding_window import DEFAULT_MAX_BATCH_ELEMENTS, sliding_window_logits

if TYPE_CHECKING:  # nnU-Net's modules are imported where used (start-up time of the CLI)
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

# --- file IO ---------------------------------------------------------------------------------------------------------

# PIL image modes whose pixels np.asarray(PIL) returns exactly as skimage.io.imread (imageio's pillow plugin) does;
# other modes (palette, 16-bit, ...) go through nnU-Net's reader unchanged
_DIRECT_MODES = ("L", "RGB", "RGBA")


def _natural_image_io_class():
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    class FastNaturalImage2DIO(NaturalImage2DIO):
        """nnU-Net's PNG/BMP/TIFF reader/writer, reading and writing 8-bit images with PIL directly.

        ``skimage.io`` (through imageio's plugin layer) costs several times the decode itself for small images and
        writes at zlib's default level; pixels are identical (tested against nnU-Net's class), PNG files are written
        with fast compression (level 1)."""

        def read_images(self, image_fnames):
            from PIL import Image

            images = []
            for f in image_fnames:
                with Image.open(f) as image:
                    if image.mode not in _DIRECT_MODES:
                        return super().read_images(image_fnames)
                    array = np.asarray(image)
                images.append(array.transpose((2, 0, 1))[:, None] if array.ndim == 3 else array[None, None])
            if not self._check_all_same([i.shape for i in images]):
                raise PredictError(
                    f"the channel files {list(image_fnames)} differ in size: {[i.shape for i in images]}"
                )
            return np.vstack(images, dtype=np.float32, casting="unsafe"), {"spacing": (999, 1, 1)}

        def write_seg(self, seg: np.ndarray, output_fname: str, properties: dict) -> None:
            from PIL import Image

            if np.max(seg) >= 255 or not output_fname.endswith(".png"):
                return super().write_seg(seg, output_fname, properties)
            Image.fromarray(seg[0].astype(np.uint8, copy=False)).save(output_fname, compress_level=1)

    return FastNaturalImage2DIO


def fast_reader_writer(reader_writer_class: type) -> type:
    """A faster drop-in for nnU-Net's reader/writer class where there is one (2D natural images), else the class."""
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    return _natural_image_io_class() if reader_writer_class is NaturalImage2DIO else reader_writer_class


# --- the pipeline ---------------------------------------------------------------------------------------------------


@dataclass
class PredictionReport:
    """What :func:`predict_folder_fast` did: files, skipped cases and wall time per stage (seconds)."""

    written: list[str]
    skipped: list[str]
    seconds: float
    stage_seconds: dict[str, float]
    engine: str

    @property
    def images_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else float("inf")


def list_cases(input_folder: Path, file_ending: str) -> dict[str, list[str]]:
    """``{case: [channel files]}`` by nnU-Net's rule (``CASE_XXXX<ending>``, case IDs as
    ``get_identifiers_from_splitted_dataset_folder``, files as ``create_paths_fn``). Not nnU-Net's
    ``create_lists_from_splitted_dataset_folder`` itself: it starts a pool of 12 processes to match file names (3.5 s
    on the loaded 2-core machine). PredictError if there are no cases."""
    if not input_folder.is_dir():
        raise PredictError(f"input folder {input_folder} does not exist")
    files = sorted(p.name for p in input_folder.iterdir() if p.name.endswith(file_ending) and p.is_file())
    pattern = re.compile(r"(.+)_\d\d\d\d" + re.escape(file_ending))
    cases: dict[str, list[str]] = {}
    for name in files:
        match = pattern.fullmatch(name)
        if match:
            cases.setdefault(match.group(1), []).append(str(input_folder / name))
    if not cases:
        raise PredictError(
            f"no images named CASE_0000{file_ending} in {input_folder} (nnU-Net naming: CASE_XXXX{file_ending}, one "
            f"file per input channel file of the dataset)"
        )
    return dict(sorted(cases.items()))


class _Timer:
    """Accumulates seconds per stage across threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def plans_preprocessor(configuration_manager: ConfigurationManager) -> DefaultPreprocessor:
    """The plans' preprocessor, found and instantiated as ``nnUNetPredictor`` does
    (``configuration_manager.preprocessor_class``): a custom ``preprocessor_name`` must not fall back silently."""
    cls = configuration_manager.preprocessor_class
    if cls is None:
        raise PredictError(
            f"the plans name preprocessor_name {configuration_manager.preprocessor_name!r}, which nnU-Net cannot find "
            f"in nnunetv2.preprocessing: install the package that provides it (nnUNetv2_predict would fail the same)"
        )
    return cls(verbose=False)


def predict_folder_fast(
    engine: Engine,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    *,
    use_mirroring: bool = True,
    tile_step_size: float = 0.5,
    save_probabilities: bool = False,
    continue_prediction: bool = False,
    overwrite: bool = False,
    reader_threads: int = 1,
    images_per_batch: int = 8,
    max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS,
    export_threads: int | None = None,
    progress: bool = True,
) -> PredictionReport:
    """Segments every case of ``input_folder`` with ``engine``; same output files as ``nnUNetv2_predict``.

    Args:
        engine: an :class:`Engine` (:meth:`OnnxEngine.load`, :meth:`TorchEngine.load`).
        input_folder: raw images with nnU-Net's naming.
        output_folder: created; also receives ``dataset.json`` and ``plans.json`` as nnU-Net writes them.
        use_mirroring: nnU-Net's test-time mirroring along the model's axes (on by default, as in nnU-Net).
        tile_step_size: sliding-window step (fraction of the patch).
        save_probabilities: also write ``CASE.npz`` and ``CASE.pkl`` (nnU-Net's format).
        continue_prediction: skip cases whose segmentation exists.
        overwrite: replace existing segmentations (otherwise an existing one is an error, unless
            ``continue_prediction``).
        reader_threads: threads reading and preprocessing ahead of the network.
        images_per_batch: consecutive images of equal preprocessed shape predicted together.
        max_batch_elements: largest network batch in input elements.
        export_threads: torch threads of the export step (default: 1; it runs beside the network).
        progress: tqdm progress bar.
    """
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from tqdm import tqdm

    start = time.perf_counter()
    timer = _Timer()
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    pm, cm, dataset_json = engine.plans_manager, engine.configuration_manager, engine.dataset_json
    if cm.previous_stage_name is not None:
        raise PredictError("cascade configurations need the previous stage's segmentations: use nnUNetv2_predict")
    label_manager = engine.label_manager
    file_ending = dataset_json["file_ending"]
    num_channels = determine_num_input_channels(pm, cm, dataset_json)
    cases = list_cases(input_folder, file_ending)
    existing = [c for c in cases if (output_folder / f"{c}{file_ending}").is_file()]
    if existing and not (continue_prediction or overwrite):
        raise PredictError(
            f"{len(existing)} segmentation(s) already in {output_folder} (e.g. {existing[0]}{file_ending}): pass "
            f"--continue-prediction to skip them or --overwrite to replace them"
        )
    skipped = existing if continue_prediction else []
    todo = [c for c in cases if c not in set(skipped)]
    output_folder.mkdir(parents=True, exist_ok=True)
    from batchgenerators.utilities.file_and_folder_operations import save_json

    save_json(dataset_json, str(output_folder / "dataset.json"), sort_keys=False)
    save_json(pm.plans, str(output_folder / "plans.json"), sort_keys=False)

    mirror_axes = engine.mirror_axes if use_mirroring else None
    writer_class = fast_reader_writer(pm.image_reader_writer_class)
    preprocessor = plans_preprocessor(cm)
    export_threads = export_threads or 1

    # a preprocessor that reads its own files (overrides run_case) is called as nnUNetPredictor calls it
    own_reading = type(preprocessor).run_case is not DefaultPreprocessor.run_case

    def read(case: str):
        t0 = time.perf_counter()
        if own_reading:
            data, _, properties = preprocessor.run_case(cases[case], None, pm, cm, dataset_json)
            t1 = t0
        else:
            data, properties = writer_class().read_images(cases[case])
            t1 = time.perf_counter()
            timer.add("read", t1 - t0)
            data, _, properties = preprocessor.run_case_npy(data, None, properties, pm, cm, dataset_json)
        if data.shape[0] != num_channels:
            raise PredictError(f"case {case}: {data.shape[0]} channels, the model expects {num_channels}")
        timer.add("preprocess", time.perf_counter() - t1)
        return case, torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), properties

    def write(case: str, logits: np.ndarray, properties: dict) -> str:
        t0 = time.perf_counter()
        ret = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, pm, cm, label_manager, properties, save_probabilities, num_threads_torch=export_threads
        )
        t1 = time.perf_counter()
        timer.add("export (resample, argmax)", t1 - t0)
        segmentation, probabilities = ret if save_probabilities else (ret, None)
        # final names inside a temporary folder, renamed into place: an interrupted run leaves no half-written
        # segmentation, and writers that add files named after the output (Tiff3DIO's CASE.json spacing) name them
        # right. The segmentation moves last: its presence is what --continue-prediction trusts.
        final = output_folder / f"{case}{file_ending}"
        with tempfile.TemporaryDirectory(prefix=f".{case}.partial-", dir=output_folder) as tmp:
            tmp = Path(tmp)
            if probabilities is not None:
                from batchgenerators.utilities.file_and_folder_operations import save_pickle

                np.savez_compressed(tmp / f"{case}.npz", probabilities=probabilities)
                save_pickle(properties, str(tmp / f"{case}.pkl"))
            writer_class().write_seg(segmentation, str(tmp / final.name), properties)
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == final.name):
                os.replace(f, output_folder / f.name)
        timer.add("write", time.perf_counter() - t1)
        return str(final)

    written: list[str] = []
    with (
        ThreadPoolExecutor(max(1, reader_threads), thread_name_prefix="nnunet_lite_read") as readers,
        ThreadPoolExecutor(1, thread_name_prefix="nnunet_lite_write") as writers,
        tqdm(total=len(todo), unit="img", disable=not progress, desc="nnunet_lite predict") as bar,
    ):
        pending_writes: deque[Future] = deque()
        for group in _groups(_prefetch(readers, read, todo, ahead=max(2, 2 * images_per_batch)), images_per_batch):
            t0 = time.perf_counter()
            images = [data for _, data, _ in group]
            summed = None
            for forward in engine.forwards:  # folds: summed and averaged like nnUNetPredictor
                out = sliding_window_logits(
                    forward,
                    images,
                    cm,
                    label_manager.num_segmentation_heads,
                    tile_step_size=tile_step_size,
                    mirror_axes=mirror_axes,
                    device=engine.device,
                    max_batch_elements=max_batch_elements,
                    max_batch=engine.max_batch,
                )
                out = [o.to("cpu") for o in out]
                summed = out if summed is None else [s + o for s, o in zip(summed, out, strict=True)]
            if len(engine.forwards) > 1:
                summed = [s / len(engine.forwards) for s in summed]
            timer.add("network + sliding window", time.perf_counter() - t0)
            for (case, _, properties), logits in zip(group, summed, strict=True):
                pending_writes.append(writers.submit(write, case, logits.numpy(), properties))
            while len(pending_writes) > 2 * images_per_batch:  # bounded: the writer may not fall far behind
                written.append(pending_writes.popleft().result())
                bar.update()
        while pending_writes:
            written.append(pending_writes.popleft().result())
            bar.update()
    return PredictionReport(written, skipped, time.perf_counter() - start, timer.seconds, engine.description)


def _prefetch(pool: ThreadPoolExecutor, fn, items: list, ahead: int) -> Iterator:
    """``map(fn, items)`` in order, with up to ``ahead`` items computed in ``pool`` ahead of the consumer."""
    futures: deque[Future] = deque()
    items = iter(items)
    for item in itertools.islice(items, ahead):
        futures.append(pool.submit(fn, item))
    while futures:
        result = futures.popleft().result()
        nxt = next(items, None)
        if nxt is not None:
            futures.append(pool.submit(fn, nxt))
        yield result


def _groups(cases: Iterator, size: int) -> Iterator[list]:
    """Consecutive cases with equal preprocessed shape, up to ``size`` per group."""
    group: list = []
    for case in cases:
        if group and (len(group) >= size or case[1].shape != group[0][1].shape):
            yield group
            group = []
        group.append(case)
    if group:
        yield group
