"""Embedded datasets and the image <-> pixel-tensor plumbing."""

from .embedded import EMBEDDED_DATASETS, TaskSpec, load_embedded_dataset
from .pixels import dataset_to_tensors, normalize_pixels, tensors_to_images, validate_pixels

__all__ = [
    "EMBEDDED_DATASETS",
    "TaskSpec",
    "dataset_to_tensors",
    "load_embedded_dataset",
    "normalize_pixels",
    "tensors_to_images",
    "validate_pixels",
]
