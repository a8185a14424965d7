"""Pretraining of the embedded tiny CLIP: zero-shot classification on bundled data, cached by recipe."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch.nn.functional as F
from datasets import Dataset
from torch.utils.data import TensorDataset

from ..data.embedded import TaskSpec, load_embedded_dataset
from ..data.pixels import dataset_to_tensors, normalize_pixels
from ..errors import ConfigError
from ..models.tiny_clip import TinyCLIPConfig, build_tiny_clip, save_clip
from ..zeroshot import class_embeddings, encode_images
from .arguments import FinetuneConfig, finetune_config_of
from .augment import random_affine
from .cache import cached_checkpoint, recipe_key
from .loop import run_training

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """Recipe of the embedded "foundation" CLIP. Its hash keys the cache, so it is trained once."""

    dataset: str = field(default="digits", metadata={"help": "Embedded dataset name."})
    architecture: TinyCLIPConfig = field(
        default_factory=TinyCLIPConfig, metadata={"help": "Tiny CLIP shape."}
    )
    steps: int = field(default=600, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=128, metadata={"help": "Images per step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    augment: bool = field(default=True, metadata={"help": "Random affine jitter of training images."})
    seed: int = field(default=0, metadata={"help": "Seed of init, split, shuffling and augmentation."})

    def __post_init__(self) -> None:
        # FinetuneConfig validates the optimisation fields and names any bad one.
        self.finetune_config()

    def finetune_config(self) -> FinetuneConfig:
        return finetune_config_of(self)

    def to_dict(self) -> dict:
        return asdict(self)

    def cache_recipe(self) -> dict:
        """What defines the trained model (:func:`~hf_tbar.training.cache.cached_checkpoint`'s recipe)."""
        return {"kind": "pretrain", "world": self.world, **self.to_dict()}

    @property
    def world(self) -> str:
        """The kind of model this recipe makes, ``<dataset>@<input side>`` (``"digits@32"``): what a detection
        calibration is measured for (:mod:`hf_tbar.detection.calibration`)."""
        return f"{self.dataset}@{self.architecture.image_size}"

    def cache_key(self) -> str:
        return recipe_key(self.cache_recipe())


def pretrain_clip(
    config: PretrainConfig,
    output_dir: str | Path,
    train: Dataset | None = None,
    task: TaskSpec | None = None,
    image_column: str = "image",
    label_column: str = "label",
) -> Path:
    """Build a tiny CLIP and teach it zero-shot classification (both towers trained), on the embedded
    ``config.dataset`` or on your own ``train`` rows and ``task``.

    The loss is cross-entropy of image embeddings against the prompt-ensembled class embeddings,
    recomputed each step so the text tower learns too. Saves a complete checkpoint at ``output_dir``.

    Args:
        config: The recipe (``config.architecture.image_size`` is the input side, in pixels).
        output_dir: Where the checkpoint goes (written atomically).
        train: Training rows to use instead of the embedded train split: a poisoned copy of it, or your own
            image-classification rows (then ``task`` is required).
        task: The class names and templates of ``train`` (the tokenizer is built from their words).
        image_column / label_column: The columns of ``train``.

    Raises:
        ConfigError: ``train`` rows of your own without their ``task``.
    """
    if (train is None) != (task is None):
        raise ConfigError(
            "pretrain_clip needs train rows and their task=TaskSpec(...) together (or neither, for the embedded "
            f"{config.dataset!r}): rows without their task would be trained against another task's prompts"
        )
    if train is None:
        dataset, task = load_embedded_dataset(
            config.dataset, image_size=config.architecture.image_size, seed=config.seed
        )
        train = dataset["train"]
    model, processor = build_tiny_clip(
        config.architecture, [*task.classnames, *task.templates], seed=config.seed
    )
    pixels, labels = dataset_to_tensors(train, processor, image_column, label_column)
    tokenizer = processor.tokenizer

    def loss_fn(clip, batch):
        images, targets = batch
        if config.augment:
            images = random_affine(images)
        features = encode_images(clip, normalize_pixels(images, processor))
        head = class_embeddings(clip, tokenizer, task)
        return F.cross_entropy(clip.logit_scale.exp() * features @ head.T, targets)

    params = [p for p in model.parameters() if p.requires_grad]
    run_training(
        model, params, TensorDataset(pixels, labels), loss_fn, config.finetune_config(), desc="pretraining"
    )
    model.eval()
    return save_clip(model, processor, output_dir)


def pretrained_clip_path(config: PretrainConfig | None = None) -> Path:
    """Path of the cached clean tiny CLIP for ``config``; trains and caches it on first use."""
    config = config or PretrainConfig()
    return cached_checkpoint("clean", config.cache_recipe(), lambda path: pretrain_clip(config, path))
