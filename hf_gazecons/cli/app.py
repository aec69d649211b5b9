"""``hf-gazecons app``: a Gradio app that explains an uploaded image against a reference's class maps."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="serve a Gradio app: upload an image, see its Grad-CAM, its class map and how usual its gaze is",
        description="For an uploaded image: the prediction, the Grad-CAM overlay, the class map of the predicted "
        "class and the image's deviation from it with its percentile among the reference images. Needs the "
        'optional extra: pip install -e ".[app]".',
    )
    parser.add_argument(
        "--model", required=True, help="timm architecture, hf-hub:org/name, Hub id org/name, or a folder"
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="a score or train output folder, or a Hub model pushed by hf-gazecons: its class_maps.safetensors and "
        "per-image table (default: the model itself)",
    )
    parser.add_argument("--pretrained", action="store_true", help="with a bare timm architecture: timm's weights")
    parser.add_argument(
        "--target-layer", default=None, help="Grad-CAM target: module name or timm stage index (default: automatic)"
    )
    parser.add_argument("--image-size", default=None, help="square input size (default: the model's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", default=7860, help="port to serve on")


def run(args: argparse.Namespace) -> int:
    from ..app import build_app, launch_app
    from ..specs import parse_target

    demo = build_app(
        args.model,
        args.reference,
        target=parse_target(args.target_layer),
        image_size=args.image_size,
        pretrained=args.pretrained,
    )
    print(f"serving on http://{args.host}:{args.port} (Ctrl-C stops)")
    launch_app(demo, args.host, args.port)
    return 0
