"""What an option's value must be: one rule per option name, checked before any data or model is loaded.

:data:`OPTION_RULES` maps every option name that has a rule (as a dataclass field, with ``_``)
to its :class:`Rule`, and the same rule serves every parser of that option:

* the command line's argparse parsers (``hf_gazecons.cli.common.Parser``) take it as the
  option's ``type=``: it converts and checks the text, and argparse reports a usage error;
* the dataclasses that ``HfArgumentParser`` fills (``train``'s) and the sweep's planner run
  :func:`check_fields` on their values, which raises :class:`~hf_gazecons.errors.UsageError`.

Rules that relate several options (:func:`check_curriculum`) live here too. This module imports
nothing heavy, so that the command line can use it before torch is loaded.

    >>> OPTION_RULES["image_size"]("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a positive integer, got '0'
    >>> check_fields({"image_size": 0}, dash="_")
    Traceback (most recent call last):
    hf_gazecons.errors.UsageError: --image_size must be a positive integer, got 0
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from .errors import UsageError

__all__ = [
    "BOOLEAN",
    "FALSE_WORDS",
    "FINITE_FLOAT",
    "NON_NEGATIVE_FLOAT",
    "NON_NEGATIVE_INT",
    "OPTION_RULES",
    "POSITIVE_FLOAT",
    "POSITIVE_INT",
    "Rule",
    "SEED",
    "TRUE_WORDS",
    "UNIT_INTERVAL",
    "check_curriculum",
    "check_fields",
    "option_rule",
    "parse_bool",
    "require",
]


@dataclass(frozen=True)
class Rule:
    """A value of type ``kind`` for which ``accepts(value)`` holds, described as ``requirement``;
    ``invalid`` are texts it refuses (for the tests that walk every option)."""

    kind: Callable[[str], Any]
    requirement: str
    accepts: Callable[[Any], bool]
    invalid: tuple[str, ...] = ()

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
        """Raise UsageError unless ``value`` (already typed; None means unset; a list is checked
        element by element) satisfies the rule."""
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and not self.accepts(item):
                raise UsageError(f"{option} must be {self.requirement}, got {item!r}")

    def __repr__(self) -> str:  # argparse names the type in some messages
        return self.requirement


TRUE_WORDS = ("true", "yes", "t", "y", "1", "on")
FALSE_WORDS = ("false", "no", "f", "n", "0", "off")


def parse_bool(text: str | bool) -> bool:
    """``true``/``yes``/``t``/``y``/``1``/``on`` or their opposites (any case), as transformers'
    ``HfArgumentParser`` reads ``train``'s flags, and ``on``/``off``; ValueError otherwise."""
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"expected true or false, got {text!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


POSITIVE_INT = Rule(int, "a positive integer", lambda v: _is_int(v) and v >= 1, ("0", "-3", "1.5", "x"))
NON_NEGATIVE_INT = Rule(int, "an integer >= 0", lambda v: _is_int(v) and v >= 0, ("-1", "0.5", "x"))
FINITE_FLOAT = Rule(float, "a finite number", _is_number, ("nan", "inf", "-inf", "x"))
POSITIVE_FLOAT = Rule(float, "a finite number > 0", lambda v: _is_number(v) and v > 0, ("0", "-0.001", "nan", "inf"))
NON_NEGATIVE_FLOAT = Rule(float, "a finite number >= 0", lambda v: _is_number(v) and v >= 0, ("-0.5", "nan", "x"))
UNIT_INTERVAL = Rule(float, "a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1, ("1", "-0.1", "nan", "x"))
SEED = Rule(int, "an integer in [0, 2**32)", lambda v: _is_int(v) and 0 <= v < 2**32, ("-1", str(2**32), "x"))
"""numpy's seeds: every seed reaches ``transformers.set_seed`` or a data set's shuffle."""
BOOLEAN = Rule(parse_bool, "true or false", lambda v: isinstance(v, bool), ("maybe", "2"))

OPTION_RULES: dict[str, Rule] = {
    # sizes and counts
    "image_size": POSITIVE_INT,
    "grid": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "per_device_train_batch_size": POSITIVE_INT,
    "per_device_eval_batch_size": POSITIVE_INT,
    "gradient_accumulation_steps": POSITIVE_INT,
    "max_samples": POSITIVE_INT,
    "max_train_samples": POSITIVE_INT,
    "max_eval_samples": POSITIVE_INT,
    "sanity_samples": POSITIVE_INT,
    "epochs": POSITIVE_INT,
    "parallel": POSITIVE_INT,
    "threads": POSITIVE_INT,
    "num_workers": NON_NEGATIVE_INT,
    "max_bad_image_share": UNIT_INTERVAL,
    "pointing_tolerance": NON_NEGATIVE_FLOAT,
    "dataloader_num_workers": NON_NEGATIVE_INT,
    "port": Rule(int, "a port number in [1, 65535]", lambda v: _is_int(v) and 1 <= v <= 65535, ("0", "65536", "x")),
    # the regulariser and its curriculum
    "lambda_max": FINITE_FLOAT,
    "pearson_lambda_max": FINITE_FLOAT,
    "lambdas": FINITE_FLOAT,
    "t0": NON_NEGATIVE_INT,
    "t1": POSITIVE_INT,
    "ema_alpha": UNIT_INTERVAL,
    # optimisation and randomness
    "learning_rate": POSITIVE_FLOAT,
    "num_train_epochs": FINITE_FLOAT,
    "seed": SEED,
    "seeds": SEED,
    # switches that take a value
    "grayscale": BOOLEAN,
    "pretrained": BOOLEAN,
}
"""Each option's rule, under its name as a dataclass field (``--image-size`` is ``image_size``); a
list option (``--lambdas``, ``--seeds``) has the rule of its elements."""


def option_rule(option: str) -> Rule | None:
    """The rule of ``option`` (``--image-size``, ``--image_size`` or ``image_size``), None if it has none."""
    return OPTION_RULES.get(option.lstrip("-").replace("-", "_"))


def check_fields(values: Any, dash: str = "-", names: Iterable[str] | None = None) -> None:
    """Check every field of ``values`` (a dataclass or a mapping) that has a rule, or only ``names``;
    a message spells the option ``--image-size`` (``dash="-"``) or ``--image_size`` (``dash="_"``).

    Raises:
        UsageError: the first value its rule refuses.
    """
    if is_dataclass(values):
        items: Mapping[str, Any] = {f.name: getattr(values, f.name) for f in fields(values)}
    else:
        items = values
    for name in names if names is not None else items:
        rule = OPTION_RULES.get(name)
        if rule is not None:
            rule.check("--" + name.replace("_", dash), items[name])


def check_curriculum(t0: int, t1: int, prefix: str = "--") -> None:
    """``t1 > t0``: lambda is 0 up to epoch ``t0`` and reaches lambda_max at epoch ``t1`` (the
    message names ``--t0``/``--t1``, or with ``prefix=""`` the plain arguments)."""
    require(t1 > t0, f"{prefix}t1 ({t1}) must be greater than {prefix}t0 ({t0})")


def require(condition: bool, message: str) -> None:
    """Raise UsageError(message) unless ``condition`` (for checks that relate several options)."""
    if not condition:
        raise UsageError(message)
