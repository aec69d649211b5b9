"""A Hugging Face Space around ``hf-gazecons app``: upload an image, see where the model looks and how
usual that is for the predicted class.

Set the Space variable ``GAZECONS_MODEL`` to a model pushed by hf-gazecons (``org/name``: it carries
its class maps and per-image table, the reference the app compares with), and optionally
``GAZECONS_REFERENCE`` to another reference (a Hub model pushed by hf-gazecons).
"""

import os
import sys

from hf_gazecons.app import build_app, launch_app

model = os.environ.get("GAZECONS_MODEL")
if not model:
    sys.exit("error: set the Space variable GAZECONS_MODEL to a model pushed by hf-gazecons (org/name)")
demo = build_app(model, os.environ.get("GAZECONS_REFERENCE") or None)
launch_app(demo, os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
