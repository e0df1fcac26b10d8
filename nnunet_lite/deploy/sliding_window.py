"""nnU-Net's sliding window (padding, window positions, Gaussian weighting, fp16 accumulation in its order), with the
windows of several images and their mirrored copies batched through the network."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .engines import PredictError

# Network batches hold at most this many input elements (windows x mirrored copies x C x patch): 21 windows of
# 3x256x256, or one 128^3 window with its 8 mirrored copies split into batches of 2 (keeps 3D activations in check).
DEFAULT_MAX_BATCH_ELEMENTS = 2**22


def mirror_combinations(mirror_axes: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """nnU-Net's test-time mirroring combinations (spatial axes, 0-based), in its order."""
    if mirror_axes is None:
        return []
    return [c for i in range(len(mirror_axes)) for c in itertools.combinations(mirror_axes, i + 1)]


def sliding_window_slicers(image_size: Sequence[int], patch_size: Sequence[int], tile_step_size: float) -> list:
    """``nnUNetPredictor._internal_get_sliding_window_slicers``: the window positions, in nnU-Net's order (a 2D
    patch on a 3D image slides over every slice). Not imported from nnU-Net: its predictor module takes seconds to
    import (torch._dynamo, every trainer module), a start-up cost this path avoids for the ONNX engine."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    patch_size = tuple(patch_size)
    if len(patch_size) < len(image_size):
        steps = compute_steps_for_sliding_window(tuple(image_size[1:]), patch_size, tile_step_size)
        return [
            (slice(None), d, *[slice(s, s + p) for s, p in zip(corner, patch_size, strict=True)])
            for d in range(image_size[0])
            for corner in itertools.product(*steps)
        ]
    steps = compute_steps_for_sliding_window(tuple(image_size), patch_size, tile_step_size)
    return [
        (slice(None), *[slice(s, s + p) for s, p in zip(corner, patch_size, strict=True)])
        for corner in itertools.product(*steps)
    ]


@torch.inference_mode()
def sliding_window_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[torch.Tensor],
    configuration_manager,
    num_heads: int,
    *,
    tile_step_size: float = 0.5,
    mirror_axes: tuple[int, ...] | None = None,
    device: torch.device | str = "cpu",
    max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS,
    max_batch: int | None = None,
) -> list[torch.Tensor]:
    """``nnUNetPredictor.predict_sliding_window_return_logits`` for several images of one shape at once.

    Same padding, window positions, Gaussian weighting and fp16 accumulation in nnU-Net's order; the only difference
    is that windows (of all ``images``) and their mirrored copies go through ``forward`` in batches of up to
    ``max_batch_elements`` input elements. Returns fp16 logits per image ``(heads, *spatial)`` (nnU-Net's dtype).
    """
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    device = torch.device(device)
    patch = tuple(configuration_manager.patch_size)
    padded, revert = [], None
    for image in images:
        data, revert = pad_nd_image(image, patch, "constant", {"value": 0}, True, None)
        padded.append(data.to(device))
    slicers = sliding_window_slicers(padded[0].shape[1:], patch, tile_step_size)
    gaussian = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=10, device=device)
    spatial = padded[0].shape[1:]
    combos = mirror_combinations(mirror_axes)
    copies = len(combos) + 1
    window_elements = padded[0].shape[0] * int(np.prod(patch))
    per_call = max(1, max_batch_elements // (window_elements * copies))
    if max_batch is not None:
        per_call = max(1, min(per_call, max_batch // copies))
    jobs = [(i, sl) for i in range(len(padded)) for sl in slicers]
    logits = [torch.zeros((num_heads, *spatial), dtype=torch.half, device=device) for _ in padded]
    n_predictions = torch.zeros(spatial, dtype=torch.half, device=device)
    for sl in slicers:
        n_predictions[sl[1:]] += gaussian

    def run(batch: torch.Tensor) -> torch.Tensor:
        if max_batch is None or batch.shape[0] <= max_batch:
            return forward(batch)
        return torch.cat([forward(batch[i : i + max_batch]) for i in range(0, batch.shape[0], max_batch)])

    for start in range(0, len(jobs), per_call):
        chunk = jobs[start : start + per_call]
        x = torch.stack([padded[i][sl] for i, sl in chunk])
        n = len(chunk)
        one_copy_per_call = max_batch is not None and copies * n > max_batch
        if combos and (one_copy_per_call or copies * n * window_elements > max_batch_elements):  # copy by copy
            outputs = [run(x)] + [run(torch.flip(x, [a + 2 for a in c])) for c in combos]
        elif combos:
            outputs = list(run(torch.cat([x] + [torch.flip(x, [a + 2 for a in c]) for c in combos])).split(n))
        else:
            outputs = [run(x)]
        for j, (i, sl) in enumerate(chunk):
            # nnUNetPredictor._internal_maybe_mirror_and_predict, then the weighting and fp16 accumulation
            prediction = outputs[0][j].to(device).clone()
            for k, c in enumerate(combos, start=1):
                prediction += torch.flip(outputs[k][j].to(device), [a + 1 for a in c])
            if mirror_axes is not None:
                prediction /= copies
            prediction *= gaussian
            logits[i][sl] += prediction
    results = []
    for out in logits:
        torch.div(out, n_predictions, out=out)
        if torch.any(torch.isinf(out)):
            raise PredictError("inf in the predicted logits (fp16 accumulation overflow, as in nnU-Net)")
        results.append(out[(slice(None), *revert[1:])])
    return results
