"""The tumours of ``builtin:brain``: where each class's lesion sits in the anatomy (its habit), how
it pushes the tissue around it, and how it looks on a contrast-enhanced T1 slice; and the
class-independent distractor spots. Everything is in template millimetres and draws all its
randomness from the caller's generator, in a fixed order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .brain_geometry import FOV_MM, SLICE_RANGE_MM, sigmoid, smooth_field

if TYPE_CHECKING:
    from .brain import TemplateSlice

__all__ = [
    "GLIOMA",
    "MENINGIOMA",
    "NO_TUMOUR",
    "PITUITARY",
    "draw_lesion",
    "mass_effect",
    "paint_distractor",
    "paint_lesion",
]

GLIOMA, MENINGIOMA, NO_TUMOUR, PITUITARY = range(4)  # labels, in BRAIN_CLASSES' order

SELLA_MM = (0.0, 1.0)  # pituitary fossa, in the axial plane
_TYPICAL_SITE_MM = {GLIOMA: (32.0, -5.0), MENINGIOMA: (55.0, 22.0)}  # mirrored left/right at random


@dataclass(frozen=True)
class _Lesion:
    centre: np.ndarray  # (2,) mm
    radius: float  # mm
    aspect: float  # >= 1, long axis along ``angle``
    angle: float  # radians
    push: float  # mass effect: intra-axial, a fraction < 1 (see _mass_effect); meningioma, mm
    normal: np.ndarray | None  # meningioma: outward surface normal (tissue is pushed against it)


def draw_lesion(rng, label: int, plane: TemplateSlice, jitter: float, contrast: float) -> _Lesion | None:
    """The lesion's site, size and shape in template mm (None for no_tumour)."""
    if label == NO_TUMOUR:
        return None
    strength = min(contrast, 1.0)  # an invisible lesion does not push the brain aside either
    wander = jitter * FOV_MM
    if label == PITUITARY:
        offset = _in_disc(rng, min(wander, 3.0))
        height = (plane.z_mm - SLICE_RANGE_MM[0]) / (SLICE_RANGE_MM[1] - SLICE_RANGE_MM[0])
        radius = rng.uniform(7.0, 11.0) * (1.0 - 0.2 * height)  # the dome narrows above the sella
        centre = np.array(SELLA_MM) + offset
        return _Lesion(centre, radius, rng.uniform(1.0, 1.3), rng.uniform(-0.2, 0.2), 0.15 * strength, None)
    sites = plane.glioma_sites if label == GLIOMA else plane.meningioma_sites
    side = 1.0 if rng.random() < 0.5 else -1.0
    typical = np.array(_TYPICAL_SITE_MM[label]) * (side, 1.0)
    index = _pick_site(rng, sites, typical, wander)
    site = sites[index]
    if label == GLIOMA:
        radius = rng.uniform(14.0, 25.0)
        return _Lesion(site, radius, rng.uniform(1.0, 1.5), rng.uniform(0, math.pi), 0.45 * strength, None)
    # meningioma: an ellipse centred at the brain's surface, its long axis along it, cut by the dura
    # (a broad dural base); the brain yields to about half its depth, the rest covers the cortex
    normal = plane.meningioma_normals[index]
    radius, aspect = rng.uniform(13.0, 22.0), rng.uniform(1.0, 1.3)
    centre = site - normal * rng.uniform(0.0, 0.3) * radius
    angle = math.atan2(normal[1], normal[0]) + math.pi / 2
    push = rng.uniform(0.4, 0.6) * radius / math.sqrt(aspect) * strength
    return _Lesion(centre, radius, aspect, angle, push, normal)


def _in_disc(rng, radius: float) -> np.ndarray:
    r, t = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    return np.array([r * math.cos(t), r * math.sin(t)])


def _pick_site(rng, sites: np.ndarray, typical: np.ndarray, wander: float) -> int:
    """Index of a uniformly drawn site within ``wander`` mm of ``typical`` (else the nearest)."""
    distance = np.hypot(*(sites - typical).T)
    near = np.flatnonzero(distance <= wander)
    if len(near) == 0:
        return int(np.argmin(distance))
    return int(near[rng.integers(len(near))])


def mass_effect(q: np.ndarray, lesion: _Lesion) -> np.ndarray:
    """Where the anatomy shown at ``q`` comes from once the lesion has pushed it aside.

    Intra-axial lesions push radially outward (radius r shows the tissue from r * (1 - push * w(r)),
    a smooth bump w <= 1, one-to-one for push < 1). A meningioma pushes the cortex inward, away from
    the dura, under its footprint only, less with depth (the tissue shown comes from further out).
    """
    d = q - lesion.centre[:, None, None]
    if lesion.normal is None:
        reach = 1.4 * lesion.radius
        return q - lesion.push * np.exp(-(d[0] ** 2 + d[1] ** 2) / (2 * reach**2)) * d
    normal = lesion.normal[:, None, None]
    outward = (d * normal).sum(0)
    along = d[0] * -lesion.normal[1] + d[1] * lesion.normal[0]
    half_width, depth = lesion.radius * math.sqrt(lesion.aspect), lesion.radius / math.sqrt(lesion.aspect)
    footprint = np.sqrt(np.clip(1.0 - (along / half_width) ** 2, 0.0, None))  # the tumour's own profile
    return q + lesion.push * footprint * np.exp(-((outward / (2.5 * depth)) ** 2)) * normal


def _lesion_frame(q: np.ndarray, lesion: _Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Normalised elliptical radius rho (1 = the nominal edge) and exp(i angle) at each pixel."""
    d = q - lesion.centre[:, None, None]
    cos, sin = math.cos(lesion.angle), math.sin(lesion.angle)
    along = (cos * d[0] + sin * d[1]) / (lesion.radius * math.sqrt(lesion.aspect))
    across = (-sin * d[0] + cos * d[1]) * math.sqrt(lesion.aspect) / lesion.radius
    rho = np.hypot(along, across)
    return rho, (along + 1j * across) / np.maximum(rho, 1e-9)


def _outline(rng, turn: np.ndarray, roughness: float) -> np.ndarray:
    """Edge radius (about 1) as a function of the angle (``turn`` = exp(i angle)): harmonics 2..5
    with random phases and amplitudes ``roughness`` / k."""
    coefficients = roughness * rng.normal(0, 1, 4) / np.arange(2, 6) * np.exp(1j * rng.uniform(0, 2 * math.pi, 4))
    power = turn * turn
    edge = np.ones(turn.shape)
    for c in coefficients:
        edge += (c * power).real
        power = power * turn
    return edge


def paint_lesion(rng, label, lesion: _Lesion, tissue, q, wm, inside, bed, size) -> tuple[np.ndarray, np.ndarray]:
    """The image with the lesion painted over ``tissue``, and the lesion's mask. ``wm`` and
    ``inside`` (1 in the brain, 0 outside): the anatomy shown; ``bed``: the brain and the blurred
    brain at ``q``, unmoved by the push: a glioma stays in the brain, a meningioma stops at the
    dura (the blurred brain's 0.3 level). Neither depends on ``contrast``, so neither does the mask."""
    rho, turn = _lesion_frame(q, lesion)
    pixel = FOV_MM / size / lesion.radius  # one pixel in units of the lesion's radius
    if label == GLIOMA:
        return _glioma(rng, rho, turn, pixel, tissue, wm, bed[0], size)
    if label == MENINGIOMA:
        return _meningioma(rng, rho, turn, pixel, tissue, inside, bed[1], size)
    return _pituitary(rng, rho, turn, pixel, tissue, size)


def _glioma(rng, rho, turn, pixel, tissue, wm, brain, size):
    """Irregular, soft-edged, inside the brain; T1-dark oedema along the white matter around it;
    high grade (3 in 4): a thick irregular enhancing rim around a dark necrotic core; low grade:
    uniformly hypointense."""
    texture = smooth_field(rng, size, round(FOV_MM / 7.0), 1.0)  # ~7 mm grain
    edge = _outline(rng, turn, 0.4) + 0.12 * texture
    soft = max(0.12, pixel)
    core = sigmoid((edge - rho) / soft) * brain
    oedema_reach = rng.uniform(1.7, 2.5)
    oedema = sigmoid((oedema_reach * edge - rho) / (3 * soft)) * np.clip(wm * 1.3, 0, 1)
    out = tissue * (1.0 - rng.uniform(0.4, 0.55) * oedema)
    if rng.random() < 0.75:
        wall = rng.uniform(0.25, 0.4) * _outline(rng, turn, 0.8).clip(0.5, 1.6)
        rim = sigmoid((rho / edge - (1.0 - wall)) / 0.06)
        value = rng.uniform(0.22, 0.32) + rng.uniform(0.6, 0.75) * rim + 0.04 * texture
    else:
        value = rng.uniform(0.25, 0.35) + 0.03 * texture
    out = out * (1 - core) + value * core
    return out, core >= 0.5


def _meningioma(rng, rho, turn, pixel, tissue, inside, dura, size):
    """Smooth-edged and homogeneously bright, cut flat by the dura, with a thin dark CSF cleft
    where it meets the brain."""
    edge = _outline(rng, turn, 0.06)
    body = sigmoid((edge - rho) / max(0.04, 0.5 * pixel)) * sigmoid((dura - 0.3) / 0.04)
    cleft = np.exp(-((((rho - edge) - 1.5 * pixel) / (1.2 * pixel)) ** 2))
    out = tissue * (1.0 - 0.5 * cleft * inside)
    value = rng.uniform(0.9, 1.0) + 0.03 * smooth_field(rng, size, 24, 1.0)
    out = out * (1 - body) + value * body
    return out, body >= 0.5


def _pituitary(rng, rho, turn, pixel, tissue, size):
    """Round, bright, fairly sharp-edged."""
    edge = _outline(rng, turn, 0.08)
    body = sigmoid((edge - rho) / max(0.06, 0.6 * pixel))
    value = rng.uniform(0.9, 1.0) + 0.03 * smooth_field(rng, size, 30, 1.0)
    out = tissue * (1 - body) + value * body
    return out, body >= 0.5


def paint_distractor(rng, intensity: np.ndarray, shown: np.ndarray, plane: TemplateSlice) -> None:
    """A small bright (vessel) or dark (lacune) spot somewhere in the brain, moving with the anatomy."""
    centre = plane.brain_sites[int(rng.integers(len(plane.brain_sites)))]
    radius = rng.uniform(1.5, 3.0)
    value = rng.uniform(0.9, 1.0) if rng.random() < 0.5 else rng.uniform(0.2, 0.35)
    d2 = (shown[0] - centre[0]) ** 2 + (shown[1] - centre[1]) ** 2
    spot = sigmoid((radius - np.sqrt(d2)) / 0.6)
    intensity *= 1 - spot
    intensity += value * spot
