"""``hf-gazecons app`` (hf_gazecons/app.py): the Gradio app started on 127.0.0.1 and called with
``gradio_client``, its numbers against a plain computation, bad uploads, and a screenshot in chromium.

The model is the briefly trained test model of tests/tiny.py, the reference its ``score`` output.
Set ``HF_GAZECONS_SCREENSHOTS=docs`` to write the screenshot to ``docs/app.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
from browser import launch, screenshot, sync_playwright
from PIL import Image
from tiny import TRAINED_DATA, trained_shapes_model

from hf_gazecons.cam import GradCAM, resize_maps
from hf_gazecons.class_maps import load_class_maps, save_class_maps
from hf_gazecons.cli.main import main
from hf_gazecons.data import load_image_dataset
from hf_gazecons.models import load_model

gradio_client = pytest.importorskip("gradio_client")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("app") / "reference"
    argv = ["score", "--model", trained_shapes_model(), "--dataset", TRAINED_DATA, "--no-report"]
    assert main([str(a) for a in [*argv, "--output-dir", out_dir]]) == 0
    return out_dir


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(reference):
    """The app on 127.0.0.1 (a thread of this process) and a gradio_client connected to it."""
    from hf_gazecons.app import build_app, launch_app

    demo = build_app(str(trained_shapes_model()), str(reference))
    url = launch_app(demo, "127.0.0.1", _free_port(), block=False)
    try:
        yield url, gradio_client.Client(url, verbose=False)
    finally:
        demo.close()


def _call(client, path: Path) -> tuple[str, str | None, str | None, dict]:
    message, overlay, class_map, numbers = client.predict(gradio_client.handle_file(str(path)), api_name="/explain")
    return message, overlay, class_map, json.loads(numbers)


def test_an_upload_gets_its_prediction_deviation_and_percentile(served, reference, tmp_path):
    _, client = served
    row = load_image_dataset(TRAINED_DATA, "validation")[3]
    path = tmp_path / "upload.png"
    row["image"].save(path)
    message, overlay, class_map, numbers = _call(client, path)

    loaded = load_model(str(trained_shapes_model()))
    loaded.model.eval()
    out = GradCAM(loaded.model)(loaded.preprocessing(row["image"])[None])
    prediction = loaded.label_names[int(out.logits.argmax())]
    maps = load_class_maps(reference / "class_maps.safetensors")
    own = resize_maps(out.maps.double(), tuple(maps.maps.shape[1:]))[0]
    deviation = float((own - maps.of(prediction).double()).pow(2).mean())
    table = pd.read_parquet(reference / "samples.parquet")
    others = table[table["in_l_cam"] & (table["compared_class"] == prediction)]["deviation_paper"]
    assert numbers["prediction"] == prediction
    assert numbers["probability"] == pytest.approx(float(out.logits.softmax(1).max()), rel=1e-5)
    assert numbers["deviation"] == pytest.approx(deviation, rel=1e-5, abs=1e-8)
    assert numbers["n_reference"] == len(others) > 0
    assert numbers["percentile"] == pytest.approx(100 * float((others <= numbers["deviation"]).mean()))
    assert f"**prediction** {prediction}" in message and "Traceback" not in message
    for picture in (overlay, class_map):
        with Image.open(picture) as image:
            assert max(image.size) == 320


def _png_header(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` x ``height`` pixels and holds none of them."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.png", b"these are words, not pixels", "is not an image that can be read"),
        ("empty.jpg", b"", "is empty"),
        ("huge.png", _png_header(8_000, 8_000), "8000x8000 pixels, more than the 40,000,000"),
    ],
    ids=["not-an-image", "empty", "huge"],
)
def test_a_bad_upload_gets_one_clear_line(served, tmp_path, name, content, expected):
    _, client = served
    path = tmp_path / name
    path.write_bytes(content)
    message, overlay, class_map, numbers = _call(client, path)
    assert message.startswith(f"error: {name} ") and expected in message, message
    assert "\n" not in message and "Traceback" not in message
    assert overlay is None and class_map is None and numbers == {"error": message.removeprefix("error: ")}


def test_the_app_command_refuses_a_missing_reference_in_one_line(tmp_path, capsys):
    rc = main(["app", "--model", str(trained_shapes_model()), "--reference", str(tmp_path / "nothing")])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "is not a folder" in err


def test_the_app_in_a_real_browser(served, tmp_path):
    url, _ = served
    path = tmp_path / "upload.png"
    load_image_dataset(TRAINED_DATA, "validation")[5]["image"].resize((192, 192)).save(path)
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(url, wait_until="networkidle")
            page.set_input_files("input[type=file]", str(path))
            page.wait_for_selector("text=percentile", timeout=60_000)
            page.wait_for_function(
                "document.querySelectorAll('img').length >= 2 && "
                "[...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            assert "prediction" in page.inner_text("body")
            screenshot(page, "app.png")
        finally:
            browser.close()


def test_a_reference_from_another_layer_is_a_warning(reference, tmp_path):
    from hf_gazecons.app import build_app

    other = tmp_path / "other"
    shutil.copytree(reference, other)
    maps = load_class_maps(other / "class_maps.safetensors")
    save_class_maps(other / "class_maps.safetensors", maps.maps, maps.label_names, target_layer="layer3")
    with pytest.warns(UserWarning, match=r"the reference's class maps come from the layer layer3, this model's"):
        build_app(str(trained_shapes_model()), str(other))
