"""hf_gazecons: Grad-CAM gaze consistency of image classifiers on timm, transformers, datasets and the Hub.

Measure (``gaze_consistency``), train with (``GazeConsistencyTrainer``) and publish gaze consistency,
as defined in docs/METHOD.md, after K. Yonemura, "Definition of a Grad-CAM-based gaze-consistency
metric and its application to deep learning models", KOSEN Ariake, 2026. Names are imported on
first use, so that the command line starts quickly.

    >>> from hf_gazecons import load_model, load_image_dataset, gaze_consistency
    >>> result = gaze_consistency(load_model("resnet18", num_labels=4), load_image_dataset("builtin:shapes", "test"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CAM": "cam",
    "GradCAM": "cam",
    "CAMOutput": "cam",
    "cam_methods": "cam_family",
    "gaze_consistency": "metric",
    "ConsistencyResult": "consistency_result",
    "load_model": "models",
    "save_model": "models",
    "LoadedModel": "models",
    "load_image_dataset": "data",
    "ImageClassificationDataset": "data",
    "BadImage": "data",
    "drop_bad_images": "data",
    "GazeConsistencyLoss": "regularizer",
    "LambdaCurriculum": "regularizer",
    "GazeConsistencyTrainer": "trainer",
    "GazeConsistencyTrainingArguments": "trainer",
    "Variant": "variants",
    "get_variant": "variants",
    "SavedRun": "saved_run",
    "finished_runs": "run_record",
    "GazeConsError": "errors",
    "TargetLayerError": "errors",
    "DataError": "errors",
    "UnreadableImageError": "errors",
    "ModelLoadError": "errors",
    "MetricError": "errors",
    "HubError": "errors",
    "UsageError": "errors",
    "TrainingError": "errors",
    "deletion_insertion": "faithfulness",
    "road": "faithfulness",
    "evaluate_faithfulness": "faithfulness_report",
    "FaithfulnessSettings": "faithfulness_report",
    "FaithfulnessResult": "faithfulness_report",
    "noisy_linear_impute": "imputation",
    "Localization": "localization",
    "SampleRecorder": "samples",
    "SampleColumn": "samples",
    "register_column": "samples",
    "read_samples": "samples",
    "load_class_maps": "class_maps",
    "planted_recall": "planted_ranking",
    "write_report": "report",
    "build_app": "app",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hf_gazecons' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from .app import build_app  # noqa: F401
    from .cam import CAM, CAMOutput, GradCAM  # noqa: F401
    from .cam_family import cam_methods  # noqa: F401
    from .class_maps import load_class_maps  # noqa: F401
    from .consistency_result import ConsistencyResult  # noqa: F401
    from .data import BadImage, ImageClassificationDataset, drop_bad_images, load_image_dataset  # noqa: F401
    from .errors import (  # noqa: F401
        DataError,
        GazeConsError,
        HubError,
        MetricError,
        ModelLoadError,
        TargetLayerError,
        TrainingError,
        UnreadableImageError,
        UsageError,
    )
    from .faithfulness import deletion_insertion, road  # noqa: F401
    from .faithfulness_report import FaithfulnessResult, FaithfulnessSettings, evaluate_faithfulness  # noqa: F401
    from .imputation import noisy_linear_impute  # noqa: F401
    from .localization import Localization  # noqa: F401
    from .metric import gaze_consistency  # noqa: F401
    from .models import LoadedModel, load_model, save_model  # noqa: F401
    from .planted_ranking import planted_recall  # noqa: F401
    from .regularizer import GazeConsistencyLoss, LambdaCurriculum  # noqa: F401
    from .report import write_report  # noqa: F401
    from .run_record import finished_runs  # noqa: F401
    from .samples import SampleColumn, SampleRecorder, read_samples, register_column  # noqa: F401
    from .saved_run import SavedRun  # noqa: F401
    from .trainer import GazeConsistencyTrainer, GazeConsistencyTrainingArguments  # noqa: F401
    from .variants import Variant, get_variant  # noqa: F401
