"""Options and helpers shared by the sub-commands.

:class:`Parser` is argparse with this command line's conventions: a usage error is ONE line on
stderr (``error: ...``, exit 2; an unknown option gets a "did you mean"), every long option is
accepted with dashes and with underscores (``--output-dir`` and ``--output_dir``, as ``train``'s
HfArgumentParser does), abbreviations are not (a typo is an error, not another option), the help
shows every option's default, and an option that takes a value is converted and checked by its
rule in :data:`hf_gazecons.checks.OPTION_RULES`.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..cam_family import ALL_METHODS, CAM_METHOD_HELP, DEFAULT_CAM_METHOD, cam_methods, check_cam_method
from ..errors import UsageError
from ..checks import option_rule
from ..filenames import SAMPLES_FORMATS
from ..output_dir import atomic_directory
from ..variants import VARIANT_HELP, VARIANTS

__all__ = [
    "OneLineErrors",
    "Parser",
    "HelpFormatter",
    "add_model_options",
    "add_data_options",
    "add_output_dir",
    "add_existing_output_dir",
    "existing_output_dir",
    "add_seed_option",
    "DEFAULT_SEED",
    "add_variant_option",
    "add_cam_method_option",
    "add_samples_options",
    "atomic_directory",
    "warn",
]


_OPTION = re.compile(r"--[A-Za-z0-9][\w-]*(=.*)?")  # an option, not a value that starts with dashes


class OneLineErrors:
    """Mixin for argparse parsers: ``error: <message> (see <prog> --help)`` on one line, exit 2. An
    unknown option is named (with the closest known one) even where argparse would first complain
    about a missing required option, which is usually the one the typo meant."""

    _argv: list[str] = []

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)  # type: ignore[misc]

    def error(self, message: str) -> NoReturn:
        known = _option_strings(self)  # type: ignore[arg-type]
        unknown = [a for a in self._argv if _OPTION.fullmatch(a) and a.partition("=")[0] not in known]
        if unknown and not message.startswith("unrecognized arguments:"):
            message = f"unrecognized arguments: {' '.join(unknown)}"
        if message.startswith("unrecognized arguments:"):
            message += _suggestion(known, message.partition(":")[2].split())
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")  # type: ignore[attr-defined]


class HelpFormatter(argparse.HelpFormatter):
    """Lists an option under its first name only and appends ``(default: X)`` where the help does not
    already say what the default is (flags and None defaults describe themselves)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        name = action.option_strings[0]
        if action.nargs == 0:
            return name
        return f"{name} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or any(default is nothing for nothing in (None, False, argparse.SUPPRESS))  # not 0, which == False
            or action.nargs == 0
            or not action.option_strings
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


class Parser(OneLineErrors, argparse.ArgumentParser):
    """argparse with one-line errors, ``-``/``_`` aliases of long options, defaults in the help and
    each option's rule (:func:`~hf_gazecons.checks.option_rule`) as its ``type``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        spelled = list(names)
        for name in names:
            if name.startswith("--"):
                for alias in ("--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")):
                    if alias not in spelled:
                        spelled.append(alias)
        rule = next((option_rule(name) for name in names if name.startswith("--") and option_rule(name)), None)
        if rule is not None and kwargs.get("action", "store") in ("store", "append", "extend"):
            if "type" in kwargs:
                raise TypeError(f"{names[0]} has a rule in hf_gazecons.checks.OPTION_RULES: give it no type here")
            kwargs["type"] = rule
        return super().add_argument(*spelled, **kwargs)


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """The options of ``parser`` and of its sub-commands."""
    options = []
    for action in parser._actions:
        options += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options += _option_strings(sub)
    return options


def _suggestion(options: list[str], unknown: list[str]) -> str:
    for word in unknown:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.partition("=")[0], options, n=1, cutoff=0.75)
            if close:
                return f"; did you mean {close[0]}?"
    return ""


def add_variant_option(parser: argparse.ArgumentParser, default: str | None, default_text: str, note: str = "") -> None:
    """``--variant``, one of :data:`hf_gazecons.variants.VARIANTS` (``note``: what else the command says of them)."""
    parser.add_argument(
        "--variant", choices=VARIANTS, default=default, help=f"{VARIANT_HELP}{note} (default: {default_text})"
    )


def add_cam_method_option(parser: argparse.ArgumentParser, *, training: bool = False, allow_all: bool = False) -> None:
    """``--cam-method``, one of :func:`hf_gazecons.cam_family.cam_methods` (``training``: a
    differentiable one; ``allow_all``: or ``all``); a bad value is one line saying why."""

    def method(value: str) -> str:
        try:
            return check_cam_method(value, training=training, allow_all=allow_all)
        except UsageError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    names = cam_methods(differentiable=True if training else None) + ((ALL_METHODS,) if allow_all else ())
    note = "; 'all': every method in one pass, with their agreement" if allow_all else ""
    note += "; the regularised runs train with it" if training else ""
    parser.add_argument(
        "--cam-method",
        type=method,
        default=DEFAULT_CAM_METHOD,
        metavar="{" + ",".join(names) + "}",
        help=f"{CAM_METHOD_HELP}{note}",
    )
def add_samples_options(parser: argparse.ArgumentParser) -> None:
    """``--samples-format`` (the per-image table) and ``--no-report`` (the HTML report)."""
    parser.add_argument(
        "--samples-format",
        choices=SAMPLES_FORMATS,
        default="parquet",
        help="the per-image table: samples.parquet, samples.csv, or none (then no examples/ either)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="timm architecture, hf-hub:org/name, Hub id org/name, or a folder"
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="with a bare timm architecture: load timm's pretrained weights (default: random weights, with a warning)",
    )
    parser.add_argument(
        "--target-layer",
        default=None,
        help="module name (e.g. layer3) or timm stage index (e.g. -2; write --target-layer=-2) "
        "(default: the model's last spatial map)",
    )
    parser.add_argument("--image-size", default=None, help="square input size (default: the model's)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code to run")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="builtin:shapes|digits[?opts], Hub data set id, or a folder")
    parser.add_argument("--split", default=None, help="split to use (default: validation, else test, else train)")
    parser.add_argument("--image-column", default=None, help="image column (default: detected)")
    parser.add_argument("--label-column", default=None, help="label column (default: detected)")


DEFAULT_SEED = 42
"""The default ``--seed`` of ``score`` and ``cam``: transformers' default training seed, so that
``score --max-samples N`` and ``train --max_eval_samples N`` pick the same images unless told otherwise."""


def add_seed_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--seed``: seeds ``random``, numpy and torch (``transformers.set_seed``) before the model is built,
    so that a bare architecture's random weights are the same in every run; ``what`` says what else it seeds."""
    parser.add_argument(
        "--seed",
        default=DEFAULT_SEED,
        help=f"seed of the random weights of a bare architecture (or of a new head){what} "
        f"(default: {DEFAULT_SEED}, train's default seed)",
    )


def add_output_dir(parser: argparse.ArgumentParser, what: str, **kwargs: Any) -> None:
    """``--output-dir`` (also ``--output_dir``): a new or empty folder, checked before any work."""
    kwargs.setdefault("required", "default" not in kwargs)
    parser.add_argument("--output-dir", help=f"a new (or empty) folder for {what}", **kwargs)


def add_existing_output_dir(parser: argparse.ArgumentParser, what: str) -> None:
    """An output folder a command reads (``push``, ``report``): the positional ``OUTPUT_DIR`` or
    ``--output-dir`` (the convention of every command), once; see :func:`existing_output_dir`."""
    parser.add_argument("output_dir", nargs="?", help=what)
    parser.add_argument(
        "--output-dir",
        dest="output_dir_option",
        metavar="OUTPUT_DIR",
        help="the same folder, given as an option (default: the positional OUTPUT_DIR)",
    )


def existing_output_dir(args: argparse.Namespace, usage: str) -> str:
    """The folder of :func:`add_existing_output_dir`, or a UsageError (``usage``) unless named exactly once."""
    from ..errors import UsageError

    given = [folder for folder in (args.output_dir, args.output_dir_option) if folder is not None]
    if len(given) != 1:
        raise UsageError(usage)
    return given[0]


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (for what the user must not miss, e.g. random weights)."""
    print(f"warning: {message}", file=sys.stderr)
