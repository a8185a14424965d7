"""TBAR's vectors on image-caption data: the same fine-tunings with CLIP's contrastive loss instead of the
zero-shot head's cross-entropy (mixin of :class:`~hf_tbar.BackdoorUnlearner`).

The text tower stays frozen, so every caption is embedded once and only the vision tower moves (the vector
lives where the cross-entropy route's does: negation, adapters and arithmetic apply unchanged).

- trigger vector: triggered images should match the target captions ("a photo of a banana.") rather than
  the other captions of the unlearning set, which is what a poisoned contrastive training teaches;
- target-class vector: the same, on clean images whose caption names the target;
- repair vector: triggered images should match their *own* captions (in-batch InfoNCE).

Captions that name the target class are never used as negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from ..attacks.base import Trigger
from ..data.images import ImageSet
from ..data.pixels import normalize_pixels
from ..errors import DataError
from ..models import family_of
from ..task_vector import TaskVector
from ..training.losses import contrastive_loss, positive_text_loss
from ..zeroshot import encode_images
from .captions import (
    check_captions,
    embed_texts,
    index_captions,
    names_class,
    target_captions,
    tokenize_captions,
)
from .unlearning_set import draw, stamp

logger = logging.getLogger(__name__)


@dataclass
class CaptionObjective:
    """What one contrastive fine-tuning matches: ``texts`` (embedded once), the indices every image should
    match (``positives``; ``None``: each image its own caption) and those it should not (``negatives``)."""

    texts: list[str]
    positives: list[int] | None
    negatives: list[int]

    def loss(self, processor, text_embeds: torch.Tensor) -> Callable:
        """``loss(module, (pixels, own caption index))`` for :func:`~hf_tbar.training.loop.run_training`."""

        def compute(module, batch):
            pixels, own = batch
            images = encode_images(module, normalize_pixels(pixels, processor))
            texts = text_embeds.to(images.device, images.dtype)
            scale = family_of(module).logit_scale(module).detach()
            if self.positives is None:
                return contrastive_loss(images, texts[own], scale, groups=own)
            return positive_text_loss(images, texts[self.positives], texts[self.negatives], scale)

        return compute


class CaptionVectorFitting:
    """The contrastive route of :class:`~hf_tbar.tbar.vector_fitting.VectorFitting` (used when the clean images
    carry captions)."""

    def _caption_vector(
        self, pixels: torch.Tensor, own: list[str], objective: CaptionObjective, desc: str
    ) -> TaskVector:
        texts, rows = index_captions(own, first=objective.texts)
        tokens = tokenize_captions(self.family, self.processor.tokenizer, texts, "unlearning-set captions")
        text_embeds = embed_texts(self.model, tokens, self.device).cpu()

        def objective_of(work):
            return work, objective.loss(self.processor, text_embeds)

        vector = self._finetune_vector(TensorDataset(pixels, rows), desc=desc, objective=objective_of)
        vector.metadata["objective"] = "contrastive"
        return vector

    def _drawn(self, pool: ImageSet) -> tuple[list[str], torch.Tensor, list[str]]:
        """Every caption of ``pool`` (checked, read once), the rows of the unlearning set (seeded draw of
        ``config.unlearning_set_size``) and their captions."""
        captions = check_captions(pool.captions, f"the captions of the {pool.name}")
        order = draw(len(captions), self.config.unlearning_set_size, self.config.seed)
        return captions, order, [captions[i] for i in order.tolist()]

    def _target_objective(self, drawn: list[str], target: int) -> CaptionObjective:
        """Match the target captions, against the drawn captions that do not name the target."""
        positives = target_captions(self.task, target, self.processor.tokenizer, self.config.target_captions)
        name = self.task.classnames[target]
        bank = [c for c in dict.fromkeys(drawn) if not names_class(c, name) and c not in positives]
        if not bank:
            raise DataError(
                f"every caption of the unlearning set names the target {name!r}: no caption is left to "
                "contrast with; give image-caption pairs of other things too"
            )
        texts = positives + bank
        return CaptionObjective(texts, list(range(len(positives))), list(range(len(positives), len(texts))))

    def fit_captioned_trigger_vector(self, trigger: Trigger, target: int, pool: ImageSet) -> TaskVector:
        """Trigger vector from image-caption data: triggered images matched to the target captions."""
        _, order, drawn = self._drawn(pool)
        objective = self._target_objective(drawn, target)
        pixels = self._stamp(pool, order, trigger)
        vector = self._caption_vector(pixels, drawn, objective, f"trigger fine-tuning ({self.config.mode})")
        vector.metadata.update(
            {
                "kind": "trigger",
                "target": target,
                "unlearning_set_size": len(pixels),
                "trigger": trigger.to_dict(),
            }
        )
        return vector

    def fit_captioned_target_vector(self, pool: ImageSet, target: int) -> TaskVector:
        """Target-class vector from image-caption data: clean images whose caption names the target."""
        captions, _, drawn = self._drawn(pool)
        objective = self._target_objective(drawn, target)
        name = self.task.classnames[target]
        chosen = [i for i, c in enumerate(captions) if names_class(c, name)][: self.config.preserve_set_size]
        if not chosen:
            raise DataError(f"no clean caption names the target {name!r} to fit a target-class vector")
        pixels, _ = pool.select(chosen).tensors()
        vector = self._caption_vector(
            pixels, [captions[i] for i in chosen], objective, "target-class fine-tuning"
        )
        vector.metadata.update({"kind": "target-class", "target": target, "images": len(pixels)})
        return vector

    def fit_captioned_repair_vector(self, trigger: Trigger, pool: ImageSet) -> TaskVector:
        """Repair vector from image-caption data: triggered images matched to their own captions."""
        _, order, drawn = self._drawn(pool)
        pixels = self._stamp(pool, order, trigger)
        vector = self._caption_vector(
            pixels, drawn, CaptionObjective([], None, []), f"repair fine-tuning ({self.config.mode})"
        )
        vector.metadata.update(
            {"kind": "repair", "unlearning_set_size": len(pixels), "trigger": trigger.to_dict()}
        )
        return vector

    @staticmethod
    def _stamp(pool: ImageSet, order: torch.Tensor, trigger: Trigger) -> torch.Tensor:
        return stamp(pool.select(order.tolist()).tensors()[0], trigger)
