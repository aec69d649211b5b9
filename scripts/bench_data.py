"""A synthetic image folder shaped like the study's chest X-rays, for the benchmark's data sections.

:func:`chest_like_folder` writes (once; later calls reuse it) an ``imagefolder`` layout::

    <root>/chest-like-n2048-s512-seed0-v1/
        train/NORMAL/00000.jpg ...      train/PNEUMONIA/00001.jpg ...
        validation/NORMAL/...           validation/PNEUMONIA/...

2 classes, grayscale JPEGs (mode "L", quality 90) of ``size`` x ``size`` pixels, as the study's
Chest X-Ray pneumonia data (the thesis's second data set): a bright body with two dark lung fields, a spine,
ribs and film noise; PNEUMONIA images add a diffuse opacity in one lung. The content only has to
cost what real X-rays cost to decode and to be learnable; it is deterministic (same arguments,
same Pillow: byte-identical files). The folder appears atomically (written beside it, then renamed),
so an interrupted run never leaves a half-written data set behind.

    >>> folder = chest_like_folder(Path("~/.cache/hf_gazecons/bench").expanduser(), n_images=2048)
    >>> load_image_dataset(str(folder), "train")
"""

from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CLASS_NAMES", "DEFAULT_ROOT", "chest_like_folder", "chest_like_image"]

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
DEFAULT_ROOT = Path("~/.cache/hf_gazecons/bench")
VERSION = 1  # bump when the images change, so that cached folders are not reused
JPEG_QUALITY = 90


def chest_like_folder(
    root: Path | str = DEFAULT_ROOT,
    n_images: int = 2048,
    size: int = 512,
    val_fraction: float = 0.125,
    seed: int = 0,
    processes: int | None = None,
) -> Path:
    """The folder of ``n_images`` chest-X-ray-like JPEGs under ``root`` (written on the first call,
    by ``processes`` processes, default one per CPU; the files do not depend on how many).

    Labels alternate (balanced classes); the last ``val_fraction`` of the images form ``validation/``.
    """
    if n_images < 4:
        raise ValueError(f"n_images must be at least 4, got {n_images}")
    root = Path(root).expanduser()
    folder = root / f"chest-like-n{n_images}-s{size}-seed{seed}-v{VERSION}"
    if (folder / "COMPLETE").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{folder.name}-{uuid.uuid4().hex[:8]}"
    n_val = max(2, round(n_images * val_fraction))
    jobs = []
    for index in range(n_images):
        split = "validation" if index >= n_images - n_val else "train"
        label = index % len(CLASS_NAMES)
        jobs.append((staging / split / CLASS_NAMES[label] / f"{index:05d}.jpg", label, size, seed, index))
    try:
        for path in {job[0].parent for job in jobs}:
            path.mkdir(parents=True, exist_ok=True)
        processes = processes or os.cpu_count() or 1
        if processes > 1:
            with ProcessPoolExecutor(processes) as pool:
                list(pool.map(_write_image, jobs, chunksize=32))
        else:
            for job in jobs:
                _write_image(job)
        (staging / "COMPLETE").write_text(f"{n_images} images, {size} px, seed {seed}\n")
        if (folder / "COMPLETE").is_file():  # another process wrote it meanwhile
            return folder
        if folder.exists():  # not complete: not written by this module
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_image(job: tuple[Path, int, int, int, int]) -> None:
    path, label, size, seed, index = job
    chest_like_image(label, size, np.random.default_rng([seed, index])).save(path, quality=JPEG_QUALITY)


def chest_like_image(label: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One grayscale image: body, lungs, spine, ribs, noise; ``label`` 1 adds a lung opacity."""
    y, x = np.meshgrid(
        np.linspace(-1, 1, size, dtype=np.float32), np.linspace(-1, 1, size, dtype=np.float32), indexing="ij"
    )
    shift = rng.uniform(-0.05, 0.05, 2).astype(np.float32)
    x, y = x - shift[0], y - shift[1]
    body = _soft_ellipse(x, y, 0.0, 0.1, 0.85, 1.05, 0.08)
    image = 0.08 + 0.55 * body
    lungs = []
    for side in (-1, 1):
        lung = _soft_ellipse(x, y, side * rng.uniform(0.33, 0.40), rng.uniform(-0.12, -0.02), 0.26, 0.55, 0.10)
        lungs.append(lung)
        image -= 0.35 * lung
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (y * rng.uniform(5.5, 6.5) + 0.25 * x**2 + rng.uniform(0, 1)))
    image += 0.06 * ribs * (lungs[0] + lungs[1])
    image += 0.25 * np.exp(-((x / 0.07) ** 2)) * body  # spine
    if label == 1:  # pneumonia: a diffuse opacity in one lung
        side = rng.choice((-1, 1))
        cx, cy = side * rng.uniform(0.3, 0.42), rng.uniform(-0.2, 0.15)
        radius = rng.uniform(0.12, 0.2)
        image += 0.3 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2)) * lungs[0 if side < 0 else 1]
    image += rng.normal(0.0, 0.02, image.shape).astype(np.float32)  # film grain
    return Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8), mode="L")


def _soft_ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, softness: float
) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a smooth edge of width ~``softness``."""
    distance = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp((distance - 1.0) / softness))
