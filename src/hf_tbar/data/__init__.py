"""Datasets in, pixels out: embedded datasets, data sources for your own data, and streaming pixel loaders.

| module | job |
|---|---|
| ``embedded`` | datasets shipped with hf_tbar, and :class:`TaskSpec` (class names + prompt templates) |
| ``glyphs`` | the embedded glyph world: ten Greek capitals drawn stroke by stroke (64 px) |
| ``arguments`` | :class:`DataArguments`: which dataset, columns, splits, caps, class names, templates |
| ``sources`` | the registry of data sources (embedded, save_to_disk, imagefolder, parquet/arrow, Hub) |
| ``caption_data`` | :class:`CaptionDataArguments` / :func:`load_caption_data`: an image-caption unlearning set |
| ``task_data`` | :func:`load_task_data`: checked, carved, capped splits + their task; :func:`resolve_target` |
| ``loader`` | :func:`pixel_loader` / :func:`tensor_loader`: ``(pixels in [0, 1], labels)`` batches, streamed |
| ``images`` | :class:`ImageSet` (tensors or a dataset, read batch by batch): what the unlearner and evaluation read |
| ``pixels`` | image <-> pixel-tensor conversions and normalisation; decoding one image cell, naming a bad file |
"""

from .arguments import DataArguments
from .caption_data import CaptionData, CaptionDataArguments, load_caption_data
from .embedded import EMBEDDED_DATASETS, TaskSpec, load_embedded_dataset
from .glyphs import load_glyphs  # registers the glyph world in EMBEDDED_DATASETS
from .images import DatasetImages, ImageSet, TensorImages, as_image_set
from .loader import TensorPairs, iter_pixel_batches, load_image_folder, pixel_loader, tensor_loader
from .pixels import dataset_to_tensors, normalize_pixels, tensors_to_images, validate_pixels
from .sources import DATA_SOURCES, DataSource, register_data_source, select_data_source
from .task_data import TaskData, load_task_data, resolve_target

__all__ = [
    "DATA_SOURCES",
    "EMBEDDED_DATASETS",
    "CaptionData",
    "CaptionDataArguments",
    "DataArguments",
    "DataSource",
    "DatasetImages",
    "ImageSet",
    "TaskData",
    "TaskSpec",
    "TensorImages",
    "TensorPairs",
    "as_image_set",
    "dataset_to_tensors",
    "iter_pixel_batches",
    "load_embedded_dataset",
    "load_glyphs",
    "load_caption_data",
    "load_image_folder",
    "load_task_data",
    "normalize_pixels",
    "pixel_loader",
    "register_data_source",
    "resolve_target",
    "select_data_source",
    "tensor_loader",
    "tensors_to_images",
    "validate_pixels",
]
