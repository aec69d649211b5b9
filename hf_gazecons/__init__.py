"""hf_gazecons: Grad-CAM gaze consistency of image classifiers on timm, transformers, datasets and the Hub.

Measure (``gaze_consistency``), train with (``GazeConsistencyTrainer``) and publish gaze consistency,
as defined in SPEC.md (after K. Yonemura, 2026).
"""

from .cam import CAMOutput, GradCAM
from .data import ImageClassificationDataset, load_image_dataset
from .errors import DataError, GazeConsError, HubError, MetricError, ModelLoadError, TargetLayerError
from .metric import ConsistencyResult, gaze_consistency
from .models import LoadedModel, load_model, save_model
from .regularizer import GazeConsistencyLoss, LambdaCurriculum
from .trainer import GazeConsistencyTrainer, GazeConsistencyTrainingArguments

__version__ = "0.1.0"

__all__ = [
    "GradCAM",
    "CAMOutput",
    "gaze_consistency",
    "ConsistencyResult",
    "load_model",
    "save_model",
    "LoadedModel",
    "load_image_dataset",
    "ImageClassificationDataset",
    "GazeConsistencyLoss",
    "LambdaCurriculum",
    "GazeConsistencyTrainer",
    "GazeConsistencyTrainingArguments",
    "GazeConsError",
    "TargetLayerError",
    "DataError",
    "ModelLoadError",
    "MetricError",
    "HubError",
]
