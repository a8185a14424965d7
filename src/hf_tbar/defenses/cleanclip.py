"""CleanCLIP (Bansal et al., ICCV 2023): fine-tune on clean image/caption pairs with CLIP's multimodal
contrastive loss plus an in-modality self-supervised loss between each sample and its augmented view.

With image-caption data (``DefenseData.clean_captions``, CleanCLIP's native setting) the images' own
captions are used and their augmented view drops or swaps a word (EDA's random deletion and swap).

In the classification setting the captions are built from the task: each image gets its
class name in a random prompt template, and the caption's augmented view is the same class in another
template (CleanCLIP uses EDA text augmentation; with a handful of templates a template swap is the
closest equivalent). Images are augmented with random affine jitter. With few classes a batch holds
many pairs of the same class, so the contrastive targets treat every same-class (multimodal) or
same-caption (text) pair as a positive instead of only the diagonal; image views stay instance-level.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import TensorDataset
from transformers import CLIPModel

from ..data.pixels import normalize_pixels
from ..models import family_of
from ..tbar.captions import augment_caption, index_captions, tokenize_captions
from ..training.augment import random_affine
from ..training.loop import FinetuneConfig, run_training
from ..training.losses import contrastive_loss
from ..zeroshot import encode_images, encode_texts, unwrap_clip
from .base import DefenseConfig, DefenseData, DefenseResult, register_defense


def caption_pairs(
    labels: torch.Tensor, num_templates: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into ``TaskSpec.prompts()`` (class-major): a random template per label, and a *different*
    template of the same class for the augmented view (the same one when there is only one template).

    Returns:
        ``(caption ids (B,), augmented caption ids (B,))``.
    """
    first = torch.randint(num_templates, labels.shape, generator=generator).to(labels.device)
    if num_templates > 1:
        shift = torch.randint(1, num_templates, labels.shape, generator=generator).to(labels.device)
    else:
        shift = torch.zeros_like(first)
    second = (first + shift) % num_templates
    return labels * num_templates + first, labels * num_templates + second


@dataclass
class CleanCLIPConfig(FinetuneConfig, DefenseConfig):
    """CleanCLIP fine-tuning on clean pairs (AdamW, small learning rate; loss weights 1 and 1 as in the paper)."""

    steps: int = field(default=100, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=64, metadata={"help": "Image/caption pairs per micro-batch and process."})
    learning_rate: float = field(
        default=1e-4, metadata={"help": "Peak AdamW learning rate (that of the other fine-tuning defenses)."}
    )
    multimodal_weight: float = field(
        default=1.0, metadata={"help": "Weight of the image-caption contrastive loss (lambda_1)."}
    )
    self_supervised_weight: float = field(
        default=1.0, metadata={"help": "Weight of the in-modality self-supervised loss (lambda_2)."}
    )
    train_text_tower: bool = field(
        default=True, metadata={"help": "Fine-tune the text tower too (CleanCLIP trains both encoders)."}
    )
    max_shift: float = field(
        default=0.1, metadata={"help": "Image augmentation: largest shift, share of the side."}
    )
    max_rotation: float = field(
        default=10.0, metadata={"help": "Image augmentation: largest rotation, degrees."}
    )
    max_scale: float = field(default=0.1, metadata={"help": "Image augmentation: largest relative zoom."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("multimodal_weight", "self_supervised_weight", "max_shift", "max_rotation", "max_scale"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.multimodal_weight == 0 and self.self_supervised_weight == 0:
            raise ValueError("multimodal_weight and self_supervised_weight cannot both be 0")


def _trainable(model: CLIPModel, train_text_tower: bool) -> list[nn.Parameter]:
    family = family_of(model)
    prefixes = family.vision_prefixes + (family.text_prefixes if train_text_tower else ())
    for param in model.parameters():
        param.requires_grad_(False)
    params = [p for name, p in model.named_parameters() if name.startswith(prefixes) and "logit_" not in name]
    for param in params:
        param.requires_grad_(True)
    return params


def _caption_views(data: DefenseData, family, seed: int):
    """Token ids of the captions to learn from and of one augmented view of each, and per-image caption
    ids: the task's prompt templates (classification data) or the data's own captions (native setting)."""
    if data.clean_captions is None:
        return None, family.tokenize(data.processor.tokenizer, data.task.prompts())
    generator = random.Random(seed)
    texts, own = index_captions(data.clean_captions)
    views = [augment_caption(text, generator) for text in texts]
    tokens = tokenize_captions(family, data.processor.tokenizer, texts + views, "clean captions")
    return own, tokens


@register_defense("cleanclip", CleanCLIPConfig)
def cleanclip(model: CLIPModel, data: DefenseData, config: CleanCLIPConfig) -> DefenseResult:
    """CleanCLIP: multimodal contrastive + in-modality self-supervised loss on augmented clean pairs (the
    data's own captions when it has them, else captions built from the task's labels)."""
    params = _trainable(model, config.train_text_tower)
    family = family_of(model)
    own, tokens = _caption_views(data, family, config.seed)
    num_templates = len(data.task.templates)
    processor = data.processor

    def loss(module: nn.Module, batch: tuple) -> torch.Tensor:
        pixels, labels, caption = batch
        clip = unwrap_clip(module)
        ids = tokens["input_ids"].to(labels.device)
        mask = tokens.get("attention_mask", torch.ones_like(tokens["input_ids"])).to(labels.device)
        if own is None:
            captions, augmented = caption_pairs(labels, num_templates)
            groups = labels
        else:  # the first half of the tokens are the captions, the second their augmented views
            captions, augmented, groups = caption, caption + len(ids) // 2, caption
        augment = random_affine(pixels, config.max_shift, config.max_rotation, config.max_scale)
        images = encode_images(clip, normalize_pixels(pixels, processor))
        images_aug = encode_images(clip, normalize_pixels(augment, processor))
        texts = encode_texts(clip, ids[captions], mask[captions])
        texts_aug = encode_texts(clip, ids[augmented], mask[augmented])
        scale = family.logit_scale(clip).detach()
        multimodal = contrastive_loss(images, texts, scale, groups=groups)
        self_supervised = (
            contrastive_loss(images, images_aug, scale)
            + contrastive_loss(texts, texts_aug, scale, groups=captions)
        ) / 2
        return config.multimodal_weight * multimodal + config.self_supervised_weight * self_supervised

    rows = own if own is not None else torch.zeros_like(data.clean_labels)
    dataset = TensorDataset(data.clean_pixels, data.clean_labels, rows)
    losses = run_training(model, params, dataset, loss, config, desc="CleanCLIP")
    return DefenseResult(
        model=model,
        clean_images_used=data.num_clean,
        finetune_steps=len(losses),
        details={"text_tower_trained": config.train_text_tower, "captions": own is not None},
    )
