"""Image geometry and smooth random fields shared by the brain generator (:mod:`.brain`) and its
tumours (:mod:`.tumours`), in template millimetres."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

__all__ = ["FOV_MM", "SLICE_RANGE_MM", "sigmoid", "smooth_field"]

SLICE_RANGE_MM = (-30, -8)  # axial levels, sella to the floor of the third ventricle
FOV_MM = 200.0  # field of view of an image at scale 1


def smooth_field(rng: np.random.Generator, size: int, knots: int, sd: float) -> np.ndarray:
    """A smooth random field: ``knots`` x ``knots`` normal values (sd ``sd``), cubic-upsampled
    (exactly ``ndimage.zoom(coarse, size / knots, order=3, mode="nearest", grid_mode=True)``,
    which is separable: two small matrix products)."""
    coarse = rng.normal(0.0, sd, size=(knots, knots))
    up = _upsampling(size, knots)
    return up @ coarse @ up.T


@functools.cache
def _upsampling(size: int, knots: int) -> np.ndarray:
    """(size, knots): column k is the cubic-spline zoom of the k-th unit vector."""
    unit = np.eye(knots)
    return np.stack([ndimage.zoom(e, size / knots, order=3, mode="nearest", grid_mode=True) for e in unit], axis=1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
