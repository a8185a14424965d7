"""Image sets: the one way evaluation, the scale search, DECREE and fine-tuning read images.

An :class:`ImageSet` is a sized collection of images (with or without labels) read **batch by batch** as
un-normalised ``[0, 1]`` pixels at the model's input resolution. Two kinds exist:

- :class:`TensorImages`: pixels already in memory (the tensor API: ``(pixels, labels)``),
- :class:`DatasetImages`: rows of a :class:`datasets.Dataset`, decoded and resized per batch by the model's
  own image processor, so a whole split never sits in memory.

:func:`as_image_set` turns what a user passes (a tuple of tensors, a tensor, a ``datasets.Dataset``, an image
set) into one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from ..errors import DataError
from .loader import pixel_loader, tensor_loader
from .pixels import validate_labels, validate_pixels

Batch = tuple[torch.Tensor, torch.Tensor | None]


class ImageSet:
    """Images read batch by batch: ``[0, 1]`` float pixels ``(B, 3, H, W)`` and int64 labels ``(B,)`` or ``None``."""

    name: str = "images"

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def labels(self) -> torch.Tensor | None:
        """Every label ``(N,)`` (read without decoding any image), or ``None`` for unlabelled images."""
        raise NotImplementedError

    @property
    def captions(self) -> list[str] | None:
        """One caption per image (read without decoding any image), or ``None`` for uncaptioned images."""
        return None

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A loader of ``(pixels, labels)`` batches; only one batch is decoded at a time."""
        raise NotImplementedError

    def select(self, indices: Sequence[int]) -> ImageSet:
        """The images at ``indices`` (in that order), still lazy."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """``(pixels, labels)`` batches in order."""
        yield from self.loader(batch_size)

    def tensors(self, batch_size: int = 64) -> Batch:
        """Every image decoded into one ``(N, 3, H, W)`` tensor: only for small, bounded subsets."""
        chunks, labels = [], []
        for pixels, batch_labels in self.batches(batch_size):
            chunks.append(pixels)
            if batch_labels is not None:
                labels.append(batch_labels)
        if not chunks:
            raise DataError(f"{self.name}: no images")
        return torch.cat(chunks), (torch.cat(labels) if labels else None)

    def require_labels(self) -> torch.Tensor:
        """The labels, or a :class:`DataError` naming this set when it has none."""
        labels = self.labels
        if labels is None:
            raise DataError(f"{self.name} have no labels, but labels are needed here")
        return labels

    def check(self, num_classes: int, image_size: tuple[int, int] | None = None) -> ImageSet:
        """Check the labels against ``num_classes`` and, for tensors, the pixel size; return ``self``."""
        if len(self) == 0:
            raise DataError(f"{self.name}: the set is empty")
        if self.labels is not None:
            validate_labels(self.labels, num_classes, f"the labels of the {self.name}")
        return self


class TensorImages(ImageSet):
    """Images already in memory: ``pixels`` float ``(N, 3, H, W)`` in ``[0, 1]``, ``labels`` ``(N,)`` or ``None``."""

    def __init__(
        self,
        pixels: torch.Tensor,
        labels: torch.Tensor | None = None,
        name: str = "images",
        captions: Sequence[str] | None = None,
    ) -> None:
        validate_pixels(pixels, name)
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.ndim != 1 or len(labels) != len(pixels):
                raise DataError(f"got {len(pixels)} {name} but labels of shape {tuple(labels.shape)}")
            labels = labels.long()
        if captions is not None:
            captions = list(captions)
            if len(captions) != len(pixels):
                raise DataError(f"got {len(pixels)} {name} but {len(captions)} captions")
        self.pixels, self._labels, self.name, self._captions = pixels, labels, name, captions

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def labels(self) -> torch.Tensor | None:
        return self._labels

    @property
    def captions(self) -> list[str] | None:
        return self._captions

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        return tensor_loader(self.pixels, self._labels, batch_size, shuffle=shuffle, seed=seed)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self.pixels), batch_size):
            stop = start + batch_size
            yield self.pixels[start:stop], (self._labels[start:stop] if self._labels is not None else None)

    def select(self, indices: Sequence[int]) -> TensorImages:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        labels = self._labels[index] if self._labels is not None else None
        captions = [self._captions[i] for i in index.tolist()] if self._captions is not None else None
        return TensorImages(self.pixels[index], labels, self.name, captions)

    def tensors(self, batch_size: int = 64) -> Batch:
        return self.pixels, self._labels

    def check(self, num_classes: int, image_size: tuple[int, int] | None = None) -> ImageSet:
        if image_size is not None and tuple(self.pixels.shape[-2:]) != tuple(image_size):
            height, width = self.pixels.shape[-2:]
            raise DataError(
                f"{self.name} are {height}x{width} px but the model reads {image_size[0]}x{image_size[1]} px: "
                "resize them with the model's processor (or pass a datasets.Dataset, which is resized for you)"
            )
        return super().check(num_classes, image_size)


class DatasetImages(ImageSet):
    """Rows of a :class:`datasets.Dataset`, decoded and resized per batch by ``processor`` (the model's).

    Args:
        dataset: Rows with an image column (any PIL mode; converted to RGB) and optionally a label column.
        processor: The model's processor or image processor (resize and crop; normalisation happens later).
        image_column: Column of images.
        label_column: Column of int labels, or ``None`` for unlabelled images (e.g. found poisoned images).
        caption_column: Column of captions (image-caption data), or ``None``.
        num_workers: DataLoader worker processes decoding images (0: in this process).
    """

    def __init__(
        self,
        dataset: Dataset,
        processor,
        image_column: str = "image",
        label_column: str | None = "label",
        name: str = "images",
        num_workers: int = 0,
        caption_column: str | None = None,
    ) -> None:
        for column in (image_column, label_column, caption_column):
            if column is not None and column not in dataset.column_names:
                raise DataError(
                    f"{name}: the dataset has no column {column!r}; columns: {dataset.column_names}"
                )
        self.dataset, self.processor = dataset, processor
        self.image_column, self.label_column = image_column, label_column
        self.name, self.num_workers, self.caption_column = name, num_workers, caption_column
        self._labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> torch.Tensor | None:
        if self.label_column is None:
            return None
        if self._labels is None:  # one column read from Arrow; no image is decoded
            values = self.dataset.select_columns([self.label_column])[self.label_column]
            self._labels = torch.as_tensor(np.asarray(values, dtype=np.int64))
        return self._labels

    @property
    def captions(self) -> list[str] | None:
        if self.caption_column is None:
            return None
        return list(self.dataset.select_columns([self.caption_column])[self.caption_column])

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        return pixel_loader(
            self.dataset,
            self.processor,
            image_column=self.image_column,
            label_column=self.label_column,
            batch_size=batch_size,
            num_workers=self.num_workers,
            shuffle=shuffle,
            seed=seed,
        )

    def select(self, indices: Sequence[int]) -> DatasetImages:
        subset = DatasetImages(
            self.dataset.select(list(indices)),
            self.processor,
            self.image_column,
            self.label_column,
            self.name,
            self.num_workers,
            self.caption_column,
        )
        if self._labels is not None:
            subset._labels = self._labels[torch.as_tensor(list(indices), dtype=torch.long)]
        return subset


def as_image_set(
    data: ImageSet | Dataset | torch.Tensor | tuple | list,
    processor=None,
    *,
    name: str = "images",
    image_column: str = "image",
    label_column: str | None = "label",
    caption_column: str | None = None,
) -> ImageSet:
    """Turn ``data`` into an :class:`ImageSet`.

    Args:
        data: An image set; a ``(pixels, labels)`` pair of tensors; a pixel tensor (unlabelled); or a
            :class:`datasets.Dataset` (read through ``processor``).
        processor: The model's processor; needed for a ``datasets.Dataset``.
        name: What these images are, for error messages (e.g. ``"validation images"``).
        image_column / label_column / caption_column: The columns of a ``datasets.Dataset`` (no caption
            column: uncaptioned images).
    """
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, Dataset):
        if processor is None:
            raise DataError(f"{name}: a datasets.Dataset needs the model's processor to be decoded")
        return DatasetImages(data, processor, image_column, label_column, name, caption_column=caption_column)
    if isinstance(data, torch.Tensor):
        return TensorImages(data, None, name)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return TensorImages(data[0], data[1], name)
    raise DataError(
        f"{name} must be an ImageSet, a datasets.Dataset, a pixel tensor or a (pixels, labels) pair, "
        f"got {type(data).__name__}"
    )
