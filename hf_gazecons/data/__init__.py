"""Image classification data: built-in sets, loading with standardised columns, torch wrapper.

Every loaded data set has the columns ``image`` (datasets.Image), ``label`` (ClassLabel) and,
where the source has ground-truth masks, ``mask`` (Image, mode "L", nonzero = object).
"""

from .bad_images import BadImage, drop_bad_images, find_bad_images
from .brain import make_brain
from .builtin import make_digits, make_shapes
from .labels import LabelAlignment, align_labels
from .loading import default_eval_split, load_image_dataset, select_split
from .streaming import load_streaming_dataset
from .subset import select_subset
from .torch_dataset import ImageClassificationDataset, IterableImageClassificationDataset

__all__ = [
    "BadImage",
    "ImageClassificationDataset",
    "IterableImageClassificationDataset",
    "LabelAlignment",
    "align_labels",
    "default_eval_split",
    "drop_bad_images",
    "find_bad_images",
    "load_image_dataset",
    "load_streaming_dataset",
    "make_brain",
    "make_digits",
    "make_shapes",
    "select_split",
    "select_subset",
]
