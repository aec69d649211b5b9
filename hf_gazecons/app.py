"""``hf-gazecons app``: drop an image, see where the model looks and how usual that is for its class.

A Gradio app (``pip install -e ".[app]"``) around a model and a *reference*: the class maps of a
``score`` or ``train`` output (``class_maps.safetensors``) and, for the percentile, the deviations
of the reference images (its per-image table). A model pushed by this project carries both, so a
Hub id is its own reference. For an uploaded image the app shows the prediction, the Grad-CAM
overlay of the predicted class, the class map of that class, and the image's deviation from it
(paper variant, at the class map's grid) with its percentile among the reference images of the
class that count in L_CAM. A file that is not an image, an empty file or an image over
:data:`MAX_PIXELS` gets a one-line message in the page.

>>> demo = build_app("hf-hub:my-org/resnet18-gazecons")
>>> demo.launch()
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .class_maps import ClassMaps, load_class_maps
from .deviation import on_grid, per_sample_deviation
from .errors import DataError, UsageError
from .explain import explain
from .filenames import CLASS_MAPS_FILE
from .models import LoadedModel
from .plots import overlay_image
from .samples import read_samples
from .targets import resolve_target

__all__ = ["MAX_PIXELS", "Reference", "analyse", "build_app", "launch_app", "load_reference", "read_upload"]

MAX_PIXELS = 40_000_000
"""The largest upload the app decodes (width x height), far below PIL's decompression-bomb limit."""
PREVIEW = 320
"""The longer side of the pictures the app shows, in pixels."""


@dataclass
class Reference:
    """The class maps an image is compared with, and per class the reference images' deviations
    (paper variant, rows that count in L_CAM; empty where the reference has no per-image table)."""

    class_maps: ClassMaps
    deviations: dict[str, np.ndarray]
    source: str


def load_reference(spec: str) -> Reference:
    """A reference from a score or train output folder, or from a Hub model repo pushed by this
    project (``org/name`` or ``hf-hub:org/name``)."""
    from .data.loading import looks_like_path

    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / CLASS_MAPS_FILE).is_file():
            raise UsageError(f"{spec!r} has no {CLASS_MAPS_FILE}: name a score or train output (or a pushed model)")
        return _reference(load_class_maps(folder / CLASS_MAPS_FILE), read_samples(folder), spec)
    if looks_like_path(spec):
        raise UsageError(f"the reference {spec!r} is not a folder: name a score or train output, or a Hub model")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    from .hub import check_hub_reachable

    repo_id = spec.removeprefix("hf-hub:")
    check_hub_reachable(f"load the reference {spec!r}")
    try:
        maps = load_class_maps(hf_hub_download(repo_id, CLASS_MAPS_FILE))
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:  # ValueError: not a repo id
        raise UsageError(
            f"cannot read {CLASS_MAPS_FILE} of {spec!r} ({type(error).__name__}): name a score or train output, "
            "or a model pushed by hf-gazecons"
        ) from None
    try:
        table_folder = Path(hf_hub_download(repo_id, "samples.parquet")).parent
    except (EntryNotFoundError, HfHubHTTPError, OSError):
        table_folder = None
    return _reference(maps, read_samples(table_folder) if table_folder else None, spec)


def _reference(maps: ClassMaps, table: Any, source: str) -> Reference:
    deviations: dict[str, np.ndarray] = {}
    if table is not None and {"deviation_paper", "in_l_cam", "compared_class"} <= set(table.column_names):
        frame = table.select(["compared_class", "deviation_paper", "in_l_cam"]).to_pandas()
        frame = frame[frame["in_l_cam"].astype(bool)]
        deviations = {str(c): g["deviation_paper"].to_numpy(float) for c, g in frame.groupby("compared_class")}
    return Reference(maps, deviations, source)


def read_upload(path: str | os.PathLike | None) -> Image.Image:
    """The uploaded file as an RGB image, or a DataError that says in one line what is wrong with it."""
    if path is None:
        raise DataError("no file: upload an image (PNG, JPEG, ...)")
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty: upload an image (PNG, JPEG, ...)")
    try:
        image = Image.open(path)
        width, height = image.size  # from the header: nothing is decoded yet
        if width * height > MAX_PIXELS:
            image.close()
            raise DataError(
                f"{path.name} is {width}x{height} pixels, more than the {MAX_PIXELS:,} this app decodes: "
                "upload a smaller image"
            )
        with image:
            return image.convert("RGB")
    except DataError:
        raise
    except (OSError, Image.DecompressionBombError, ValueError) as error:
        raise DataError(f"{path.name} is not an image that can be read ({type(error).__name__})") from None


def analyse(loaded: LoadedModel, reference: Reference, image: Image.Image, target: str | int | None = None) -> dict:
    """Prediction, maps and deviation of one image against ``reference``: a dict with ``prediction``,
    ``probability``, ``deviation`` (None where the reference has no map of the predicted class),
    ``percentile`` and ``n_reference`` (None without reference deviations), ``overlay`` and
    ``class_map`` (PIL images) and ``note`` (what the numbers are, or why one is missing)."""
    explained = explain(loaded, [image], target)
    name, probability = explained.predictions[0], explained.probabilities[0]
    result: dict[str, Any] = {
        "prediction": name,
        "probability": probability,
        "deviation": None,
        "percentile": None,
        "n_reference": None,
        "overlay": overlay_image(image, explained.maps[0], PREVIEW),
        "class_map": None,
    }
    class_map = reference.class_maps.of(name)
    if class_map is None:
        result["note"] = f"the reference has no class map of {name!r} (no correct image of it was scored)"
        return result
    grid = tuple(class_map.shape)
    own = on_grid(explained.maps[:1].float(), grid)
    result["deviation"] = float(per_sample_deviation(own.double(), class_map.double(), "paper")[0])
    result["class_map"] = overlay_image(Image.new("RGB", image.size, "white"), class_map, PREVIEW, alpha=1.0)
    values = reference.deviations.get(name)
    if values is None or not len(values):
        result["note"] = "the reference has no per-image deviations of this class: no percentile"
        return result
    result["percentile"] = float(100.0 * np.mean(values <= result["deviation"]))
    result["n_reference"] = int(len(values))
    result["note"] = (
        f"deviation (paper variant, at the {grid[0]}x{grid[1]} grid of the class map) from the map of {name!r}; "
        f"{result['percentile']:.0f} % of the {len(values)} reference images of that class deviate as little or less"
    )
    return result


def build_app(
    model: str | LoadedModel,
    reference: str | Reference | None = None,
    *,
    target: str | int | None = None,
    image_size: int | None = None,
    pretrained: bool = False,
) -> Any:
    """The Gradio ``Blocks`` of the app (call ``.launch()``); ``reference`` defaults to ``model`` (a
    folder or Hub repo that carries its class maps). Its API endpoint is ``/explain``: one file in,
    ``(message, overlay, class map, numbers as JSON)`` out."""
    try:
        import gradio as gr
    except ImportError:
        raise UsageError('the app needs gradio: pip install -e ".[app]"') from None
    from .models import load_model

    if reference is None:
        if not isinstance(model, str):
            raise UsageError("name the reference (a score or train output) for a model given as an object")
        reference = model
    reference = reference if isinstance(reference, Reference) else load_reference(reference)
    if not isinstance(model, LoadedModel):
        model = load_model(model, pretrained=pretrained, image_size=image_size)
    loaded = model
    missing = [n for n in loaded.label_names if n not in reference.class_maps.label_names]
    header = (
        f"**Model** `{loaded.spec}` · **reference** `{reference.source}` "
        f"({len(reference.class_maps.label_names)} class maps"
        + (f"; none for {', '.join(missing)}" if missing else "")
        + ")"
    )
    layer, theirs = resolve_target(loaded.model, target).name, reference.class_maps.target_layer
    if theirs and layer != theirs:  # maps of two layers are not comparable
        warning = f"the reference's class maps come from the layer {theirs}, this model's maps from {layer}"
        warnings.warn(warning, stacklevel=2)
        header += f"\n\n**warning:** {warning}"

    def run(path: str | None) -> tuple[str, Image.Image | None, Image.Image | None, str]:
        try:
            image = read_upload(path)
        except DataError as error:
            return f"error: {error}", None, None, json.dumps({"error": str(error)})
        found = analyse(loaded, reference, image, target)
        numbers = {k: found[k] for k in ("prediction", "probability", "deviation", "percentile", "n_reference")}
        deviation = "n/a" if found["deviation"] is None else f"{found['deviation']:.4f}"
        percentile = "n/a" if found["percentile"] is None else f"{found['percentile']:.0f} %"
        message = (
            f"**prediction** {found['prediction']} ({found['probability']:.2f}) · **deviation** {deviation} · "
            f"**percentile** {percentile}\n\n{found['note']}"
        )
        return message, found["overlay"], found["class_map"], json.dumps(numbers)

    with gr.Blocks(title="hf-gazecons: gaze consistency of one image") as demo:
        gr.Markdown("## Where does the model look, and is that usual for the class?\n\n" + header)
        with gr.Row():
            upload = gr.File(label="image", file_count="single", type="filepath")
            overlay = gr.Image(label="Grad-CAM of the predicted class", type="pil", interactive=False)
            class_map = gr.Image(label="class map of the predicted class", type="pil", interactive=False)
        message = gr.Markdown()
        numbers = gr.Textbox(label="numbers (JSON)", interactive=False)
        button = gr.Button("explain", variant="primary")
        button.click(run, inputs=upload, outputs=[message, overlay, class_map, numbers], api_name="explain")
        upload.upload(run, inputs=upload, outputs=[message, overlay, class_map, numbers], api_name=False)
    return demo


def launch_app(demo: Any, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> str:
    """Serve ``demo`` on ``host:port`` (a free port when None) with system fonts (the page loads
    nothing from the web) and no server-side rendering; returns its URL. ``block=False`` returns
    at once (the server runs in a thread; ``demo.close()`` stops it)."""
    import gradio as gr

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    _, url, _ = demo.launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, quiet=True, theme=theme, ssr_mode=False
    )
    return url
