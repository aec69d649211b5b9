"""User-supplied specifications, each parsed in one place: Grad-CAM target layers and model specs.

>>> parse_target("-2"), parse_target("layer3"), parse_target(None)
(-2, 'layer3', None)
>>> parse_model_spec("hf-hub:my-org/resnet18-gazecons@dev")
ModelSpec(kind='hf-hub', name='my-org/resnet18-gazecons', revision='dev')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import ModelLoadError

__all__ = ["ModelKind", "ModelSpec", "parse_model_spec", "parse_target"]

ModelKind = Literal["folder", "hf-hub", "timm", "hub"]


def parse_target(value: str | int | None) -> str | int | None:
    """A Grad-CAM target as ``GradCAM`` takes it: ``None`` (automatic), a module name, or a timm
    stage index (an integer, or a string of one such as ``"-2"``)."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else text


@dataclass(frozen=True)
class ModelSpec:
    """What a model spec names.

    ``kind``: ``folder`` (a local folder written by timm or ``save_pretrained``), ``hf-hub`` (timm's
    ``hf-hub:org/name[@revision]``), ``timm`` (a timm architecture, ``resnet18`` or
    ``resnet18.a1_in1k``) or ``hub`` (a Hub id ``org/name``, timm or transformers). ``name`` is the
    folder path, the repo id or the architecture; ``text`` the spec as it was given (for messages).
    Parse once, and pass the spec on (``load_model`` takes it).
    """

    kind: ModelKind
    name: str
    revision: str | None = None
    text: str = field(default="", repr=False, compare=False)

    def base_model(self, pretrained: bool) -> str | None:
        """The Hub repo training starts from, for a model card (``timm/<name>`` for timm's
        pretrained weights; None for a folder or random weights)."""
        if self.kind in ("hf-hub", "hub"):
            return self.name
        return f"timm/{self.name}" if self.kind == "timm" and pretrained else None

    def has_head(self, pretrained: bool) -> bool:
        """Whether the model comes with a trained classifier head whose classes a data set is
        matched to; a bare timm architecture without pretrained weights has none, so it takes
        the data set's classes (one output per class)."""
        return not (self.kind == "timm" and not pretrained)


def parse_model_spec(spec: str, revision: str | None = None) -> ModelSpec:
    """Parse ``spec`` as :func:`~hf_gazecons.models.load_model` takes it (like timm's
    ``parse_model_name``): an existing folder first, then ``hf-hub:``, a timm architecture and a
    Hub id ``org/name``.

    Raises:
        ModelLoadError: ``spec`` is none of these (``error: unknown model 'x': expected ...``).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSpec("folder", str(path), text=spec)
    if spec.startswith("hf-hub:"):
        repo_id, _, rev = spec[len("hf-hub:") :].partition("@")
        return ModelSpec("hf-hub", repo_id, rev or revision, text=spec)
    if "/" not in spec and _is_timm_architecture(spec):
        return ModelSpec("timm", spec, text=spec)
    if spec.count("/") == 1 and all(spec.split("/")):
        return ModelSpec("hub", spec, revision, text=spec)
    raise ModelLoadError(
        f"unknown model {spec!r}: expected a timm architecture (see timm.list_models()), "
        "'hf-hub:org/name', a Hub id 'org/name', or a local folder with config.json"
    )


def _is_timm_architecture(name: str) -> bool:
    import timm

    return timm.is_model(name) or timm.is_model_pretrained(name)
