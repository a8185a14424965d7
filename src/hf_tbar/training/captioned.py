"""Contrastive pretraining of a tiny CLIP on the embedded captioned world (CLIP's InfoNCE on image-caption
pairs, both towers trained), cached by recipe hash like the digits model; and its zero-shot accuracy on the
held-out tasks the captions never labelled."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ..data.captioned import HELD_OUT_TASKS, caption_corpus, random_scenes, render_pairs, task_labels
from ..data.pixels import normalize_pixels
from ..models.tiny_clip import TinyCLIPConfig, build_tiny_clip, save_clip
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head, encode_images, encode_texts
from .arguments import FinetuneConfig, finetune_config_of
from .augment import random_affine
from .cache import cached_checkpoint, recipe_key
from .loop import run_training
from .losses import contrastive_loss

logger = logging.getLogger(__name__)

__all__ = [
    "CaptionPretrainConfig",
    "captioned_clip_path",
    "pretrain_captioned_clip",
    "train_contrastive",
    "zero_shot_accuracies",
]


@dataclass(frozen=True)
class CaptionPretrainConfig:
    """Recipe of the captioned "foundation" CLIP. Its hash keys the cache, so it is trained once."""

    architecture: TinyCLIPConfig = field(
        default_factory=TinyCLIPConfig, metadata={"help": "Tiny CLIP shape."}
    )
    pairs: int = field(default=20000, metadata={"help": "Image-caption pairs generated (one scene each)."})
    steps: int = field(default=2500, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=128, metadata={"help": "Pairs per step (the InfoNCE negatives)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    augment: bool = field(default=False, metadata={"help": "Random affine jitter of the images."})
    seed: int = field(default=0, metadata={"help": "Seed of the scenes, captions, init and shuffling."})

    def __post_init__(self) -> None:
        self.finetune_config()  # a bad optimisation value is named here, not after the data is generated

    def finetune_config(self) -> FinetuneConfig:
        return finetune_config_of(self)

    def cache_recipe(self) -> dict:
        return {"kind": "captioned-pretrain", "world": self.world, **asdict(self)}

    @property
    def world(self) -> str:
        """The kind of model this recipe makes (see :attr:`PretrainConfig.world`)."""
        return f"captions@{self.architecture.image_size}"

    def cache_key(self) -> str:
        return recipe_key(self.cache_recipe())


def train_contrastive(
    model,
    processor,
    pixels: torch.Tensor,
    captions: list[str],
    config: FinetuneConfig,
    augment: bool = False,
    desc: str = "contrastive training",
) -> list[float]:
    """Train both towers of ``model`` in place with CLIP's symmetric InfoNCE on ``(pixels (N, 3, H, W) in
    [0, 1], captions)``; identical captions in a batch count as positives of each other. Returns the losses."""
    tokens = processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    _, groups = torch.unique(tokens["input_ids"], dim=0, return_inverse=True)  # same caption, same group

    def loss_fn(clip, batch):
        images, ids, mask, group = batch
        if augment:
            images = random_affine(images)
        image_embeds = encode_images(clip, normalize_pixels(images, processor))
        text_embeds = encode_texts(clip, ids, mask)
        return contrastive_loss(
            image_embeds, text_embeds, clip.logit_scale.exp().clamp(max=100), groups=group
        )

    for param in model.parameters():
        param.requires_grad_(True)
    dataset = TensorDataset(pixels, tokens["input_ids"], tokens["attention_mask"], groups)
    params = [p for p in model.parameters() if p.requires_grad]
    return run_training(model, params, dataset, loss_fn, config, desc=desc)


def pretrain_captioned_clip(config: CaptionPretrainConfig, output_dir: str | Path) -> Path:
    """Build a tiny CLIP and train it with CLIP's symmetric InfoNCE on ``config.pairs`` generated pairs.
    Saves a complete checkpoint."""
    model, processor = build_tiny_clip(config.architecture, caption_corpus(), seed=config.seed)
    scenes = random_scenes(config.pairs, config.seed)
    pixels, captions = render_pairs(scenes, config.seed, side=config.architecture.image_size)
    train_contrastive(
        model, processor, pixels, captions, config.finetune_config(), config.augment, "captioned pretraining"
    )
    model.eval()
    return save_clip(model, processor, output_dir)


def captioned_clip_path(config: CaptionPretrainConfig | None = None) -> Path:
    """Path of the cached captioned tiny CLIP for ``config``; trains and caches it on first use."""
    config = config or CaptionPretrainConfig()
    return cached_checkpoint(
        "captioned", config.cache_recipe(), lambda path: pretrain_captioned_clip(config, path)
    )


@torch.no_grad()
def zero_shot_accuracies(model, processor, count: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Zero-shot accuracy per held-out task (:data:`~hf_tbar.data.captioned.HELD_OUT_TASKS`) on ``count``
    fresh scenes (another seed than pretraining's), each task scored on the scenes it applies to."""
    scenes = random_scenes(count, seed)
    pixels, _ = render_pairs(scenes, seed, side=model.config.vision_config.image_size)
    accuracies = {}
    for name, task in HELD_OUT_TASKS.items():
        labels = task_labels(scenes, name)
        keep = labels >= 0
        classifier = ZeroShotClassifier.from_processor(
            model, build_zero_shot_head(model, processor.tokenizer, task), processor
        )
        predictions = classifier.predict(pixels[keep])
        accuracies[name] = float((predictions == labels[keep]).float().mean())
    return accuracies
