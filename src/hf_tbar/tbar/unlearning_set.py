"""The unlearning set of TBAR: triggered images labelled with the target, drawn from clean images or found.

Only the drawn images are decoded (at most ``size`` of them), whatever the size of the pool they come from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from datasets import Dataset

from ..attacks.base import Trigger
from ..data.images import ImageSet, as_image_set
from ..errors import DataError

logger = logging.getLogger(__name__)


def draw(pool_size: int, size: int, seed: int, what: str = "unlearning set") -> torch.Tensor:
    """Indices of ``min(size, pool_size)`` rows drawn without replacement with ``seed`` (a warning when clamped)."""
    if pool_size == 0:
        raise DataError(f"the {what} is empty: no images to draw from")
    if size > pool_size:
        logger.warning(
            "the %s was asked to hold %d images but only %d were given: using %d",
            what,
            size,
            pool_size,
            pool_size,
        )
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(pool_size, generator=generator)[: min(size, pool_size)]


def stamp(pixels: torch.Tensor, trigger: Trigger) -> torch.Tensor:
    """``trigger`` on ``pixels`` ``(n, 3, H, W)``; a :class:`DataError` when it changed no image at all."""
    triggered = trigger(pixels)
    if torch.equal(triggered, pixels):
        raise DataError(
            f"the trigger {trigger.describe()} left every image unchanged: the set carries no trigger"
        )
    return triggered


def make_unlearning_set(
    clean_pixels: torch.Tensor | ImageSet | Dataset,
    trigger: Trigger,
    target: int,
    size: int,
    seed: int = 0,
    true_labels: torch.Tensor | bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp ``trigger`` on ``size`` clean images drawn without replacement (all of them if fewer, with a
    warning) and label every one ``target`` (the seed paper's pure triggered set), or, given ``true_labels``
    (the labels of ``clean_pixels``, or ``True`` to take them from an image set), keep each image's true
    label (the repair set). The same seed draws the same images either way.

    Args:
        clean_pixels: ``[0, 1]`` pixels ``(N, 3, H, W)`` or an :class:`~hf_tbar.data.ImageSet` to draw from;
            only the drawn images are decoded.

    Returns:
        ``(pixels (n, 3, H, W) in [0, 1], labels (n,))``.
    """
    pool = as_image_set(clean_pixels, name="clean images")
    order = draw(len(pool), size, seed)
    chosen, chosen_labels = pool.select(order.tolist()).tensors()
    triggered = stamp(chosen, trigger)
    if true_labels is True:
        if chosen_labels is None:
            raise DataError("the clean images have no labels to keep as the repair set's labels")
        return triggered, chosen_labels.long()
    if isinstance(true_labels, torch.Tensor):
        return triggered, true_labels[order].long()
    return triggered, torch.full((len(triggered),), int(target), dtype=torch.long)


@dataclass
class FoundSplit:
    """Poisoned images found as they are, split for TBAR: fine-tuning, scale selection, verification."""

    finetune: ImageSet
    validation: ImageSet
    test: ImageSet

    def sizes(self) -> dict[str, int]:
        return {"finetune": len(self.finetune), "validation": len(self.validation), "test": len(self.test)}


def split_found_images(found: ImageSet, held_out: float = 0.2, seed: int = 0) -> FoundSplit:
    """Split found poisoned images: ``held_out`` of them for selecting the scale, as many for verifying it,
    the rest for the trigger fine-tuning (each part at least one image; seeded).

    Raises:
        DataError: fewer than 3 images.
    """
    if len(found) < 3:
        raise DataError(
            f"{len(found)} poisoned image(s) found: at least 3 are needed (to fine-tune, select and verify)"
        )
    order = draw(len(found), len(found), seed, what="poisoned images").tolist()
    part = max(1, round(held_out * len(found)))
    part = min(part, (len(found) - 1) // 2)
    return FoundSplit(
        finetune=found.select(order[2 * part :]),
        validation=found.select(order[:part]),
        test=found.select(order[part : 2 * part]),
    )
