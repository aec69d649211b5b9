"""A finished training run, scored again: its final model on its data, at the Grad-CAM layer it
trained with. The sweep's sanity check, docs/RESULTS.md's class-mean picture and the per-class
tables all start here.

    >>> run = SavedRun.load("out/runs/test_resnet/lambda_50/seed_0")
    >>> run.score().value                                 # L_CAM on its evaluation split, again
    >>> run.score(run.split("test"), grid=(7, 7))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .consistency_result import ConsistencyResult
from .data import load_image_dataset
from .metric import gaze_consistency
from .models import LoadedModel, load_model
from .run_record import RunResults
from .specs import parse_target

__all__ = ["SavedRun"]


@dataclass
class SavedRun:
    """A run folder written by ``hf-gazecons train``: its record and its final model."""

    directory: Path
    results: RunResults
    loaded: LoadedModel

    @classmethod
    def load(cls, directory: str | Path) -> SavedRun:
        """Read ``results.json`` and the final model of the run in ``directory``.

        Raises:
            DataError: the folder holds no readable ``results.json``.
            ModelLoadError: its model cannot be loaded.
        """
        directory = Path(directory)
        return cls(directory, RunResults.load(directory), load_model(str(directory)))

    @property
    def target(self) -> str | int | None:
        """The Grad-CAM layer the run trained with (``train`` records it resolved, as a module name)."""
        return parse_target(self.results.config.target_layer)

    def split(self, name: str | None = None) -> datasets.Dataset:
        """Split ``name`` (default: the run's evaluation split) of the data set the run trained on."""
        config = self.results.config
        return load_image_dataset(config.dataset, name or config.eval_split)

    def score(self, data: Any = None, **options: Any) -> ConsistencyResult:
        """:func:`~hf_gazecons.metric.gaze_consistency` of the final model on ``data`` (default: the
        evaluation split) at the run's layer, with the CAM method it trained with unless ``options``
        name another; ``options`` go to ``gaze_consistency``."""
        options.setdefault("progress", False)
        options.setdefault("cam_method", self.results.config.cam_method)
        return gaze_consistency(self.loaded, self.split() if data is None else data, target=self.target, **options)
