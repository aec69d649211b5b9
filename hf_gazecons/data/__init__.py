"""Image classification data: built-in sets, loading with standardised columns, torch wrapper.

Every loaded data set has the columns ``image`` (datasets.Image), ``label`` (ClassLabel) and,
where the source has ground-truth masks, ``mask`` (Image, mode "L", nonzero = object).
"""

from .brain import make_brain
from .builtin import make_digits, make_shapes
from .labels import LabelAlignment, align_labels
from .loading import default_eval_split, load_image_dataset, select_split
from .torch_dataset import ImageClassificationDataset

__all__ = [
    "ImageClassificationDataset",
    "LabelAlignment",
    "align_labels",
    "default_eval_split",
    "load_image_dataset",
    "make_brain",
    "make_digits",
    "make_shapes",
    "select_split",
]
