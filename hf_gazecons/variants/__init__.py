"""The deviation variants: how far a map lies from its class map (docs/METHOD.md, sections 3 and 8).

Each variant is one :class:`~hf_gazecons.variants.base.Variant` subclass in one file of this
package: ``paper`` (the study's text), ``reference`` (the study's code), ``robust`` (this
project's first collapse-safe one) and ``pearson`` (the one this project recommends). The
deviation, the metric's sums, the penalty, the rule for the class map and what an all-zero map
scores are each the variant's; :mod:`~hf_gazecons.deviation`,
:mod:`~hf_gazecons.metric`, :mod:`~hf_gazecons.regularizer`, the trainer and the command line ask it
through :func:`get_variant`.

Importing this package does not import torch: the command line builds its ``--variant`` choices and
help from :data:`VARIANTS` and :data:`VARIANT_HELP` before anything heavy is loaded.

Adding a variant ``NAME`` is one file, ``hf_gazecons/variants/NAME.py``, holding one subclass of
``Variant`` with ``name = "NAME"`` and a one-line ``summary``; it implements ``deviation`` (per
sample) and ``deviation_sums`` (the metric's per-class sums, from ``ClassSums`` and whatever its
``sample_terms`` add), and changes ``averaged_maps``, ``class_map_count``, ``zero_map_is_worst``,
``revives_collapsed_maps`` or ``keeps_maps`` where it differs from the study. The module must not
import torch at its top (import it inside the methods that need it). The package finds the file:
``--variant NAME`` then works in every command, the metric reports it beside ``paper`` (as
``<prefix>_NAME_gaze_consistency``), and tests/test_variants.py checks its sums against its
per-sample deviation.

    >>> get_variant("robust").deviation(maps, class_map)
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import UsageError
from .base import ClassSums, Variant, collapse_depth, is_zero_map, registered

__all__ = [
    "COLLAPSE_SAFE",
    "DEFAULT_VARIANT",
    "KEEPS_MAPS",
    "VARIANTS",
    "VARIANT_HELP",
    "ClassSums",
    "Variant",
    "collapse_depth",
    "get_variant",
    "is_zero_map",
]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f".{_module.name}", __name__)

_CLASSES = registered()
VARIANTS: tuple[str, ...] = tuple(sorted(_CLASSES))
"""The names of the variants, ``--variant``'s choices."""

COLLAPSE_SAFE: tuple[str, ...] = tuple(name for name in VARIANTS if _CLASSES[name].zero_map_is_worst)
"""The variants under which an all-zero map scores the worst case (under the others, a collapsed
gaze scores as perfectly consistent)."""

KEEPS_MAPS: tuple[str, ...] = tuple(name for name in VARIANTS if _CLASSES[name].keeps_maps)
"""The variants whose metric keeps every correct map (memory grows with the data set)."""

DEFAULT_VARIANT = "paper"
"""The study's variant: the default everywhere, and the one ``<prefix>_gaze_consistency`` reports."""

_DESCRIBED = [f"'{name}' ({_CLASSES[name].summary})" for name in VARIANTS]
VARIANT_HELP = "deviation of a map from its class map: " + " or ".join(
    filter(None, [", ".join(_DESCRIBED[:-1]), _DESCRIBED[-1]])
)


def get_variant(variant: str | Variant) -> Variant:
    """The variant named ``variant`` (a :class:`Variant` is returned as it is).

    Raises:
        UsageError: no variant has that name (the message lists them).
    """
    if isinstance(variant, Variant):
        return variant
    if variant not in _CLASSES:
        raise UsageError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    return _CLASSES[variant]()
