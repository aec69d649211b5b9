"""``hf-gazecons cam``: Grad-CAM overlays of single images (map over image, prediction and score)."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .common import add_model_options, atomic_directory, target


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(name, help="write Grad-CAM overlays of images", description=__doc__)
    add_model_options(parser)
    parser.add_argument("--image", nargs="+", required=True, help="image files")
    parser.add_argument("--output-dir", required=True, help="a new (or empty) folder for <image>_cam.png files")


def run(args: argparse.Namespace) -> int:
    from ..explain import explain
    from ..models import load_model
    from ..plots import plot_overlays

    images = [_read(path) for path in args.image]
    loaded = load_model(args.model, image_size=args.image_size, trust_remote_code=args.trust_remote_code)
    explained = explain(loaded, images, target(args.target_layer))
    titles = explained.titles()
    with atomic_directory(args.output_dir) as staging:
        for i, path in enumerate(args.image):
            plot_overlays([images[i]], explained.maps[i : i + 1], [titles[i]], staging / f"{Path(path).stem}_cam.png")
    for path, title in zip(args.image, titles):
        print(f"{path}: {title}")
    return 0


def _read(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"cannot read image {path!r}: {error}") from error
