"""Built-in image data sets that need no download.

* :func:`make_shapes` - a synthetic planted-object benchmark with ground-truth masks, where the
  spread of the object's location within a class (``jitter``) is under control;
* :func:`make_digits` - scikit-learn's bundled handwritten digits (real data, 10 classes).

Both return a :class:`datasets.DatasetDict` with splits ``train``/``validation``/``test`` and the
standardised columns ``image`` (Image), ``label`` (ClassLabel) and, for shapes, ``mask``.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from PIL import ImageDraw

from ..errors import DataError
from .planted import SPLITS, check_planted_options, encode_png, planted_splits

__all__ = ["SHAPE_NAMES", "make_digits", "make_shapes"]

#: The class shapes of :func:`make_shapes`, in label order.
SHAPE_NAMES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star", "hexagon")

# Object radius as a fraction of the image size, and the distance of the class centres from the
# image centre.
_RADIUS_RANGE = (0.12, 0.17)
_CENTRE_RADIUS = 0.25
_CORNER = 0.16  # a planted object's centre: this fraction of the size from two image edges
_LUMA = np.array([0.299, 0.587, 0.114])


# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------
def make_shapes(
    num_classes: int = 4,
    size: int = 128,
    n_train: int = 100,
    n_val: int = 25,
    n_test: int = 25,
    jitter: float = 0.08,
    distractors: int = 2,
    grayscale: bool = False,
    seed: int = 0,
    planted: float = 0.0,
) -> DatasetDict:
    """Synthetic planted-object benchmark with a ground-truth ``mask`` column.

    Class ``k`` is the shape ``SHAPE_NAMES[k]`` drawn near a class-typical location (the class
    centres lie on a circle around the image centre) plus a uniform random offset of up to
    ``jitter * size`` in x and y, with random size, colour and a small rotation, over a textured
    background with ``distractors`` clutter objects (lines and thin ellipses, never a class shape,
    always drawn below the planted object). Small ``jitter``: the object sits at the same place
    within a class; large ``jitter`` (e.g. 0.3): it can be anywhere. ``n_train``/``n_val``/``n_test``
    count images *per class*. Same ``seed`` -> byte-identical images.

    ``planted`` (e.g. 0.05): that share of the validation images has its object in an image corner,
    away from every class's usual place (the corner of the quadrant its random offset points to,
    plus that offset), and the bool column ``planted`` marks them: a known set of images where a
    model that recognises the shape looks somewhere unusual. The other images are those of
    ``planted=0``.

    >>> dsd = make_shapes(num_classes=3, size=96, jitter=0.3, seed=1)
    >>> dsd["train"].features["label"].names
    ['circle', 'square', 'triangle']
    """
    _check_shapes_args(num_classes, size, n_train, n_val, n_test, jitter, distractors, planted)

    def render(rng: np.random.Generator, label: int) -> tuple[dict, dict]:
        return _shapes_sample(rng, label, num_classes, size, jitter, distractors, grayscale)

    def render_planted(rng: np.random.Generator, label: int) -> tuple[dict, dict]:
        return _shapes_sample(rng, label, num_classes, size, jitter, distractors, grayscale, planted=True)

    counts = {"train": n_train, "validation": n_val, "test": n_test}
    return planted_splits(SHAPE_NAMES[:num_classes], counts, seed, render, planted, render_planted)


def _check_shapes_args(num_classes, size, n_train, n_val, n_test, jitter, distractors, planted) -> None:
    if not 2 <= num_classes <= len(SHAPE_NAMES):
        raise DataError(
            f"shapes supports 2 to {len(SHAPE_NAMES)} classes ({', '.join(SHAPE_NAMES)}), got num_classes={num_classes}"
        )
    check_planted_options("shapes", size, 32, n_train, n_val, n_test, jitter, distractors, planted)


def class_centre(label: int, num_classes: int, size: int) -> tuple[float, float]:
    """Class-typical object centre (x, y) in pixels: evenly spaced on a circle."""
    angle = 2 * math.pi * label / num_classes - math.pi / 2
    centre = size / 2
    return (
        centre + _CENTRE_RADIUS * size * math.cos(angle),
        centre + _CENTRE_RADIUS * size * math.sin(angle),
    )


def _shapes_sample(rng, label, num_classes, size, jitter, distractors, grayscale, planted=False):
    """One (image, mask) pair of :func:`make_shapes` (``planted``: the object in a corner, with the
    same random numbers drawn)."""
    canvas = _background(rng, size)
    for _ in range(distractors):
        _paint(canvas, _distractor_mask(rng, size), _object_colour(rng))

    radius = rng.uniform(*_RADIUS_RANGE) * size
    dx = rng.uniform(-jitter, jitter) * size
    dy = rng.uniform(-jitter, jitter) * size
    cx, cy = _corner(dx, dy, size) if planted else class_centre(label, num_classes, size)
    cx += dx
    cy += dy
    cx = float(np.clip(cx, radius + 1, size - radius - 1))
    cy = float(np.clip(cy, radius + 1, size - radius - 1))
    rotation = rng.uniform(-15, 15)
    mask = _shape_mask(SHAPE_NAMES[label], size, cx, cy, radius, rotation)
    _paint(canvas, mask, _object_colour(rng))

    image = PILImage.fromarray(np.round(canvas).clip(0, 255).astype(np.uint8), "RGB")
    if grayscale:
        image = image.convert("L")
    return encode_png(image), encode_png(PILImage.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L"))


def _corner(dx: float, dy: float, size: int) -> tuple[float, float]:
    """The centre of a planted object: near the image corner of the quadrant that (dx, dy) points to."""
    return (_CORNER if dx < 0 else 1 - _CORNER) * size, (_CORNER if dy < 0 else 1 - _CORNER) * size


def _background(rng, size: int) -> np.ndarray:
    """Textured, low-saturation background (H, W, 3) float: smooth noise + gradient + grain."""
    coarse = rng.uniform(0, 255, size=(6, 6)).astype(np.uint8)
    smooth = np.asarray(PILImage.fromarray(coarse, "L").resize((size, size), PILImage.BICUBIC), dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * math.pi)
    gradient = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)  # in [-0.71, 0.71]
    grey = 0.35 * (smooth - 128) + 40 * gradient + rng.normal(0, 6, size=(size, size))
    grey = np.clip(128 + grey, 85, 170)
    tint = rng.uniform(-12, 12, size=3)
    return grey[:, :, None] + tint[None, None, :]


def _object_colour(rng) -> np.ndarray:
    """A random colour, either bright (grey level >= 190) or dark (<= 60): contrasts with the
    mid-grey background in colour and also in grey levels (ITU-R 601 luma, as PIL's "L")."""
    rgb = 255.0 * np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.3, 1.0), 1.0))
    luma = float(_LUMA @ rgb)
    if rng.random() < 0.5:  # bright: mix with white up to the target luma
        target = rng.uniform(190, 245)
        mix = max(0.0, (target - luma) / (255.0 - luma))
        return rgb + mix * (255.0 - rgb)
    target = rng.uniform(10, 60)  # dark: scale down to the target luma
    return rgb * min(1.0, target / luma)


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    canvas[mask] = colour


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, rotation: float):
    """Boolean (size, size) mask of one class shape of radius ``r`` centred at (cx, cy)."""
    img = PILImage.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)

    def polygon(points):
        rot = math.radians(rotation)
        pts = [
            (cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)) for x, y in points
        ]
        draw.polygon(pts, fill=255)

    def regular(n, radius, phase):
        return [
            (
                radius * math.cos(phase + 2 * math.pi * i / n),
                radius * math.sin(phase + 2 * math.pi * i / n),
            )
            for i in range(n)
        ]

    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        inner = 0.55 * r
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    elif shape == "square":
        s = 0.85 * r
        polygon([(-s, -s), (s, -s), (s, s), (-s, s)])
    elif shape == "diamond":
        polygon([(0, -r), (0.7 * r, 0), (0, r), (-0.7 * r, 0)])
    elif shape == "triangle":
        polygon(regular(3, r, -math.pi / 2))
    elif shape == "hexagon":
        polygon(regular(6, r, 0.0))
    elif shape == "cross":  # two crossing bars
        a, b = r, 0.33 * r
        polygon([(-b, -a), (b, -a), (b, a), (-b, a)])
        polygon([(-a, -b), (a, -b), (a, b), (-a, b)])
    elif shape == "star":
        outer, inner = regular(5, r, -math.pi / 2), regular(5, 0.42 * r, -math.pi / 2 + math.pi / 5)
        polygon([p for pair in zip(outer, inner) for p in pair])
    else:  # pragma: no cover - guarded by SHAPE_NAMES
        raise DataError(f"unknown shape {shape!r}; valid: {', '.join(SHAPE_NAMES)}")
    return np.asarray(img) > 0


def _distractor_mask(rng, size: int) -> np.ndarray:
    """Clutter that is no class shape: a line or a thin rotated ellipse."""
    img = PILImage.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = rng.uniform(0.1, 0.9, size=2) * size
    length = rng.uniform(0.12, 0.3) * size
    angle = rng.uniform(0, math.pi)
    dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
    if rng.random() < 0.5:
        width = max(1, round(rng.uniform(0.01, 0.03) * size))
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=width)
    else:
        half_width = rng.uniform(0.15, 0.3) * 0.5 * length
        steps = 24
        pts = []
        for i in range(steps):
            t = 2 * math.pi * i / steps
            u, v = 0.5 * length * math.cos(t), half_width * math.sin(t)
            pts.append(
                (
                    cx + u * math.cos(angle) - v * math.sin(angle),
                    cy + u * math.sin(angle) + v * math.cos(angle),
                )
            )
        draw.polygon(pts, fill=255)
    return np.asarray(img) > 0


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
def make_digits(size: int = 64, seed: int = 0) -> DatasetDict:
    """scikit-learn's bundled handwritten digits (1797 real 8x8 images, 10 classes).

    Images are upscaled to ``size`` x ``size`` (bilinear; values 0..16 -> 0..255, mode "L") and
    split ~70/15/15 into train/validation/test, stratified and deterministic for ``seed``.

    >>> dsd = make_digits(size=32)
    >>> dsd["train"].features["label"].num_classes
    10
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if size < 8:
        raise DataError(f"digits needs size >= 8 pixels, got size={size}")
    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(int)
    index = np.arange(len(labels))
    train, rest = train_test_split(index, test_size=0.3, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)

    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    splits = {}
    for split, rows in zip(SPLITS, (train, val, test)):
        rows = np.sort(rows)
        images = [encode_png(PILImage.fromarray(pixels[i], "L").resize((size, size), PILImage.BILINEAR)) for i in rows]
        splits[split] = Dataset.from_dict({"image": images, "label": [int(labels[i]) for i in rows]}, features=features)
    return DatasetDict(splits)
