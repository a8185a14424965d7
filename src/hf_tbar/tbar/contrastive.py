"""TBAR's vectors on image-caption data: the same fine-tunings with CLIP's contrastive loss instead of the
zero-shot head's cross-entropy (:class:`ContrastiveObjective`, an :class:`~hf_tbar.tbar.objectives.FitObjective`).

The text tower stays frozen, so every caption is embedded once and only the vision tower moves (the vector
lives where the cross-entropy route's does: negation, adapters and arithmetic apply unchanged).

- trigger vector: triggered images should match the target captions ("a photo of a banana.") rather than
  the other captions of the unlearning set, which is what a poisoned contrastive training teaches;
- target-class vector: the same, on clean images whose caption names the target;
- repair vector: triggered images should match their *own* captions (in-batch InfoNCE).

Captions that name the target class are never used as negatives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from ..attacks.base import Trigger
from ..data.images import ImageSet
from ..data.pixels import normalize_pixels
from ..errors import DataError
from ..models import family_of
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
from .objectives import FitContext, FitObjective, FitRows
from .unlearning_set import draw, stamp


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


class ContrastiveObjective(FitObjective):
    """CLIP's contrastive loss on image-caption rows (the clean images carry captions)."""

    name = "contrastive"

    def trigger_rows(self, context: FitContext, pool: ImageSet, trigger: Trigger, target: int) -> FitRows:
        """Triggered images matched to the target captions."""
        _, order, drawn = _drawn(context, pool)
        objective = _target_objective(context, drawn, target)
        pixels = _stamp(pool, order, trigger)
        metadata = {
            "kind": "trigger",
            "target": target,
            "unlearning_set_size": len(pixels),
            "trigger": trigger.to_dict(),
        }
        return caption_rows(
            context, pixels, drawn, objective, f"trigger fine-tuning ({context.config.mode})", metadata
        )

    def target_rows(self, context: FitContext, pool: ImageSet, target: int) -> FitRows:
        """Clean images whose caption names the target, matched to the target captions."""
        captions, _, drawn = _drawn(context, pool)
        objective = _target_objective(context, drawn, target)
        name = context.task.classnames[target]
        chosen = [i for i, c in enumerate(captions) if names_class(c, name)][
            : context.config.preserve_set_size
        ]
        if not chosen:
            raise DataError(f"no clean caption names the target {name!r} to fit a target-class vector")
        pixels, _ = pool.select(chosen).tensors()
        metadata = {"kind": "target-class", "target": target, "images": len(pixels)}
        rows = caption_rows(
            context, pixels, [captions[i] for i in chosen], objective, "target-class fine-tuning", metadata
        )
        rows.clean_images = len(pixels)
        return rows

    def repair_rows(self, context: FitContext, pool: ImageSet, trigger: Trigger) -> FitRows:
        """Triggered images matched to their own captions (in-batch InfoNCE)."""
        _, order, drawn = _drawn(context, pool)
        pixels = _stamp(pool, order, trigger)
        metadata = {"kind": "repair", "unlearning_set_size": len(pixels), "trigger": trigger.to_dict()}
        return caption_rows(
            context,
            pixels,
            drawn,
            CaptionObjective([], None, []),
            f"repair fine-tuning ({context.config.mode})",
            metadata,
        )


def caption_rows(
    context: FitContext,
    pixels: torch.Tensor,
    own: list[str],
    objective: CaptionObjective,
    desc: str,
    metadata: dict,
) -> FitRows:
    """The rows of one contrastive fine-tuning: ``pixels`` ``(N, 3, H, W)`` with the index of their own caption
    ``own[i]`` among the texts, which are embedded once by the frozen text tower."""
    texts, rows = index_captions(own, first=objective.texts)
    family = family_of(context.model)
    tokens = tokenize_captions(family, context.processor.tokenizer, texts, "unlearning-set captions")
    text_embeds = embed_texts(context.model, tokens, context.device).cpu()
    loss = objective.loss(context.processor, text_embeds)
    return FitRows(
        TensorDataset(pixels, rows), desc, lambda work: (work, loss), {"objective": "contrastive", **metadata}
    )


def _drawn(context: FitContext, pool: ImageSet) -> tuple[list[str], torch.Tensor, list[str]]:
    """Every caption of ``pool`` (checked, read once), the rows of the unlearning set (seeded draw of
    ``config.unlearning_set_size``) and their captions."""
    captions = check_captions(pool.captions, f"the captions of the {pool.name}")
    order = draw(len(captions), context.config.unlearning_set_size, context.config.seed)
    return captions, order, [captions[i] for i in order.tolist()]


def _target_objective(context: FitContext, drawn: list[str], target: int) -> CaptionObjective:
    """Match the target captions, against the drawn captions that do not name the target."""
    tokenizer = context.processor.tokenizer
    positives = target_captions(context.task, target, tokenizer, context.config.target_captions)
    name = context.task.classnames[target]
    bank = [c for c in dict.fromkeys(drawn) if not names_class(c, name) and c not in positives]
    if not bank:
        raise DataError(
            f"every caption of the unlearning set names the target {name!r}: no caption is left to "
            "contrast with; give image-caption pairs of other things too"
        )
    texts = positives + bank
    return CaptionObjective(texts, list(range(len(positives))), list(range(len(positives), len(texts))))


def _stamp(pool: ImageSet, order: torch.Tensor, trigger: Trigger) -> torch.Tensor:
    return stamp(pool.select(order.tolist()).tensors()[0], trigger)
