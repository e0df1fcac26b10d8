"""2D images and masks: reading PNG/JPEG/BMP/TIFF, RGB conversion, binarising masks with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConversionError


def _read_tiff(path: Path) -> np.ndarray:
    import logging

    import tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # tifffile logs broken headers and returns nothing; we raise instead
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ValueError("no image in the file")
            arr = tif.pages[0].asarray()
    except Exception as e:  # tifffile raises TiffFileError, ValueError, KeyError, ... on broken files
        raise ConversionError(
            f"cannot read TIFF ({type(e).__name__}: {e})",
            path,
            hint="the file is damaged or not a TIFF; re-download it",
        ) from e
    finally:
        logger.setLevel(level)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):  # planar configuration
        arr = np.moveaxis(arr, 0, -1)
    if arr.size == 0:
        raise ConversionError("cannot read TIFF (empty image)", path, hint="the file is damaged; re-download it")
    return np.ascontiguousarray(arr)


def load_image_array(path: Path) -> np.ndarray:
    """Decoded pixels of a PNG/JPEG/BMP/TIFF as stored, (H, W) or (H, W, C).

    TIFFs go through tifffile (CVC-ClinicDB's RGB TIFFs carry a header Pillow rejects); 1-bit images become bool
    arrays; palette images are expanded to RGB(A); CMYK/YCbCr become RGB.
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "PA":
                im = im.convert("RGBA")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ConversionError(
            f"cannot read image ({type(e).__name__}: {e})",
            path,
            hint="the file is truncated, damaged or not an image; re-download or remove it",
        ) from e


def to_rgb(arr: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 and whether the source was grey (1 channel, or 3 equal channels)."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise ConversionError(
            f"{arr.dtype} pixels; only 8-bit images are supported",
            path,
            hint="convert the image to 8 bits per channel first",
        )
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # grey (+ alpha)
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2), True
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = np.ascontiguousarray(arr[..., :3])
        grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        return rgb, grey
    raise ConversionError(f"unsupported image shape {arr.shape}", path, hint="expected a grey or RGB(A) image")


# Threshold mode (lossy or anti-aliased masks): what counts as compression noise rather than a grey region or colour.
# Measured on the real Kvasir-SEG (JPEG) and CVC-ClinicDB (TIFF) masks and on synthetic JPEG masks down to quality 30:
# every pixel between a quarter and three quarters of the range lies within 3 px of both a black and a white pixel.
MASK_GREY_BAND = (0.25, 0.75)  # of the value range: values strictly inside are "grey" (63..192 for 8 bits)


MASK_EDGE_RADIUS = 3  # px: grey or coloured pixels this close to both black and white are edge noise


MASK_NOISE_PIXELS = 16  # grey or coloured pixels away from edges tolerated per mask (isolated JPEG ringing)


MASK_EDGE_SHARE = 1 / 3  # grey pixels may fill at most this share of the strip along black/white edges


def _distinct(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    return np.unique(arr)


def _grey_band(grey: np.ndarray) -> tuple[int, int]:
    """Values strictly between these two are grey (8-bit range, or 16-bit if the mask uses it)."""
    top = 255 if grey.max(initial=0) <= 255 else 65535
    low = int(MASK_GREY_BAND[0] * top)
    return low, top - low


def _away_from_edges(grey: np.ndarray) -> np.ndarray:
    """Pixels that are not within MASK_EDGE_RADIUS of both a black and a white pixel."""
    from scipy import ndimage

    low, high = _grey_band(grey)
    window = 2 * MASK_EDGE_RADIUS + 1
    near_black = ndimage.maximum_filter(grey <= low, size=window)
    near_white = ndimage.maximum_filter(grey >= high, size=window)
    return ~(near_black & near_white)


def _check_colours(rgb: np.ndarray, path: Path, grey: np.ndarray | None) -> None:
    """Raise if a colour mask holds more than one foreground colour (labels that would be merged into one).

    ``grey`` None: lossless mask, exact colours. Otherwise (thresholded, possibly lossy) colours are told apart by
    which channels are above half range, ignoring pixels along black/white edges and a few noise pixels.
    """
    if grey is None:
        codes = (rgb[..., 0].astype(np.int64) << 32) | (rgb[..., 1].astype(np.int64) << 16) | rgb[..., 2]
        colours, counts = np.unique(codes[codes != 0], return_counts=True)
        found = [
            (tuple(int(c >> s) & 0xFFFF for s in (32, 16, 0)), int(n)) for c, n in zip(colours, counts, strict=True)
        ]
    else:
        half = (255 if rgb.max(initial=0) <= 255 else 65535) // 2
        chroma = rgb.max(axis=2).astype(np.int64) - rgb.min(axis=2)
        if np.count_nonzero(chroma > half // 2) <= MASK_NOISE_PIXELS:
            return  # black and white (or grey)
        hard = _away_from_edges(grey)
        bits = (rgb > half).astype(np.int64) @ np.array([4, 2, 1])
        colours, counts = np.unique(bits[(bits != 0) & hard], return_counts=True)
        found = [
            (tuple(int(v) for v in np.median(rgb[(bits == c) & hard], axis=0)), int(n))
            for c, n in zip(colours, counts, strict=True)
            if n > MASK_NOISE_PIXELS
        ]
    if len(found) > 1:
        shown = ", ".join(f"RGB{c} ({n} px)" for c, n in sorted(found, key=lambda t: -t[1])[:4])
        raise ConversionError(
            f"mask has {len(found)} foreground colours: {shown}; merging them would mix different labels",
            path,
            hint="this dataset has one foreground label: check that this is the dataset's original mask, or save "
            "the structure you want as a black-and-white mask",
        )


def _check_grey_band(grey: np.ndarray, path: Path, threshold: int) -> None:
    """Raise unless the grey pixels of a thresholded mask are edge noise of a black-and-white mask."""
    low, high = _grey_band(grey)
    mid = (grey > low) & (grey < high)
    n_mid = int(np.count_nonzero(mid))
    if n_mid == 0:
        return
    away = _away_from_edges(grey)
    n_away = int(np.count_nonzero(mid & away))
    strip = grey.size - int(np.count_nonzero(away))
    if n_away > MASK_NOISE_PIXELS or n_mid > MASK_EDGE_SHARE * strip:
        raise ConversionError(
            f"mask has {n_mid} grey pixels ({100 * n_mid / grey.size:.1f} %) with values between {low:g} and "
            f"{high:g}, {n_away} of them more than {MASK_EDGE_RADIUS} px from a black/white edge: a grey band or "
            f"a soft mask, not compression noise (a few pixels along edges, at most {MASK_NOISE_PIXELS} elsewhere); "
            f"the threshold {threshold} would silently decide which side the band falls on",
            path,
            hint="check that this is the dataset's original mask; if the grey region means something, save a "
            "black-and-white mask that says which side it belongs to and convert again",
        )


def binarize_mask(arr: np.ndarray, path: Path, threshold: int | None = None) -> np.ndarray:
    """A {0, 1} uint8 mask.

    Args:
        arr: decoded mask, (H, W) or (H, W, C); colour masks must have a single foreground colour and are reduced
            with the channel maximum (alpha dropped).
        path: for error messages.
        threshold: None: the mask must be binary (0 and one other value, e.g. 0/255, 0/1, 1-bit) and every non-zero
            pixel is foreground. An int: pixels > threshold are foreground (lossy JPEG masks, anti-aliased edges);
            masks whose maximum is 1 are read as 0/1. Grey values (between a quarter and three quarters of the
            range) are accepted only as edge noise: next to both black and white, a few pixels in all
            (``MASK_EDGE_RADIUS``, ``MASK_NOISE_PIXELS``, ``MASK_EDGE_SHARE``).

    Raises:
        ConversionError: non-binary values where a binary mask is expected, a grey band, or several colours.
    """
    colour = None
    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels in (3, 4):
            colour = arr[..., :3]
        arr = arr[..., : 1 if channels == 2 else 3 if channels == 4 else channels].max(axis=2)
    if arr.ndim != 2:
        raise ConversionError(f"unsupported mask shape {arr.shape}", path)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if threshold is None:
        values = _distinct(arr)
        if np.count_nonzero(values) > 1:
            shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            raise ConversionError(
                f"mask is not binary: {len(values)} distinct values ({shown}); expected 0 and one foreground value",
                path,
                hint="check that this is the original mask of the distribution; if it is anti-aliased or was saved "
                "lossily, pass --mask-threshold 127 to treat values > 127 as foreground",
            )
        if colour is not None:
            _check_colours(colour, path, None)
        return (arr != 0).astype(np.uint8)
    if arr.max(initial=0) <= 1:
        return (arr > 0).astype(np.uint8)
    if colour is not None:
        _check_colours(colour, path, arr)
    if len(_distinct(arr)) > 2:  # 0/255 (or 0/v) masks need no check
        _check_grey_band(arr, path, threshold)
    return (arr > threshold).astype(np.uint8)
