"""The names of the deviation variants (SPEC section 2, docs/OBJECTIVES.md), importable without torch.

The command line builds its ``--variant`` choices from :data:`VARIANTS`; the equations live in
:mod:`hf_gazecons.deviation`.
"""

from __future__ import annotations

from typing import Literal

from .errors import UsageError

__all__ = ["Variant", "VARIANTS", "VARIANT_HELP", "check_variant"]

Variant = Literal["paper", "reference", "robust", "pearson"]
VARIANTS: tuple[Variant, ...] = ("paper", "reference", "robust", "pearson")

VARIANT_HELP = (
    "deviation of a map from its class map: 'paper' (mean squared difference, the study's text), "
    "'reference' (unsquared norm, the study's code), 'robust' (1 - cosine; an all-zero map is the worst case) "
    "or 'pearson' ((1 - Pearson correlation) / 2: blind to a map's energy and polarity; an all-zero map is the "
    "worst case)"
)


def check_variant(variant: str) -> Variant:
    """``variant`` if it names a variant, else a :class:`~hf_gazecons.errors.UsageError` that lists them."""
    if variant not in VARIANTS:
        raise UsageError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    return variant  # type: ignore[return-value]
