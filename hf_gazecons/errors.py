"""Errors of hf_gazecons: each says what went wrong and what to do next.

The command line turns any :class:`GazeConsError` into one line on stderr, ``error: <message>``,
and the error's ``exit_code``: 2 for bad input (the usage-error status of argparse), 1 for a run
that failed. Every class below shows one message a user sees.
"""

from __future__ import annotations

__all__ = [
    "GazeConsError",
    "TargetLayerError",
    "DataError",
    "UnreadableImageError",
    "ModelLoadError",
    "MetricError",
    "HubError",
    "UsageError",
    "TrainingError",
    "first_line",
    "one_line",
]


class GazeConsError(Exception):
    """Base class of the errors this package raises on bad input or a failed run."""

    exit_code = 2


class TargetLayerError(GazeConsError, ValueError):
    """The target layer cannot be resolved or yields no spatial map.

    ``error: layer 'head.fc' yields no spatial map (output shape (8, 4)); Grad-CAM needs a (B, C, H, W),
    (B, H, W, C) or token (B, N, C) activation with more than one position: choose an earlier layer ...``
    """


class DataError(GazeConsError, ValueError):
    """A data set, split, column, label, image or run record is missing or unusable.

    ``error: the data set has no split 'valid'; it has train, validation, test (--split)``
    """


class UnreadableImageError(DataError):
    """One row's image (or mask) cannot be decoded; ``path`` (None for images stored as bytes) and
    the decoder's ``reason`` say which and why (``--skip-bad-images`` leaves such rows out).

    ``error: image 3 of the validation split (/data/xray/validation/cat/a.jpg) cannot be read: image
    file is truncated (53 bytes not processed)``
    """

    def __init__(self, message: str, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)  # one positional argument: torch's DataLoader re-raises a worker's error with it
        self.path, self.reason = path, reason or message


class ModelLoadError(GazeConsError, ValueError):
    """A model specification cannot be resolved or loaded.

    ``error: unknown model 'resnet181': expected a timm architecture (see timm.list_models()),
    'hf-hub:org/name', a Hub id 'org/name', or a local folder with config.json``
    """


class MetricError(GazeConsError, ValueError):
    """The metric cannot be computed on what was given.

    ``error: the reference variant keeps every correct sample's map: ... would need 12.0 GB; ...``
    """


class HubError(GazeConsError, RuntimeError):
    """A request to the Hugging Face Hub failed.

    ``error: push to my-org/resnet18-gazecons: the Hub refused the token (401 Unauthorized); log in
    with `hf auth login` or set HF_TOKEN``
    """


class UsageError(GazeConsError, ValueError):
    """An option's value is out of range, or options contradict each other (checked before any work).

    ``error: --t1 (2) must be greater than --t0 (5)``
    """


class TrainingError(GazeConsError, RuntimeError):
    """A training run went wrong (e.g. its loss stopped being finite): nothing is saved or published.

    ``error: the training loss is nan at step 2 (epoch 0.33): the run stopped; no model, results or
    card were written and nothing was published; lower --learning_rate or --lambda_max``
    """

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when the message is empty): how a
    foreign error (a library's, an OS one) is quoted inside one ``error:`` line."""
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def one_line(error: GazeConsError) -> str:
    """What the command line prints after ``error:``: the message on one line. An error raised in a
    torch DataLoader worker comes back as ``Caught <class> in DataLoader worker process N.`` followed
    by the worker's traceback, whose last line is ``<module>.<class>: <message>``: the message is that."""
    text = str(error).strip()
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        text = last[len(prefix) :] if last.startswith(prefix) else text
    return text.replace("\n", " ")
