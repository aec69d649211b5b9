"""What an option's value must be, checked before any data or model is loaded.

Each :class:`Rule` serves both option parsers: as an argparse ``type=`` it converts and checks the
text of an option (argparse then reports a usage error); :meth:`Rule.check` checks a value already
parsed into a dataclass (``HfArgumentParser``) and raises :class:`~hf_gazecons.errors.UsageError`.
This module imports nothing heavy, so the command line can use it before torch is loaded.

    >>> POSITIVE_INT("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a positive integer, got '0'
    >>> POSITIVE_INT.check("--image_size", 0)
    Traceback (most recent call last):
    hf_gazecons.errors.UsageError: --image_size must be a positive integer, got 0
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

__all__ = [
    "Rule",
    "POSITIVE_INT",
    "NON_NEGATIVE_INT",
    "FINITE_FLOAT",
    "POSITIVE_FLOAT",
    "NON_NEGATIVE_FLOAT",
    "UNIT_INTERVAL",
    "SEED",
    "require",
]


@dataclass(frozen=True)
class Rule:
    """A value of type ``kind`` for which ``accepts(value)`` holds, described as ``requirement``."""

    kind: Callable[[str], Any]
    requirement: str
    accepts: Callable[[Any], bool]

    def __call__(self, text: str) -> Any:
        """argparse ``type=``: the converted value, or ``ArgumentTypeError`` (a usage error)."""
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self.requirement}, got {text!r}") from None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {self.requirement}, got {text!r}")
        return value

    def check(self, option: str, value: Any) -> None:
        """Raise UsageError unless ``value`` (already typed; None means unset) satisfies the rule."""
        if value is not None and not self.accepts(value):
            raise UsageError(f"{option} must be {self.requirement}, got {value!r}")

    def __repr__(self) -> str:  # argparse names the type in some messages
        return self.requirement


POSITIVE_INT = Rule(int, "a positive integer", lambda v: v >= 1)
NON_NEGATIVE_INT = Rule(int, "an integer >= 0", lambda v: v >= 0)
FINITE_FLOAT = Rule(float, "a finite number", math.isfinite)
POSITIVE_FLOAT = Rule(float, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)
NON_NEGATIVE_FLOAT = Rule(float, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
UNIT_INTERVAL = Rule(float, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
SEED = Rule(int, "an integer in [0, 2**32)", lambda v: 0 <= v < 2**32)  # numpy's seeds


def require(condition: bool, message: str) -> None:
    """Raise UsageError(message) unless ``condition`` (for checks that relate several options)."""
    if not condition:
        raise UsageError(message)
