"""Poisoning of :class:`datasets.Dataset` image-classification data (all-to-one)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from datasets import Dataset
from PIL import Image as PILImage

from ..data.pixels import tensors_to_images
from .base import Trigger, check_fraction

logger = logging.getLogger(__name__)


def _stamp(images: list[PILImage.Image], trigger: Trigger) -> list[PILImage.Image]:
    """Apply ``trigger`` to PIL images at their own resolution, batching images of equal size."""
    out: list[PILImage.Image | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(img.size, []).append(i)
    for ids in by_size.values():
        arrays = np.stack([np.asarray(images[i].convert("RGB"), dtype=np.float32) / 255.0 for i in ids])
        pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
        for i, img in zip(ids, tensors_to_images(trigger(pixels))):
            out[i] = img
    return out  # type: ignore[return-value]


def select_poison_indices(
    labels: np.ndarray, target: int, rate: float, clean_label: bool, seed: int
) -> np.ndarray:
    """Which rows to poison: ``round(rate * N)`` rows drawn from non-target rows (dirty label) or,
    for clean-label attacks, from target-class rows (capped by how many there are)."""
    rate = check_fraction(rate, "poisoning rate")
    pool = np.flatnonzero(labels == target) if clean_label else np.flatnonzero(labels != target)
    wanted = round(rate * len(labels))
    if wanted > len(pool):
        kind = "target-class" if clean_label else "non-target"
        logger.warning(
            "poisoning rate %.3f asks for %d rows but only %d %s rows exist", rate, wanted, len(pool), kind
        )
        wanted = len(pool)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=wanted, replace=False))


def poison_dataset(
    dataset: Dataset,
    trigger: Trigger,
    target: int,
    rate: float = 0.1,
    seed: int = 0,
    image_column: str = "image",
    label_column: str = "label",
) -> Dataset:
    """Return a poisoned copy of ``dataset``: selected rows get the trigger and the target label.

    Dirty-label triggers poison ``round(rate * len(dataset))`` non-target rows and relabel them
    ``target``; clean-label triggers (``trigger.clean_label``, e.g. SIG) poison target-class rows
    and keep their labels. A boolean ``poisoned`` column marks the poisoned rows.

    Args:
        dataset: Image-classification data with an image and an integer label column.
        trigger: The trigger to stamp, applied at each image's own resolution.
        target: The attack's target class index.
        rate: Share of the whole dataset to poison, in (0, 1].
        seed: Seed of the row selection.

    Raises:
        ValueError: empty dataset, missing column, rate outside (0, 1], target out of range.
    """
    if len(dataset) == 0:
        raise ValueError("cannot poison an empty dataset")
    for column in (image_column, label_column):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no column {column!r}; columns: {dataset.column_names}")
    num_classes = getattr(dataset.features[label_column], "num_classes", None)
    labels = np.asarray(dataset[label_column])
    num_classes = num_classes or int(labels.max()) + 1
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < num_classes:
        raise ValueError(f"target class {target!r} is out of range for a dataset with {num_classes} classes")
    chosen = select_poison_indices(labels, int(target), rate, trigger.clean_label, seed)
    mask = np.zeros(len(dataset), dtype=bool)
    mask[chosen] = True

    def poison_batch(batch: dict, indices: list[int]) -> dict:
        hit = [k for k, i in enumerate(indices) if mask[i]]
        images = list(batch[image_column])
        labels_out = list(batch[label_column])
        if hit:
            for k, img in zip(hit, _stamp([images[k] for k in hit], trigger)):
                images[k] = img
                labels_out[k] = int(target)
        return {image_column: images, label_column: labels_out, "poisoned": [bool(mask[i]) for i in indices]}

    poisoned = dataset.map(
        poison_batch, with_indices=True, batched=True, batch_size=256, desc=f"poisoning ({trigger.name})"
    )
    logger.info(
        "poisoned %d of %d rows with %s -> class %d",
        int(mask.sum()),
        len(dataset),
        trigger.describe(),
        target,
    )
    return poisoned
