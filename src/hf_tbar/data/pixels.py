"""Conversion between image datasets and pixel tensors, and the decoding of one image cell.

Triggers act on *un-normalised* pixels in ``[0, 1]`` at the model's input resolution, shape
``(batch, 3, H, W)``; the CLIP mean/std normalisation is applied after the trigger, right before the
vision tower, by :func:`normalize_pixels`.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Image
from PIL import Image as PILImage

from ..errors import DataError

#: Pixels may exceed [0, 1] by this much (resampling and float rounding), not more.
PIXEL_TOLERANCE = 1e-3


def validate_pixels(pixels: torch.Tensor, name: str = "images", check_values: bool = True) -> torch.Tensor:
    """Check that ``pixels`` is a float batch ``(B, 3, H, W)`` of finite values in ``[0, 1]``; return it.

    ``check_values=False`` checks the type and shape only (for images a trigger such as SIG has already
    pushed slightly outside ``[0, 1]``, inside the model's forward pass).

    Raises:
        TypeError: not a floating-point tensor.
        DataError: wrong rank or channel count, NaN/Inf values, or values outside ``[0, 1]`` (say,
            0..255 pixels converted with ``.float()`` but not divided by 255, or normalised pixels).
    """
    if not isinstance(pixels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(pixels).__name__}")
    if not pixels.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {pixels.dtype}"
        )
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise DataError(f"{name} must have shape (B, 3, H, W), got {tuple(pixels.shape)}")
    if pixels.numel() == 0 or not check_values:
        return pixels
    finite = torch.isfinite(pixels)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise DataError(f"{name} hold {bad} NaN or infinite value(s): pixels must be finite, in [0, 1]")
    low, high = float(pixels.min()), float(pixels.max())
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        hint = (
            " (8-bit pixels? divide by 255)"
            if high > 1 + PIXEL_TOLERANCE and high <= 255 and low >= 0
            else " (already normalised? pass un-normalised [0, 1] pixels; normalisation happens inside)"
        )
        raise DataError(f"{name} range from {low:.3g} to {high:.3g}, not in [0, 1]{hint}")
    return pixels


def validate_labels(labels: torch.Tensor, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Check that ``labels`` is a 1-D integer tensor of class indices in ``[0, num_classes)``.

    Raises:
        DataError: naming the kind of label (``name``), the first bad value and the number of classes.
    """
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.ndim != 1:
        raise DataError(f"{name} must be a 1-D integer tensor of class indices, got {labels!r:.80}")
    if labels.numel():
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.numel():
            raise DataError(
                f"{name} hold {bad.numel()} value(s) out of range, e.g. {int(bad[0])}: the task has "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
    return labels


def undecoded(dataset: Dataset, column: str) -> Dataset:
    """``dataset`` with its image column ``column`` read as stored (``{"bytes", "path"}`` cells), so that
    :func:`decode_image` decodes each image and names the file that fails; unchanged for any other column.

    ``datasets`` would decode the images itself, before any transform, and a truncated file would surface as
    a bare ``OSError`` that names no file.
    """
    feature = dataset.features.get(column)
    if isinstance(feature, Image) and feature.decode:
        return dataset.cast_column(column, Image(mode=feature.mode, decode=False))
    return dataset


def decode_image(value: Any, column: str) -> PILImage.Image:
    """Decode one cell of an image column: a PIL image, ``{"bytes", "path"}``, raw bytes or a file path.

    Raises:
        DataError: the value is not an image (naming ``column`` and the value's type), or an image file that
            cannot be decoded, truncated or corrupt (naming the file, or the column for bytes without a name).
    """
    if isinstance(value, PILImage.Image):
        return value
    stored = isinstance(value, dict) and (value.get("bytes") is not None or bool(value.get("path")))
    try:
        if stored:
            return Image().decode_example(value)
        if isinstance(value, (bytes, bytearray)):
            image = PILImage.open(io.BytesIO(value))
            image.load()
            return image
        if isinstance(value, (str, os.PathLike)):
            image = PILImage.open(value)
            image.load()  # reads the pixels and closes the file
            return image
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as err:
        # PIL.UnidentifiedImageError is an OSError; so is "image file is truncated"
        path = value.get("path") if stored else value if isinstance(value, (str, os.PathLike)) else None
        if path:
            raise DataError(
                f"image file {os.fspath(path)!r} of column {column!r} cannot be decoded (truncated, corrupt, "
                f"missing?): {err}"
            ) from err
        raise DataError(f"image bytes (no file name) in column {column!r} cannot be decoded: {err}") from err
    raise DataError(
        f"image column {column!r} holds no images: got a {type(value).__name__} ({str(value)[:60]!r}), "
        "expected an image, image bytes or an image file path"
    )


def image_size_of(processor) -> tuple[int, int]:
    """(height, width) the processor crops/resizes to."""
    image_processor = getattr(processor, "image_processor", processor)
    crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
    if isinstance(crop, dict):
        if "height" in crop:
            return int(crop["height"]), int(crop["width"])
        side = crop.get("shortest_edge")
        return int(side), int(side)
    return int(crop.height), int(crop.width)


def images_to_tensor(images: list, processor) -> torch.Tensor:
    """Resize/crop PIL images with the CLIP image processor, without normalising: ``[0, 1]`` floats."""
    image_processor = getattr(processor, "image_processor", processor)
    rgb = [img.convert("RGB") if isinstance(img, PILImage.Image) else img for img in images]
    out = image_processor(images=rgb, do_normalize=False, return_tensors="pt")
    return out["pixel_values"].float()


def dataset_to_tensors(
    dataset: Dataset,
    processor,
    image_column: str = "image",
    label_column: str = "label",
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn an image-classification dataset into ``(pixels in [0, 1] of shape (N, 3, H, W), labels (N,))``.

    Raises:
        ValueError: the dataset is empty or lacks a column.
        DataError: an image cannot be decoded (naming its file).
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: it has no rows to convert")
    for column in (image_column, label_column):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no column {column!r}; columns: {dataset.column_names}")
    stored = undecoded(dataset, image_column)
    chunks = [
        images_to_tensor(
            [decode_image(cell, image_column) for cell in stored[start : start + batch_size][image_column]],
            processor,
        )
        for start in range(0, len(dataset), batch_size)
    ]
    labels = torch.as_tensor(np.asarray(dataset[label_column]), dtype=torch.long)
    return torch.cat(chunks), labels


def tensors_to_images(pixels: torch.Tensor) -> list[PILImage.Image]:
    """Quantise ``[0, 1]`` pixel tensors to 8-bit RGB PIL images (as an attacker would save them)."""
    validate_pixels(pixels)
    arrays = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [PILImage.fromarray(arr, mode="RGB") for arr in arrays]


def normalize_pixels(pixels: torch.Tensor, processor) -> torch.Tensor:
    """Apply the processor's mean/std normalisation to ``[0, 1]`` pixels (last step before the model)."""
    image_processor = getattr(processor, "image_processor", processor)
    mean = torch.as_tensor(image_processor.image_mean, dtype=pixels.dtype, device=pixels.device)
    std = torch.as_tensor(image_processor.image_std, dtype=pixels.dtype, device=pixels.device)
    return (pixels - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
