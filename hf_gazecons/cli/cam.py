"""``hf-gazecons cam``: CAM overlays of single images (map over image, prediction and score); Grad-CAM unless
--cam-method names another method (``all``: one panel per method)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..cam_family import ALL_METHODS, cam_methods
from ..errors import DataError
from ..output_dir import check_output_dir
from ..specs import parse_target
from .common import add_cam_method_option, add_model_options, add_output_dir, add_seed_option, atomic_directory, warn


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(name, help="write CAM overlays of images", description=__doc__)
    add_model_options(parser)
    parser.add_argument("--image", nargs="+", required=True, help="image files")
    add_cam_method_option(parser, allow_all=True)
    add_seed_option(parser, "")
    add_output_dir(parser, "<image>_cam.png files (<image>-2_cam.png, ... where file names repeat)")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.output_dir)  # before anything is loaded
    import torch
    from transformers import set_seed

    from ..explain import explain
    from ..models import load_model
    from ..plots import plot_overlays

    images = [_read(path) for path in args.image]
    set_seed(args.seed)  # a bare architecture's random weights
    loaded = load_model(
        args.model, pretrained=args.pretrained, image_size=args.image_size, trust_remote_code=args.trust_remote_code
    )
    methods = cam_methods() if args.cam_method == ALL_METHODS else (args.cam_method,)
    by_method = {m: explain(loaded, images, parse_target(args.target_layer), cam_method=m) for m in methods}
    explained = by_method[methods[0]]
    titles = explained.titles()
    names = overlay_names(args.image)
    with atomic_directory(args.output_dir) as staging:
        for i, name in enumerate(names):
            maps = torch.stack([by_method[m].maps[i] for m in methods])
            panel_titles = [f"{m}: {titles[i]}" for m in methods] if len(methods) > 1 else [titles[i]]
            plot_overlays([images[i]] * len(methods), maps, panel_titles, staging / name)
    for path, name, title in zip(args.image, names, titles):
        print(f"{path}: {title} -> {name}")
    if loaded.random_weights:
        warn(f"{args.model} has random weights (a bare timm architecture without --pretrained): its maps mean nothing")
    return 0


def overlay_names(paths: Sequence[str]) -> list[str]:
    """``<stem>_cam.png`` per image; a stem that repeats (a/x.png, b/x.png) gets -2, -3, ... ."""
    names: list[str] = []
    for path in paths:
        stem, n = Path(path).stem, 1
        while (name := f"{stem}{f'-{n}' if n > 1 else ''}_cam.png") in names:
            n += 1
        names.append(name)
    return names


def _read(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"cannot read image {path!r}: {error}") from error
