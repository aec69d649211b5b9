"""``class_maps.safetensors``: the class-mean Grad-CAM maps of a final evaluation, with what they mean.

``score`` and ``train`` write it, ``push`` uploads it with the model, and ``hf-gazecons app`` reads
it as the reference an uploaded image is compared with. One tensor ``class_maps`` (K, H', W')
(float32; NaN for a class without a correct image) and, in the safetensors metadata, the class
names, the target layer, the grid and the variant, as JSON strings.

>>> save_class_maps("out/class_maps.safetensors", result.class_means, names, target_layer="layer4")
>>> load_class_maps("out/class_maps.safetensors").label_names
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from .errors import DataError

__all__ = ["ClassMaps", "load_class_maps", "save_class_maps"]


@dataclass
class ClassMaps:
    """Class-mean maps (K, H', W') of ``label_names``, at ``grid`` (None: the model's own map size)."""

    maps: torch.Tensor
    label_names: list[str]
    target_layer: str | None = None
    grid: tuple[int, int] | None = None
    variant: str | None = None

    def of(self, name: str) -> torch.Tensor | None:
        """The map of class ``name``; None where the class has none (no correct image, or unknown)."""
        if name not in self.label_names:
            return None
        found = self.maps[self.label_names.index(name)]
        return None if torch.isnan(found).all() else found


def save_class_maps(
    path: str | Path,
    maps: torch.Tensor,
    label_names: list[str],
    *,
    target_layer: str | None = None,
    grid: tuple[int, int] | None = None,
    variant: str | None = None,
) -> Path:
    """Write ``maps`` (K, H', W') with their class names and provenance."""
    if maps.ndim != 3 or len(maps) != len(label_names):
        raise DataError(f"{len(label_names)} class names for class maps of shape {tuple(maps.shape)}")
    metadata = {
        "label_names": json.dumps(list(label_names)),
        "target_layer": json.dumps(target_layer),
        "grid": json.dumps(list(grid) if grid else None),
        "variant": json.dumps(variant),
    }
    save_file({"class_maps": maps.detach().float().cpu().contiguous()}, str(path), metadata=metadata)
    return Path(path)


def load_class_maps(path: str | Path) -> ClassMaps:
    """Read a file written by :func:`save_class_maps`; a DataError if it is not one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            maps = f.get_tensor("class_maps")
        names = json.loads(metadata["label_names"])
        grid = json.loads(metadata.get("grid", "null"))
        return ClassMaps(
            maps,
            [str(n) for n in names],
            json.loads(metadata.get("target_layer", "null")),
            tuple(grid) if grid else None,
            json.loads(metadata.get("variant", "null")),
        )
    except (OSError, SafetensorError, KeyError, ValueError) as error:
        raise DataError(f"{path} is not a class-maps file written by hf_gazecons ({error})") from None
