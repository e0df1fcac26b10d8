"""Input-independent baselines for the training tests: what a network that ignores its input could score.

A learning test passes only if the model's mean Dice beats the best constant prediction by a margin. The constant
predictions are built from the training labels (all-foreground, the per-pixel majority, the best threshold of the
training label frequency, the best disc) and also chosen with hindsight on the evaluated cases themselves, which no
input-independent predictor can beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty (nnU-Net gives NaN there; our cases all have a lesion)."""
    total = pred.sum() + ref.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, ref).sum() / total)


def read_masks(folder: Path, names: Sequence[str], label: int = 1) -> np.ndarray:
    """Stack of boolean masks ``label`` from the PNG label files ``folder/<name>.png``."""
    return np.stack([np.asarray(Image.open(Path(folder) / f"{name}.png")) == label for name in names])


def _mean_dice_of_constants(candidates: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Mean Dice over ``refs`` (n, H, W) of each constant mask in ``candidates`` (k, H, W)."""
    r = refs.reshape(len(refs), -1).astype(np.float32)
    means = []
    for start in range(0, len(candidates), 512):  # chunks: thousands of discs x 4096 pixels in float32
        c = candidates[start : start + 512].reshape(-1, r.shape[1]).astype(np.float32)
        inter = c @ r.T  # (k, n)
        total = c.sum(1)[:, None] + r.sum(1)[None, :]
        means.append(np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0).mean(1))
    return np.concatenate(means)


def _frequency_masks(train: np.ndarray) -> np.ndarray:
    """Every threshold of the training label frequency (per-pixel majority is one of them)."""
    freq = train.mean(0)
    levels = np.unique(freq[freq > 0])
    return freq[None] >= levels[:, None, None]


@lru_cache(maxsize=2)
def _discs(shape: tuple[int, int], step: int = 4) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    centres = [(cy, cx) for cy in range(step // 2, shape[0], step) for cx in range(step // 2, shape[1], step)]
    radii = range(2, max(shape) // 2 + 1, 2)
    return np.stack([np.hypot(yy - cy, xx - cx) < r for cy, cx in centres for r in radii])


def constant_baselines(train: np.ndarray, cases: np.ndarray) -> dict[str, float]:
    """Mean Dice over ``cases`` of input-independent predictions, by name (masks are boolean (n, H, W) stacks)."""
    freq_masks, discs = _frequency_masks(train), _discs(tuple(train.shape[1:]))
    majority = train.mean(0) > 0.5
    chosen_on_train = {
        "frequency threshold": freq_masks[np.argmax(_mean_dice_of_constants(freq_masks, train))],
        "disc": discs[np.argmax(_mean_dice_of_constants(discs, train))],
    }
    scores = {
        "all foreground": float(_mean_dice_of_constants(np.ones((1, *cases.shape[1:]), bool), cases)[0]),
        "per-pixel majority": float(_mean_dice_of_constants(majority[None], cases)[0]),
    }
    for name, mask in chosen_on_train.items():
        scores[f"best {name} on the training labels"] = float(_mean_dice_of_constants(mask[None], cases)[0])
    # hindsight: the best constant of each family for exactly these cases, an upper bound for any such predictor
    scores["best frequency threshold for these cases"] = float(_mean_dice_of_constants(freq_masks, cases).max())
    scores["best disc for these cases"] = float(_mean_dice_of_constants(discs, cases).max())
    return scores


def assert_beats_constant_baselines(
    predictions: np.ndarray,
    cases: np.ndarray,
    train: np.ndarray,
    margin: float,
    min_cases: int,
    baselines: dict[str, float] | None = None,
) -> tuple[float, dict[str, float]]:
    """Fails unless the mean Dice of ``predictions`` on ``cases`` beats every constant baseline by ``margin``.

    ``baselines``: ``constant_baselines(train, cases)`` if already computed. Returns the model's mean Dice and the
    baselines (for messages and reports).
    """
    assert len(predictions) == len(cases) >= min_cases, f"{len(cases)} cases, need {min_cases}"
    score = float(np.mean([dice(p, r) for p, r in zip(predictions, cases, strict=True)]))
    baselines = constant_baselines(train, cases) if baselines is None else baselines
    best = max(baselines, key=baselines.get)
    assert score >= baselines[best] + margin, (
        f"mean Dice {score:.3f} on {len(cases)} cases does not beat the input-independent '{best}' "
        f"({baselines[best]:.3f}) by {margin}; all baselines: { {k: round(v, 3) for k, v in baselines.items()} }"
    )
    return score, baselines
