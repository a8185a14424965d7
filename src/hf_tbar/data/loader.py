"""Streaming pixels: image datasets (or ready tensors) -> batches of ``[0, 1]`` pixels, one batch at a time.

:func:`pixel_loader` wraps a :class:`datasets.Dataset` in a :class:`torch.utils.data.DataLoader` that
fetches ``batch_size`` rows per step and decodes and resizes only those, with the model's own image processor
(``do_normalize=False``, as :func:`~hf_tbar.data.pixels.images_to_tensor`): nothing holds the whole split in
memory. :func:`tensor_loader` gives callers who already hold ``(pixels, labels)`` tensors the same batches,
and :func:`load_image_folder` reads an unlabelled folder of images (e.g. poisoned images found in the wild).

Every loader yields ``(pixels, labels)``: ``pixels`` float32 ``(B, 3, H, W)`` in ``[0, 1]`` at the processor's
crop size, ``labels`` int64 ``(B,)``, or ``None`` for unlabelled data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ..errors import DataError
from .pixels import decode_image, images_to_tensor, undecoded, validate_pixels

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "TensorPairs",
    "decode_image",
    "iter_pixel_batches",
    "load_image_folder",
    "pixel_loader",
    "tensor_loader",
    "to_rgb",
]

#: File suffixes :func:`load_image_folder` reads (case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
Batch = tuple[torch.Tensor, torch.Tensor | None]


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Convert any PIL mode to RGB. Transparent images (RGBA, LA, PA, P with transparency) are composited
    on a white background, as an image viewer shows them; L, 1, CMYK, YCbCr, I, F... are plainly converted."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = PILImage.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


class _PixelTransform:
    """``Dataset.with_transform`` callable: one batch of rows -> ``{"pixels": (B,3,H,W), "labels": (B,)}``."""

    def __init__(self, processor, image_column: str, label_column: str | None) -> None:
        self.processor = processor
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = [to_rgb(decode_image(value, self.image_column)) for value in batch[self.image_column]]
        out = {"pixels": images_to_tensor(images, self.processor).clamp_(0.0, 1.0)}
        if self.label_column is not None:
            out["labels"] = torch.as_tensor(batch[self.label_column], dtype=torch.long)
        return out


def _as_pair(batch: dict[str, torch.Tensor] | Batch) -> Batch:
    """DataLoader ``collate_fn`` for pre-batched items: a ``(pixels, labels-or-None)`` tuple."""
    if isinstance(batch, dict):
        return batch["pixels"], batch.get("labels")
    return batch[0], batch[1]


def _batch_loader(
    dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int, drop_last: bool = False
) -> DataLoader:
    """A loader that asks ``dataset`` for a whole batch of indices at once (one ``__getitem__`` per batch)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        sampler=BatchSampler(order, batch_size=batch_size, drop_last=drop_last),
        batch_size=None,
        collate_fn=_as_pair,
        num_workers=num_workers,
    )


def pixel_loader(
    dataset: Dataset,
    processor,
    *,
    image_column: str,
    label_column: str | None,
    batch_size: int = 64,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    """Stream ``dataset`` as ``(pixels, labels)`` batches, decoding and resizing one batch at a time.

    Args:
        dataset: Rows with an image column (PIL images, ``{"bytes", "path"}``, bytes or file paths).
        processor: The model's processor or image processor; it resizes/crops (``do_normalize=False``).
        image_column: Column holding the images; any PIL mode is converted to RGB (see :func:`to_rgb`).
        label_column: Column of int labels, or ``None`` for unlabelled images (labels are then ``None``).
        batch_size: Rows per batch; the last batch may be smaller.
        num_workers: DataLoader worker processes (0: decode in the calling process).
        shuffle: Visit rows in a random order seeded by ``seed`` (a fresh order each epoch).

    Returns:
        A DataLoader yielding ``pixels`` float32 ``(B, 3, H, W)`` in ``[0, 1]`` at the processor's size and
        ``labels`` int64 ``(B,)`` (or ``None``).

    Raises:
        DataError: a column is missing; decoding a batch raises it for a cell that is not an image or an image
            file that cannot be decoded (truncated, corrupt), naming the file.
    """
    for column in (image_column, label_column):
        if column is not None and column not in dataset.column_names:
            raise DataError(f"the dataset has no column {column!r}; columns: {dataset.column_names}")
    columns = [image_column] + ([label_column] if label_column is not None else [])
    transform = _PixelTransform(processor, image_column, label_column)  # decodes, naming a file that fails
    streamed = undecoded(dataset, image_column).with_transform(transform, columns=columns)
    return _batch_loader(streamed, batch_size, shuffle, seed, num_workers)


def iter_pixel_batches(dataset: Dataset, processor, **kwargs: Any) -> Iterator[Batch]:
    """Iterate the batches of :func:`pixel_loader` (same keyword arguments)."""
    yield from pixel_loader(dataset, processor, **kwargs)


class TensorPairs(torch.utils.data.Dataset):
    """In-memory ``(pixels, labels)`` tensors indexed by a whole batch of indices at a time.

    Args:
        pixels: Float ``(N, 3, H, W)`` in ``[0, 1]``, already at the model's resolution.
        labels: Int ``(N,)``, or ``None`` for unlabelled images.
    """

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        validate_pixels(pixels, "pixels")
        labels = torch.as_tensor(labels) if labels is not None else None
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != pixels.shape[0]):
            raise DataError(
                f"labels must have shape ({pixels.shape[0]},) to match pixels, got {tuple(labels.shape)}"
            )
        self.pixels = pixels.float()
        self.labels = labels.long() if labels is not None else None

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, index: list[int] | int) -> Batch:
        index = torch.as_tensor(index, dtype=torch.long)
        return self.pixels[index], (self.labels[index] if self.labels is not None else None)


def tensor_loader(
    pixels: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    """The :func:`pixel_loader` batches for tensors already in memory (``pixels`` ``(N, 3, H, W)`` in [0, 1])."""
    return _batch_loader(TensorPairs(pixels, labels), batch_size, shuffle, seed, num_workers=0)


def load_image_folder(path: str | os.PathLike) -> Dataset:
    """An unlabelled dataset of every image under ``path`` (recursive, sorted), decoded lazily.

    Every file is checked with PIL (header and integrity, not kept in memory). Columns: ``image``
    (:class:`datasets.Image`, stored as the file path) and ``path`` (relative to ``path``).

    Raises:
        DataError: ``path`` is not a folder, holds no image files, or one of them cannot be read (naming it).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {str(path)!r} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"image folder {str(path)!r} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    for file in files:
        try:
            with PILImage.open(file) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"image file {str(file.relative_to(folder))!r} cannot be read: {err}") from err
    logger.info("found %d images under %s", len(files), folder.name)
    features = Features({"image": Image(), "path": Value("string")})
    return Dataset.from_dict(
        {"image": [str(f) for f in files], "path": [str(f.relative_to(folder)) for f in files]},
        features=features,
    )
