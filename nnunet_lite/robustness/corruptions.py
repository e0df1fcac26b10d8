"""Photometric corruptions with five severities, grouped into per-modality suites.

The corruptions follow ImageNet-C (Hendrycks & Dietterich, ICLR 2019; reference code ``imagecorruptions`` 1.1.2) and
MedMNIST-C (Di Salvo et al., arXiv 2406.17536; ``medmnistc/corruptions/registry.py``), which chose per-modality
parameters. Both libraries are Apache-2.0 but neither imports with today's stack (``imagecorruptions`` needs
``pkg_resources``, ``np.float_`` and ``scipy.ndimage.interpolation``, all removed; ``medmnistc`` pins
scikit-image 0.23 and needs ImageMagick), so the functions are re-implemented here from those references with numpy,
scipy, scikit-image and Pillow. Only geometry-preserving corruptions are used, so the reference masks stay valid.

Both references work on 224x224 images; spatial parameters (blur radii, motion length) are scaled by
``min(height, width) / 224`` so that a severity means the same relative blur at any resolution.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance
from scipy import ndimage

REFERENCE_SIZE = 224  # ImageNet-C and MedMNIST-C parameters are for 224x224 images
SEVERITIES = (1, 2, 3, 4, 5)


def _scale(image: np.ndarray) -> float:
    return min(image.shape[:2]) / REFERENCE_SIZE


def _per_channel(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if image.ndim == 2:
        return fn(image)
    return np.stack([fn(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolution with reflected borders, by FFT (blur kernels reach 45 px on 600 px endoscopy frames)."""
    from scipy.signal import fftconvolve

    ky, kx = kernel.shape[0] // 2, kernel.shape[1] // 2

    def one(x: np.ndarray) -> np.ndarray:
        padded = np.pad(x, ((ky, ky), (kx, kx)), mode="reflect")
        return fftconvolve(padded, kernel, mode="valid")

    return _per_channel(image, one)


# ------------------------------------------------------------------------------------------------ corruptions
# Each takes a float image in [0, 1] (H x W or H x W x C), the severity's parameter and a numpy Generator.


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of standard deviation ``std`` (ImageNet-C ``gaussian_noise``)."""
    return image + rng.normal(0, std, image.shape)


def shot_noise(image: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise with ``photons`` counts at full intensity (ImageNet-C ``shot_noise``)."""
    return rng.poisson(image * photons) / photons


def impulse_noise(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise on a fraction ``amount`` of the values (ImageNet-C ``impulse_noise``, skimage ``s&p``)."""
    from skimage.util import random_noise

    return random_noise(np.clip(image, 0, 1), mode="s&p", amount=amount, rng=rng)


def speckle_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative Gaussian noise ``x + x * N(0, std)`` (ImageNet-C / MedMNIST-C ``speckle_noise``)."""
    return image + image * rng.normal(0, std, image.shape)


def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` pixels at 224 px (ImageNet-C ``gaussian_blur``)."""
    s = sigma * _scale(image)
    return _per_channel(image, lambda x: ndimage.gaussian_filter(x, s, mode="reflect"))


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    # ImageNet-C's disk(): a normalised disc, anti-aliased by a small Gaussian. The rim pixels get their fractional
    # coverage so that the blur grows continuously with the (resolution-scaled, non-integer) radius.
    half = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(xx, yy), 0, 1)
    kernel = ndimage.gaussian_filter(kernel, alias_blur) if alias_blur > 0 else kernel
    return kernel / kernel.sum()


def defocus_blur(image: np.ndarray, radius_alias: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus blur: convolution with a disc of ``radius`` px at 224 px (ImageNet-C ``defocus_blur``)."""
    radius, alias = radius_alias
    return _convolve(image, _disk(radius * _scale(image), alias))


def motion_blur(image: np.ndarray, radius_sigma: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Linear motion blur at a random angle in [-45, 45] degrees (ImageNet-C ``motion_blur``).

    As ``imagecorruptions``' ``_motion_blur`` (its replacement for ImageMagick's ``MotionBlurImage``): a one-sided
    line kernel of ``2 * radius + 1`` unit steps with Gaussian weights of width ``sigma``. Here the steps are sub-pixel
    and splatted bilinearly, so the blur grows continuously with the resolution-scaled radius.
    """
    radius, sigma = (p * _scale(image) for p in radius_sigma)
    angle = np.deg2rad(rng.uniform(-45, 45))
    length = max(int(np.ceil(2 * radius)), 1)
    steps = np.linspace(0, 2 * radius, 4 * length + 1)
    weights = np.exp(-(steps**2) / (2 * max(sigma, 1e-3) ** 2))
    kernel = np.zeros((2 * length + 3, 2 * length + 3))
    for step, weight in zip(steps, weights, strict=True):
        y, x = length + 1 + step * np.sin(angle), length + 1 + step * np.cos(angle)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        kernel[y0 : y0 + 2, x0 : x0 + 2] += weight * np.outer([1 - fy, fy], [1 - fx, fx])
    return _convolve(image, kernel / kernel.sum())


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255


def jpeg_compression(image: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG re-encoding at ``quality`` (ImageNet-C ``jpeg_compression``, Pillow's encoder)."""
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="JPEG", quality=int(quality))
    return _from_pil(Image.open(buffer))


def pixelate(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Down- and up-sampling by ``factor`` with box filters (ImageNet-C ``pixelate``); the size is unchanged."""
    pil = _pil(image)
    small = pil.resize((max(1, int(pil.width * factor)), max(1, int(pil.height * factor))), Image.BOX)
    return _from_pil(small.resize(pil.size, Image.BOX))


def brightness(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Pillow's ``ImageEnhance.Brightness`` by ``factor`` (MedMNIST-C ``brightness_up/down``; ultrasound gain)."""
    return _from_pil(ImageEnhance.Brightness(_pil(image)).enhance(factor))


def contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Pillow's ``ImageEnhance.Contrast`` by ``factor`` (MedMNIST-C ``contrast_up/down``)."""
    return _from_pil(ImageEnhance.Contrast(_pil(image)).enhance(factor))


def black_corner(image: np.ndarray, radius_factor: float, rng: np.random.Generator) -> np.ndarray:
    """Dark corners of a dermoscope: everything outside a centred disc of ``radius_factor`` times the half short side
    is black (MedMNIST-C ``BlackCorner``, the "dark corner" artefact of Bissoto et al., CVPR-W 2019)."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    inside = np.hypot(yy - h // 2, xx - w // 2) <= radius_factor * min(h, w) / 2
    return image * (inside if image.ndim == 2 else inside[..., None])


def specular_highlights(image: np.ndarray, count_radius: tuple[int, float], rng: np.random.Generator) -> np.ndarray:
    """Specular reflections of the endoscope's light: ``count`` saturated white spots with a Gaussian rim, radius up
    to ``radius`` px at 224 px, blended over the image.

    No library implements this; the appearance (small saturated, near-white, sharply bounded blobs on wet mucosa) is
    the one detected and inpainted by Arnold et al., "Automatic segmentation and inpainting of specular highlights for
    endoscopic imaging", EURASIP J. Image Video Process. 2010.
    """
    count, radius = count_radius
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.zeros((h, w))
    for _ in range(int(count)):
        r = max(rng.uniform(0.3, 1.0) * radius * _scale(image), 1.0)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ay, ax = r * rng.uniform(0.5, 1.0), r  # elongated, like reflections on folds
        d = np.hypot((yy - cy) / ay, (xx - cx) / ax)
        alpha = np.maximum(alpha, np.clip(1.5 - d, 0, 1))  # saturated core, ~half-radius soft rim
    alpha = alpha if image.ndim == 2 else alpha[..., None]
    return image * (1 - alpha) + alpha


# ------------------------------------------------------------------------------------------ dermoscopy artefacts
# Objects lying on the skin, not acquisition noise: hair, a ruler and ink markings, the artefacts that Bissoto et al.
# ("(De)constructing bias on skin lesion datasets", CVPR-W 2019) annotate in ISIC images and MedLiteNet names as its
# failure modes. Each is drawn as a layer (opacity, colour, mask of the pixels it covers) from the case's random stream;
# the draws do not depend on the severity, which only sets how many of the drawn items (hairs, ruler length, stroke
# arc) are shown, so a higher severity covers a superset of the pixels of a lower one. The mask is what
# ``robustness make`` records for the artefact false-positive rate.

Layer = tuple[np.ndarray, np.ndarray, np.ndarray]  # opacity H x W in [0, 1], colour H x W x 3 in [0, 1], mask H x W


def _layer_from(mask_pil: Image.Image, colour_pil: Image.Image, opacity: np.ndarray | float, scale: float) -> Layer:
    """Opacity with a soft rim of about half a pixel at 224 px (the drawn core stays fully covered), as arrays."""
    mask = np.asarray(mask_pil) > 0
    soft = ndimage.gaussian_filter(mask.astype(np.float64), max(0.6 * scale, 0.5))
    alpha = np.maximum(mask, np.clip(1.6 * soft, 0, 1)) * opacity
    return alpha, np.asarray(colour_pil, dtype=np.float64) / 255, mask


def _hair_layer(shape: tuple[int, int], count: int, rng: np.random.Generator) -> Layer:
    # DullRazor (Lee et al., Comput. Biol. Med. 1997) characterises hair in dermoscopy as thin (a few pixels), long,
    # dark and gently curved lines, often crossing the lesion; each hair is a quadratic Bezier curve of that kind.
    h, w = shape
    scale = min(h, w) / REFERENCE_SIZE
    mask, colour, opacity = Image.new("L", (w, h)), Image.new("RGB", (w, h)), Image.new("L", (w, h))
    draw_mask, draw_colour, draw_opacity = ImageDraw.Draw(mask), ImageDraw.Draw(colour), ImageDraw.Draw(opacity)
    t = np.linspace(0, 1, 48)[:, None]
    for _ in range(int(count)):  # a fixed number of draws per hair: severities share their first hairs
        start = rng.uniform(-0.1, 1.1, 2) * (w, h)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.7) * min(h, w)
        bend, width = rng.uniform(-0.3, 0.3), rng.uniform(1.0, 2.5)
        shade, alpha = rng.uniform(0.06, 0.3), rng.uniform(0.8, 1.0)
        direction = np.array([np.cos(angle), np.sin(angle)])
        end = start + length * direction
        control = (start + end) / 2 + bend * length * np.array([-direction[1], direction[0]])
        curve = [tuple(p) for p in (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end]
        size = max(1, int(round(width * scale)))
        draw_mask.line(curve, fill=255, width=size, joint="curve")
        # colour and opacity reach 1 px further: the soft rim of a hair has the hair's colour and opacity
        draw_colour.line(curve, fill=tuple(int(255 * shade * f) for f in (1.0, 0.8, 0.65)), width=size + 2)
        draw_opacity.line(curve, fill=int(255 * alpha), width=size + 2, joint="curve")
    opacity = np.asarray(opacity, dtype=np.float64) / 255
    return _layer_from(mask, colour, opacity, scale)


def _ruler_layer(shape: tuple[int, int], length: float, rng: np.random.Generator) -> Layer:
    # A millimetre ruler laid on the skin next to the lesion (a "ruler" artefact of Bissoto et al. 2019; scale bars
    # change a CNN's melanoma scores, Winkler et al., Eur. J. Cancer 2021): a translucent light strip along an image
    # border with dark ticks every millimetre, longer every 5 and 10 mm. ``length``: fraction of the border.
    h, w = shape
    scale = min(h, w) / REFERENCE_SIZE
    side = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right
    offset, start = rng.uniform(0.02, 0.08), rng.uniform(0.0, 0.08)
    band, mm = 0.09 * min(h, w), 224 / 24 * scale  # a field of view of ~24 mm across the short side
    along = w if side < 2 else h
    a0, a1 = start * along, min(start + length, 1.0) * along
    b0 = offset * min(h, w)
    b_edge = b0 + band  # the strip's inner edge, where the ticks start
    mask, colour = Image.new("L", (w, h)), Image.new("RGB", (w, h), (235, 232, 225))
    draw_mask, draw_colour = ImageDraw.Draw(mask), ImageDraw.Draw(colour)

    def box(u0: float, u1: float, v0: float, v1: float) -> tuple[float, float, float, float]:
        # (along, across) -> image rectangle for the chosen side; across is measured from that border
        x0, y0, x1, y1 = (
            (u0, v0, u1, v1),
            (u0, h - 1 - v1, u1, h - 1 - v0),
            (v0, u0, v1, u1),
            (w - 1 - v1, u0, w - 1 - v0, u1),
        )[side]
        x0, y0 = round(x0), round(y0)  # integer corners: Pillow rounds float ones inconsistently
        return x0, y0, max(x0, round(x1)), max(y0, round(y1))

    draw_mask.rectangle(box(a0, a1, b0, b_edge), fill=255)
    line = max(1, int(round(0.8 * scale)))
    ticks = np.arange(a0 + mm / 2, a1, mm)
    for k, u in enumerate(ticks):
        reach = band * (0.75 if k % 10 == 0 else 0.5 if k % 5 == 0 else 0.3)
        draw_colour.rectangle(box(u, u + line - 1, b_edge - reach, b_edge), fill=(30, 30, 30))
    draw_colour.rectangle(box(a0, a1, b_edge - line, b_edge), fill=(30, 30, 30))  # the scale's base line
    ticks_drawn = np.asarray(colour).sum(-1) < 200
    opacity = np.where(ticks_drawn, 0.95, 0.55)  # translucent plastic, opaque printed ticks
    return _layer_from(mask, colour, opacity, scale)


def _ink_layer(shape: tuple[int, int], arc: float, rng: np.random.Generator) -> Layer:
    # Surgical skin markings: gentian-violet marker strokes drawn around the lesion before excision (Winkler et al.,
    # JAMA Dermatol 2019, who found they raise a CNN's melanoma probability). A wobbly loop of marker around the image
    # centre (where dermoscopy centres the lesion); ``arc``: the fraction of the loop drawn.
    h, w = shape
    scale = min(h, w) / REFERENCE_SIZE
    centre = np.array([w, h]) / 2 + rng.uniform(-0.05, 0.05, 2) * min(h, w)
    radius = rng.uniform(0.36, 0.44) * min(h, w) * np.array([rng.uniform(1.0, 1.25), rng.uniform(0.8, 1.0)])
    phases, amplitudes = rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.0, 0.05, 3)
    start, width = rng.uniform(0, 2 * np.pi), rng.uniform(4.0, 6.0)
    colour_rgb = tuple(int(255 * c) for c in rng.uniform((0.32, 0.12, 0.45), (0.45, 0.22, 0.6)))  # gentian violet
    theta = start + 2 * np.pi / 400 * np.arange(int(round(400 * arc)) + 1)  # fixed steps: shorter arcs are prefixes
    wobble = 1 + sum(a * np.sin((k + 2) * theta + p) for k, (a, p) in enumerate(zip(amplitudes, phases, strict=True)))
    points = centre + (wobble[:, None] * radius) * np.stack([np.cos(theta), np.sin(theta)], -1)
    mask, colour = Image.new("L", (w, h)), Image.new("RGB", (w, h), colour_rgb)
    size = max(1, int(round(width * scale)))
    ImageDraw.Draw(mask).line([tuple(p) for p in points], fill=255, width=size, joint="curve")
    return _layer_from(mask, colour, 0.8, scale)  # ink is translucent: the skin shows through


def _composite(image: np.ndarray, layer: Layer) -> np.ndarray:
    alpha, colour, _ = layer
    if image.ndim == 2:  # greyscale: the colour's luminance
        colour = colour @ np.array([0.299, 0.587, 0.114])
    elif image.shape[-1] != 3:
        colour = np.repeat((colour @ np.array([0.299, 0.587, 0.114]))[..., None], image.shape[-1], -1)
    alpha = alpha if image.ndim == 2 else alpha[..., None]
    return image * (1 - alpha) + alpha * colour


def hair(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` dark curved hairs, 1-2.5 px wide at 224 px and 25-70 % of the short side long, over the image."""
    return _composite(image, _hair_layer(image.shape[:2], count, rng))


def ruler(image: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """A millimetre ruler along a random border, covering ``length`` of it (ticks every mm: more ticks when longer)."""
    return _composite(image, _ruler_layer(image.shape[:2], length, rng))


def ink_marker(image: np.ndarray, arc: float, rng: np.random.Generator) -> np.ndarray:
    """A gentian-violet marker loop around the centre, ``arc`` of it drawn (1.0: closed)."""
    return _composite(image, _ink_layer(image.shape[:2], arc, rng))


# artefact function -> its layer (opacity, colour, mask)
ARTEFACTS: dict[Callable, Callable[[tuple[int, int], object, np.random.Generator], Layer]] = {
    hair: _hair_layer,
    ruler: _ruler_layer,
    ink_marker: _ink_layer,
}


# ------------------------------------------------------------------------------------ float (non-8-bit) variants
# CT, MR and other non-8-bit intensities must not pass through 8-bit Pillow: that quantises every severity to 256
# levels (16 HU steps on a 4000 HU CT range). The variants below work on the same [0, 1]-scaled float image and keep
# every gradation; 8-bit images keep the reference implementations above, bit for bit.


def brightness_float(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """An intensity offset of ``factor - 1`` times the mean of the range-scaled image: the mean moves as far as under
    Pillow's brightness (``x * factor``), as a uniform shift (a calibration or window offset; there is no "black" to
    scale towards in HU). An offset of ``factor - 1`` times the whole range would saturate every voxel of a CT at
    gain 2.0 (ultrasound severity 5)."""
    return image + (factor - 1) * image.mean()


def contrast_float(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Scaling around the mean by ``factor``: Pillow's ``ImageEnhance.Contrast`` formula in float, over the whole
    array given (a whole volume at once, so that its slices stay consistent)."""
    mean = image.mean()
    return mean + factor * (image - mean)


def pixelate_float(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """:func:`pixelate` with Pillow's box filter on 32-bit float pixels (mode ``F``): same geometry, no 8-bit step."""

    def one(x: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(x.astype(np.float32))
        small = pil.resize((max(1, int(pil.width * factor)), max(1, int(pil.height * factor))), Image.BOX)
        return np.asarray(small.resize(pil.size, Image.BOX), dtype=np.float64)

    return _per_channel(image, one)


def shot_noise_float(image: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise's mean and variance (``x`` and ``x / photons``) as Gaussian noise: :func:`shot_noise` divides
    integer counts by ``photons``, which leaves only ``photons + 1`` levels (4 at severity 5)."""
    return image + rng.normal(0, 1, image.shape) * np.sqrt(np.clip(image, 0, None) / photons)


# function for 8-bit images -> float variant; a string instead says why the corruption has no float version
FLOAT_VARIANTS: dict[Callable, Callable | str] = {
    brightness: brightness_float,
    contrast: contrast_float,
    pixelate: pixelate_float,
    shot_noise: shot_noise_float,
    jpeg_compression: "JPEG is an 8-bit codec (its artefacts are 8-bit quantisation); CT/MR and other non-8-bit "
    "intensities are not stored or acquired that way",
    **{
        artefact: "hair, rulers and ink on the skin exist only in natural RGB (8-bit) dermoscopy photographs, not in "
        "CT/MR or other non-8-bit images"
        for artefact in ARTEFACTS
    },
}
# float variants that use whole-array statistics: applied to a volume at once, not slice by slice
WHOLE_VOLUME = (brightness_float, contrast_float)


@dataclass(frozen=True)
class Corruption:
    """One corruption of a suite: the function and its parameter for severities 1-5, with where they come from."""

    name: str
    function: Callable[[np.ndarray, object, np.random.Generator], np.ndarray]
    parameters: tuple
    source: str

    def float_function(self) -> Callable[[np.ndarray, object, np.random.Generator], np.ndarray] | None:
        """The implementation for non-8-bit intensities (CT, MR, 16-bit, float), or None if there is none."""
        variant = FLOAT_VARIANTS.get(self.function, self.function)
        return None if isinstance(variant, str) else variant

    def float_refusal(self) -> str | None:
        """Why this corruption has no float implementation, or None if it has one."""
        variant = FLOAT_VARIANTS.get(self.function)
        return variant if isinstance(variant, str) else None

    @property
    def is_artefact(self) -> bool:
        """An object drawn over the image (hair, ruler, ink): ``make`` records its mask per case."""
        return self.function in ARTEFACTS

    def apply_with_mask(
        self, image: np.ndarray, severity: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """For an artefact on an 8-bit 2D image (H x W or H x W x C in [0, 1]): the corrupted image and the boolean
        H x W mask of the pixels the artefact covers."""
        if not self.is_artefact:
            raise ValueError(f"{self.name} is not an artefact; it has no mask")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
        layer = ARTEFACTS[self.function](image.shape[:2], self.parameters[severity - 1], rng)
        return np.clip(_composite(image, layer), 0, 1), layer[2]

    def apply(
        self, image: np.ndarray, severity: int, rng: np.random.Generator, *, eight_bit: bool = True
    ) -> np.ndarray:
        """``image``: float in [0, 1], H x W or H x W x C; returns the same shape, clipped to [0, 1].

        ``eight_bit``: the image came from 8-bit pixels (reference implementations, some through Pillow); False for
        any other intensities, which use the float variants (:data:`FLOAT_VARIANTS`) and never pass through 8 bits.
        """
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
        function = self.function if eight_bit else self.float_function()
        if function is None:
            raise ValueError(f"{self.name}: no float implementation: {self.float_refusal()}")
        return np.clip(function(image, self.parameters[severity - 1], rng), 0, 1)


IMAGENET_C = "ImageNet-C"
DERMA = "MedMNIST-C dermamnist"
BREAST = "MedMNIST-C breastmnist"
HAIR = "own: hair as in Bissoto et al. CVPR-W 2019 (artefact categories), appearance after DullRazor (Lee et al. 1997)"
RULER = "own: ruler marks as catalogued by Bissoto et al. CVPR-W 2019 (scale bars: Winkler et al. EJC 2021)"
INK = "own: gentian-violet skin markings as in Winkler et al. JAMA Dermatol 2019"

# MedMNIST-C's dermamnist black_corner list is [1.10, 1.05, 1.00, 0.90, 0.95]; severities 4 and 5 are swapped here
# so that the corrupted area grows with severity.
SUITES: dict[str, tuple[Corruption, ...]] = {
    "dermoscopy": (
        Corruption("gaussian_noise", gaussian_noise, (0.04, 0.08, 0.12, 0.18, 0.26), DERMA),
        Corruption("defocus_blur", defocus_blur, ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)), DERMA),
        Corruption("motion_blur", motion_blur, ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15)), DERMA),
        Corruption("jpeg_compression", jpeg_compression, (30, 20, 15, 10, 7), DERMA),
        Corruption("brightness_up", brightness, (1.1, 1.2, 1.3, 1.4, 1.5), DERMA),
        Corruption("brightness_down", brightness, (0.9, 0.8, 0.7, 0.6, 0.5), DERMA),
        Corruption("contrast_down", contrast, (0.8, 0.7, 0.6, 0.5, 0.4), DERMA),
        Corruption("black_corner", black_corner, (1.10, 1.05, 1.00, 0.95, 0.90), DERMA),
        # the artefacts MedLiteNet names as its failure modes; see the layer functions above for the sources
        Corruption("hair", hair, (4, 8, 16, 28, 44), HAIR),
        Corruption("ruler", ruler, (0.2, 0.35, 0.5, 0.7, 0.9), RULER),
        Corruption("ink_marker", ink_marker, (0.2, 0.4, 0.6, 0.8, 1.0), INK),
    ),
    "ultrasound": (
        Corruption("speckle_noise", speckle_noise, (0.10, 0.15, 0.20, 0.25, 0.30), BREAST),
        Corruption("motion_blur", motion_blur, ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)), BREAST),
        Corruption("jpeg_compression", jpeg_compression, (50, 30, 15, 10, 7), BREAST),
        Corruption("pixelate", pixelate, (0.30, 0.25, 0.20, 0.15, 0.10), BREAST),
        Corruption("gain_up", brightness, (1.4, 1.5, 1.6, 1.8, 2.0), BREAST + " brightness_up"),
        Corruption("gain_down", brightness, (0.55, 0.5, 0.45, 0.4, 0.3), BREAST + " brightness_down"),
        Corruption("contrast_down", contrast, (0.9, 0.8, 0.7, 0.6, 0.4), BREAST),
    ),
    # MedMNIST-C has no endoscopy set: ImageNet-C's blur/noise/digital parameters, MedMNIST-C's generic exposure.
    "endoscopy": (
        Corruption("defocus_blur", defocus_blur, ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)), IMAGENET_C),
        Corruption("motion_blur", motion_blur, ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), IMAGENET_C),
        Corruption("gaussian_noise", gaussian_noise, (0.08, 0.12, 0.18, 0.26, 0.38), IMAGENET_C),
        Corruption("jpeg_compression", jpeg_compression, (25, 18, 15, 10, 7), IMAGENET_C),
        Corruption("brightness_up", brightness, (1.1, 1.2, 1.3, 1.4, 1.5), DERMA + " (exposure)"),
        Corruption("brightness_down", brightness, (0.9, 0.8, 0.7, 0.6, 0.5), DERMA + " (exposure)"),
        Corruption("specular_highlights", specular_highlights, ((2, 6), (4, 8), (6, 10), (8, 12), (12, 14)), "own"),
    ),
    "generic": (
        Corruption("gaussian_noise", gaussian_noise, (0.08, 0.12, 0.18, 0.26, 0.38), IMAGENET_C),
        Corruption("shot_noise", shot_noise, (60, 25, 12, 5, 3), IMAGENET_C),
        Corruption("impulse_noise", impulse_noise, (0.03, 0.06, 0.09, 0.17, 0.27), IMAGENET_C),
        Corruption("gaussian_blur", gaussian_blur, (1, 2, 3, 4, 6), IMAGENET_C),
        Corruption("defocus_blur", defocus_blur, ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)), IMAGENET_C),
        Corruption("motion_blur", motion_blur, ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), IMAGENET_C),
        Corruption("jpeg_compression", jpeg_compression, (25, 18, 15, 10, 7), IMAGENET_C),
        Corruption("pixelate", pixelate, (0.6, 0.5, 0.4, 0.3, 0.25), IMAGENET_C),
        Corruption("brightness_up", brightness, (1.1, 1.2, 1.3, 1.4, 1.5), DERMA),
        Corruption("brightness_down", brightness, (0.9, 0.8, 0.7, 0.6, 0.5), DERMA),
        Corruption("contrast_down", contrast, (0.8, 0.7, 0.6, 0.5, 0.4), DERMA),
    ),
}


def get_suite(name: str, corruptions: list[str] | None = None) -> tuple[Corruption, ...]:
    """The suite ``name``, optionally restricted to the named ``corruptions`` (in the suite's order)."""
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    suite = SUITES[name]
    if corruptions:
        known = [c.name for c in suite]
        unknown = [c for c in corruptions if c not in known]
        if unknown:
            raise KeyError(f"suite {name} has no corruption {unknown}; it has {known}")
        suite = tuple(c for c in suite if c.name in corruptions)
    return suite


def case_rng(seed: int, corruption: str, case: str) -> np.random.Generator:
    """The random stream of one case and corruption, fixed by the seed and names only (stable across runs and case
    order). It does not depend on the severity: every severity draws the same noise, angle or spots, scaled, so the
    severities of a case differ only in strength."""
    return np.random.default_rng([seed, zlib.crc32(corruption.encode()), zlib.crc32(case.encode())])
