"""``builtin:brain``: axial brain-MRI slices of the MNI152 template with planted tumours and their masks.

The study's brain set has four classes (glioma, meningioma, no tumour, pituitary tumour) on
contrast-enhanced T1 slices. :func:`make_brain` builds a stand-in offline from the MNI ICBM152 2009a
nonlinear symmetric template (T1, grey- and white-matter probability maps, 1 mm) that the ``nilearn``
wheel ships, read with ``nibabel`` (``pip install "hf-gazecons[mri]"``). Each image is one axial slice
at the skull-base level (z = -30 .. -8 mm, the same range for every class, so that the slice alone
says nothing about the class), varied by a small rotation, scale and shift, a smooth elastic
deformation, a bias field, gamma, gain and Rician noise. Each tumour class has its anatomical habit:

* ``pituitary`` - a small rounded mass at the sella turcica on the midline, in front of the brainstem;
* ``meningioma`` - a well-circumscribed, homogeneously enhancing extra-axial mass with a broad base on
  the brain's outer surface, indenting the cortex (thin dark CSF cleft), around the sphenoid wing /
  fronto-temporal convexity;
* ``glioma`` - an irregular intra-axial mass in hemispheric white matter (ring enhancement around a
  dark necrotic core, or a hypointense low-grade mass) with a soft edge and T1-dark vasogenic oedema
  that spreads along the white matter;
* ``no_tumour`` - none.

The ``mask`` column outlines the tumour (not the oedema); it is empty for ``no_tumour``.
Same ``seed`` -> byte-identical images. See docs/BRAIN.md for pictures and the attribution.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
from datasets import DatasetDict
from PIL import Image as PILImage
from scipy import ndimage

from ..errors import DataError
from .brain_geometry import FOV_MM, SLICE_RANGE_MM, smooth_field
from .planted import check_planted_options, encode_png, planted_splits
from .tumours import SELLA_MM, draw_lesion, mass_effect, paint_distractor, paint_lesion

__all__ = ["BRAIN_CLASSES", "make_brain"]

#: The classes of :func:`make_brain`, in label order (the study's four).
BRAIN_CLASSES = ("glioma", "meningioma", "no_tumour", "pituitary")

INSTALL_HINT = 'builtin:brain needs nibabel and nilearn (the MNI152 template): pip install "hf-gazecons[mri]"'

# The files behind nilearn.datasets.MNI152_FILE_PATH / GM_MNI152_FILE_PATH / WM_MNI152_FILE_PATH.
# nilearn's loaders (load_mni152_template, ...) read these package files and never download, but
# importing nilearn.datasets takes ~3 s (pandas, ...): they are read from the package directly.
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

# Geometry, in template millimetres (MNI: x to the subject's right, y anterior, z superior); the
# field of view and the slice range are in .brain_geometry, the tumour sites in .tumours.
_FOV_CENTRE_MM = (0.0, -17.0)
_POSTERIOR_FOSSA_Y_MM = -40.0  # behind this, at these levels: cerebellum and brainstem


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------
def make_brain(
    size: int = 128,
    n_train: int = 200,
    n_val: int = 50,
    n_test: int = 25,
    jitter: float = 0.25,
    contrast: float = 1.0,
    distractors: int = 2,
    seed: int = 0,
) -> DatasetDict:
    """Brain-MRI benchmark: grayscale axial slices with planted tumours and a ground-truth ``mask``.

    Classes ``glioma``, ``meningioma``, ``no_tumour``, ``pituitary`` (in label order); images are
    mode "L", ``size`` x ``size``. ``jitter`` (0..1, a fraction of the field of view) is how far a
    class's lesion site may wander from its typical site within its anatomical region: gliomas
    anywhere in the hemispheric white matter within that distance of the deep temporal white
    matter, meningiomas along the outer surface near the sphenoid wing, pituitary tumours at most
    3 mm off the sella whatever ``jitter`` says. ``contrast`` scales the lesions' visibility (0:
    invisible, masks unchanged; > 1: more conspicuous). ``distractors`` small lesion-like
    artefacts (bright or dark spots) are added anywhere in the brain of every image, whatever the
    class. ``n_train``/``n_val``/``n_test`` count images *per class*. Same ``seed`` ->
    byte-identical images.

    >>> dsd = make_brain(size=64, n_train=2, n_val=1, n_test=1, seed=1)
    >>> dsd["train"].features["label"].names
    ['glioma', 'meningioma', 'no_tumour', 'pituitary']
    """
    check_planted_options("brain", size, 64, n_train, n_val, n_test, jitter, distractors)
    if not 0.0 <= contrast <= 4.0:
        raise DataError(f"brain needs 0 <= contrast <= 4 (lesion visibility, 1 = default), got {contrast}")
    template = load_template()

    def render(rng: np.random.Generator, label: int) -> tuple[dict, dict]:
        sample = render_brain(rng, label, template, size, jitter, contrast, distractors)
        image = PILImage.fromarray(sample.image, "L")
        mask = PILImage.fromarray(np.where(sample.mask, 255, 0).astype(np.uint8), "L")
        return encode_png(image), encode_png(mask)

    counts = {"train": n_train, "validation": n_val, "test": n_test}
    return planted_splits(BRAIN_CLASSES, counts, seed, render)


# ---------------------------------------------------------------------------------------------
# the template, read once per process
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateSlice:
    """One axial slice of the template and the candidate lesion sites on it (mm, (N, 2) as x, y)."""

    z_mm: int
    maps: np.ndarray  # (4, X + 2, Y + 2) float32 with a zero border: T1 (0..1, white matter ~0.85),
    # white-matter probability, brain (holes filled; 1 inside, 0 outside), and the brain blurred by
    # 6 mm, whose 0.3 level is a smooth convex stand-in for the dura / inner table of the skull
    glioma_sites: np.ndarray  # hemispheric white matter, >= 3 mm from its edge
    meningioma_sites: np.ndarray  # the outer cortical surface
    meningioma_normals: np.ndarray  # unit outward normals there
    brain_sites: np.ndarray  # anywhere in the brain (for distractors)


@dataclass(frozen=True)
class Template:
    slices: tuple[TemplateSlice, ...]
    origin: tuple[float, float]  # voxel index (i, j) of x = y = 0 mm


@functools.cache
def load_template() -> Template:
    """The MNI152 T1/GM/WM volumes from the installed nilearn, prepared per slice (cached)."""
    volumes, affine = _read_volumes()
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise DataError(f"the MNI152 template in nilearn is not on a 1 mm axis-aligned grid (affine {affine.tolist()})")
    origin = (-affine[0, 3], -affine[1, 3], -affine[2, 3])
    z_lo, z_hi = SLICE_RANGE_MM
    slices = tuple(_prepare_slice(volumes, origin, z) for z in range(z_lo, z_hi + 1))
    return Template(slices=slices, origin=(float(origin[0]), float(origin[1])))


def _read_volumes() -> tuple[dict[str, np.ndarray], np.ndarray]:
    try:
        import nibabel

        package = resources.files("nilearn")
    except ImportError:
        raise DataError(INSTALL_HINT) from None
    volumes, affine = {}, None
    for key, name in TEMPLATE_FILES.items():
        path = package.joinpath("datasets", "data", name)
        if not path.is_file():
            raise DataError(f"the installed nilearn lacks its template file datasets/data/{name}; {INSTALL_HINT}")
        image = nibabel.load(str(path))
        if affine is not None and not np.allclose(image.affine, affine):
            raise DataError(f"the MNI152 template files in nilearn are not on one grid ({name})")
        volumes[key] = np.asarray(image.dataobj, dtype=np.float32) / 255.0  # stored as uint8
        affine = image.affine
    return volumes, affine


def _prepare_slice(volumes: dict[str, np.ndarray], origin, z_mm: int) -> TemplateSlice:
    k = round(origin[2] + z_mm)
    t1, gm, wm = (volumes[key][:, :, k] for key in ("t1", "gm", "wm"))
    brain = ndimage.binary_fill_holes(t1 > 0.15)
    depth = ndimage.distance_transform_edt(brain)  # mm to the outside
    x = np.arange(t1.shape[0], dtype=np.float32)[:, None] - origin[0]
    y = np.arange(t1.shape[1], dtype=np.float32)[None, :] - origin[1]
    x, y = np.broadcast_arrays(x, y)
    supratentorial = y > _POSTERIOR_FOSSA_Y_MM
    near_sella = np.hypot(x - SELLA_MM[0], y - SELLA_MM[1]) < 25.0

    in_white_matter = ndimage.distance_transform_edt(wm > 0.5)  # mm to the nearest non-white matter
    glioma = (in_white_matter >= 3.0) & (np.abs(x) >= 16.0) & supratentorial & (depth >= 10.0)
    surface = brain & (depth <= 1.5) & (gm > 0.15) & supratentorial & ~near_sella
    hull = ndimage.gaussian_filter(brain.astype(np.float32), 6.0)
    gx, gy = np.gradient(hull)
    normals = -np.stack([gx[surface], gy[surface]], axis=1)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-6)

    def sites(where: np.ndarray) -> np.ndarray:
        return np.stack([x[where], y[where]], axis=1).astype(np.float32)

    maps = np.zeros((4, t1.shape[0] + 2, t1.shape[1] + 2), dtype=np.float32)
    maps[:, 1:-1, 1:-1] = np.stack([t1, wm, brain, hull])
    return TemplateSlice(
        z_mm=z_mm,
        maps=maps,
        glioma_sites=sites(glioma),
        meningioma_sites=sites(surface),
        meningioma_normals=normals.astype(np.float32),
        brain_sites=sites(brain & (depth >= 4.0))[::7],
    )


# ---------------------------------------------------------------------------------------------
# one sample
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrainSample:
    """One rendered image with what the tests check it against (all ``size`` x ``size``)."""

    image: np.ndarray  # uint8
    mask: np.ndarray  # bool, the tumour
    wm: np.ndarray  # float, white-matter probability of the anatomy shown
    brain: np.ndarray  # bool, the brain (holes filled) as shown
    position: np.ndarray  # (2, size, size): template x, y (mm) of each pixel, before the lesion's push
    z_mm: int  # the slice level


def render_brain(
    rng: np.random.Generator,
    label: int,
    template: Template,
    size: int,
    jitter: float,
    contrast: float,
    distractors: int,
) -> BrainSample:
    """Draw one sample of class ``label`` (all randomness from ``rng``, in a fixed order)."""
    plane = template.slices[int(rng.integers(len(template.slices)))]
    q = _sampling_grid(rng, size)  # (2, size, size): template mm shown at each pixel
    lesion = draw_lesion(rng, label, plane, jitter, contrast)
    shown = q if lesion is None else mass_effect(q, lesion)
    t1, wm, inside, _ = _bilinear(plane.maps, shown[0] + template.origin[0] + 1, shown[1] + template.origin[1] + 1)

    intensity = t1.astype(np.float64)
    for _ in range(distractors):
        paint_distractor(rng, intensity, shown, plane)
    mask = np.zeros((size, size), dtype=bool)
    if lesion is not None:
        # the brain's outline and the dura where the tumour is drawn, before the push: they bound it
        bed = _bilinear(plane.maps[2:], q[0] + template.origin[0] + 1, q[1] + template.origin[1] + 1)
        lesioned, mask = paint_lesion(rng, label, lesion, intensity, q, wm, inside, bed, size)
        intensity = intensity + contrast * (lesioned - intensity)
    image = _acquisition(rng, intensity, size)
    return BrainSample(image=image, mask=mask, wm=wm, brain=inside > 0.5, position=q, z_mm=plane.z_mm)


def _sampling_grid(rng: np.random.Generator, size: int) -> np.ndarray:
    """Template mm (x, y) shown at each output pixel: similarity transform + smooth elastic warp.

    Radiological convention: anterior at the top, the subject's right on the image's left.
    """
    px = FOV_MM / size
    centre = (np.arange(size) + 0.5 - size / 2) * px
    u = -centre[None, :].repeat(size, 0)  # x: image right = subject's left
    v = -centre[:, None].repeat(size, 1)  # y: image top = anterior
    angle = math.radians(rng.uniform(-10, 10))
    scale = rng.uniform(0.92, 1.08)
    shift = rng.normal(0.0, 3.0, size=2)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    x = cos * u - sin * v + _FOV_CENTRE_MM[0] + shift[0]
    y = sin * u + cos * v + _FOV_CENTRE_MM[1] + shift[1]
    x += smooth_field(rng, size, 5, 2.5)
    y += smooth_field(rng, size, 5, 2.5)
    return np.stack([x, y])


def _bilinear(maps: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Bilinear samples (C, *i.shape) of every channel of ``maps`` (C, X, Y) at fractional indices;
    the outermost rows and columns of ``maps`` are zero and stand for everything outside."""
    channels, rows, cols = maps.shape
    i = np.clip(i, 0.0, rows - 1.001)
    j = np.clip(j, 0.0, cols - 1.001)
    i0, j0 = i.astype(np.intp), j.astype(np.intp)
    fi, fj = (i - i0).astype(np.float32), (j - j0).astype(np.float32)
    flat, at = maps.reshape(channels, -1), (i0 * cols + j0).ravel()
    a, b, c, d = (np.take(flat, at + step, axis=1).reshape(channels, *i.shape) for step in (0, 1, cols, cols + 1))
    top = a + (b - a) * fj
    return top + (c + (d - c) * fj - top) * fi


def _acquisition(rng, intensity: np.ndarray, size: int) -> np.ndarray:
    """Bias field, gamma, gain and Rician noise; uint8."""
    bias = np.exp(smooth_field(rng, size, 3, 0.06))
    gamma = math.exp(rng.uniform(-0.15, 0.15))
    gain = rng.uniform(0.9, 1.08)
    signal = gain * np.clip(intensity * bias, 0.0, None) ** gamma
    sigma = rng.uniform(0.01, 0.035)
    noisy = np.hypot(signal + rng.normal(0.0, sigma, (size, size)), rng.normal(0.0, sigma, (size, size)))
    return np.round(np.clip(noisy, 0.0, 1.0) * 255).astype(np.uint8)
