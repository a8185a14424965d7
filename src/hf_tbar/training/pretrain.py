"""Pretraining of a tiny CLIP: zero-shot classification on bundled data or your own, cached by recipe.

Every run ends with the zero-shot accuracy on rows the training never saw (the embedded test split, or a
stratified share held out of your rows), logged and written next to the weights as ``pretrain_metrics.json``;
a model that ends near chance is refused (:class:`~hf_tbar.errors.ModelAtChanceError`) and nothing is saved.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch.utils.data import TensorDataset
from transformers import CLIPModel

from ..data.embedded import TaskSpec, load_embedded_dataset
from ..data.pixels import dataset_to_tensors, normalize_pixels, validate_labels
from ..data.task_data import _carve
from ..errors import ConfigError, DataError, ModelAtChanceError
from ..io import atomic_output_dir, write_json
from ..metrics import chance_accuracy, near_chance, wilson_interval
from ..models.tiny_clip import TinyCLIPConfig, build_tiny_clip
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head, class_embeddings, encode_images
from .arguments import FinetuneConfig, finetune_config_of
from .augment import random_affine
from .cache import cached_checkpoint, recipe_key
from .loop import run_training
from .recipes import DEFAULT_TEXT_LEARNING_RATE_RATIO, PRETRAIN_RECIPES

__all__ = [
    "PRETRAIN_METRICS_FILE",
    "PretrainConfig",
    "pretrain_clip",
    "pretrained_clip_path",
    "zero_shot_correct",
]

logger = logging.getLogger(__name__)

#: The held-out evaluation every pretraining writes next to its weights.
PRETRAIN_METRICS_FILE = "pretrain_metrics.json"
#: The loss still counts as "at chance" above this share of ``ln(number of classes)``.
CHANCE_LOSS_SHARE = 0.97


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
    text_learning_rate_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the text tower, as a share of learning_rate. None: 0.1, except for the "
            "embedded digits (1.0, the recipe their cached models were trained with). At the full rate the text "
            "tower maps every class name to one embedding (cosine 1.0) within the first ~30 steps whenever the "
            "random vision tower's features do not yet tell the classes apart (letters, glyphs, coloured "
            "backgrounds), and the loss then sits at ln(classes) for hundreds of steps."
        },
    )

    def __post_init__(self) -> None:
        # FinetuneConfig validates the optimisation fields and names any bad one.
        self.finetune_config()
        ratio = self.text_learning_rate_ratio
        if ratio is not None and (isinstance(ratio, bool) or not (math.isfinite(ratio) and 0 <= ratio <= 1)):
            raise ConfigError(f"text_learning_rate_ratio must be in [0, 1] or None, got {ratio!r}")

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

    def text_ratio(self, own_rows: bool) -> float:
        """The text tower's share of the learning rate: ``text_learning_rate_ratio``, or when it is None,
        1.0 for the embedded digits (``own_rows`` False and ``dataset`` ``"digits"``) and 0.1 otherwise."""
        if self.text_learning_rate_ratio is not None:
            return self.text_learning_rate_ratio
        return 1.0 if self.dataset == "digits" and not own_rows else DEFAULT_TEXT_LEARNING_RATE_RATIO

    @classmethod
    def for_dataset(cls, dataset: str = "digits", **overrides) -> PretrainConfig:
        """The recipe of the embedded world ``dataset`` (:data:`~hf_tbar.training.recipes.PRETRAIN_RECIPES`); ``overrides`` win.

        Raises:
            ConfigError: ``dataset`` has no recipe.
        """
        if dataset not in PRETRAIN_RECIPES:
            raise ConfigError(f"no pretraining recipe for {dataset!r}; recipes: {sorted(PRETRAIN_RECIPES)}")
        return cls(dataset=dataset, **{**PRETRAIN_RECIPES[dataset], **overrides})


def pretrain_clip(
    config: PretrainConfig,
    output_dir: str | Path,
    train: Dataset | None = None,
    task: TaskSpec | None = None,
    image_column: str = "image",
    label_column: str = "label",
    held_out: Dataset | None = None,
    held_out_share: float = 0.1,
    force: bool = False,
) -> Path:
    """Build a tiny CLIP and teach it zero-shot classification (both towers trained), on the embedded
    ``config.dataset`` or on your own ``train`` rows and ``task``; then measure it on held-out rows.

    The loss is cross-entropy of image embeddings against the prompt-ensembled class embeddings,
    recomputed each step so the text tower learns too. Progress goes to the ``hf_tbar`` loggers: a line every
    10 steps (step, loss, seconds per step) at INFO, and a WARNING when the loss is still at chance
    (``ln(number of classes)``) a quarter of the way in. At the end the zero-shot accuracy on the held-out rows
    is logged and written to ``output_dir/pretrain_metrics.json`` with the chance level (``1 / classes``) and a
    90% Wilson interval; a model near chance (:func:`hf_tbar.metrics.near_chance`) is refused.

    Args:
        config: The recipe (``config.architecture.image_size`` is the input side, in pixels).
        output_dir: Where the checkpoint goes (written atomically: nothing is left there on failure).
        train: Training rows to use instead of the embedded train split: a poisoned copy of it, or your own
            image-classification rows (then ``task`` is required).
        task: The class names and templates of ``train`` (the tokenizer is built from their words).
        image_column / label_column: The columns of ``train`` (and of ``held_out``).
        held_out: Rows to measure the model on. Default: the embedded test split, or, with your own ``train``,
            a stratified share of it (``held_out_share``, drawn with ``config.seed``) left out of training.
        held_out_share: Share of each class of your ``train`` rows held out when ``held_out`` is not given, in
            ``[0, 0.5]`` (at least one row of every class with two or more); ``0`` trains on every row and
            measures on the training rows themselves (an optimistic figure, said so in the log and the file).
        force: Save a model that ends near chance (with a warning) instead of raising.

    Returns:
        ``output_dir``: a CLIP checkpoint (model, tokenizer, image processor) and ``pretrain_metrics.json``.

    Raises:
        ConfigError: ``train`` rows of your own without their ``task``, or a ``held_out_share`` outside
            ``[0, 0.5]``.
        DataError: a held-out label outside the task's classes.
        ModelAtChanceError: the held-out accuracy is near chance (and ``force`` is False); nothing is written.
    """
    if (train is None) != (task is None):
        raise ConfigError(
            "pretrain_clip needs train rows and their task=TaskSpec(...) together (or neither, for the embedded "
            f"{config.dataset!r}): rows without their task would be trained against another task's prompts"
        )
    if isinstance(held_out_share, bool) or not 0 <= held_out_share <= 0.5:
        raise ConfigError(f"held_out_share must be a share in [0, 0.5], got {held_out_share!r}")
    held_out_name, own_rows = "held_out", train is not None
    if train is None:
        dataset, task = load_embedded_dataset(
            config.dataset, image_size=config.architecture.image_size, seed=config.seed
        )
        train = dataset["train"]
        if held_out is None:  # the embedded train split stays whole: its weights do not depend on this
            held_out, held_out_name = dataset["test"], "test"
    elif held_out is None:
        train, held_out, held_out_name = _hold_out(train, label_column, held_out_share, config.seed)
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
    ratio = config.text_ratio(own_rows=own_rows)
    watch = _ChanceWatch(task.num_classes, config.steps)
    losses = run_training(
        model,
        params,
        TensorDataset(pixels, labels),
        loss_fn,
        config.finetune_config(),
        desc="pretraining",
        stop_when=watch,
        optimizer_factory=None if ratio == 1.0 else _text_scaled_adamw(model, config, ratio),
    )
    model.eval()
    if held_out is None:  # held_out_share=0: the training rows are all there is
        eval_pixels, eval_labels = pixels, labels
    else:
        eval_pixels, eval_labels = dataset_to_tensors(held_out, processor, image_column, label_column)
    validate_labels(eval_labels, task.num_classes, f"{held_out_name} labels")
    correct = zero_shot_correct(model, processor, task, eval_pixels, eval_labels)
    metrics = _metrics(held_out_name, correct, len(eval_labels), task, losses, watch.seconds())
    logger.info(
        "pretraining: zero-shot accuracy on %d %s rows %.1f%% (chance %.1f%%, %d classes)",
        metrics["total"],
        held_out_name.replace("_", "-"),
        100 * metrics["accuracy"],
        100 * metrics["chance_accuracy"],
        task.num_classes,
    )
    if metrics["near_chance"]:
        message = _chance_message(metrics, config)
        if not force:
            raise ModelAtChanceError(message)
        logger.warning("%s; saved anyway (force=True)", message)
    with atomic_output_dir(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        write_json(
            tmp / PRETRAIN_METRICS_FILE, {**metrics, "recipe": config.to_dict(), "task": task.to_dict()}
        )
    logger.info("saved CLIP checkpoint to %s", output_dir)
    return Path(output_dir)


def _text_scaled_adamw(
    model: CLIPModel, config: PretrainConfig, ratio: float
) -> Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]:
    """AdamW whose text-tower parameters (``text_model.*``, ``text_projection``) run at ``ratio`` x the rate."""
    text = {
        id(p) for name, p in model.named_parameters() if name.startswith(("text_model.", "text_projection"))
    }

    def build(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        groups = [
            {"params": [p for p in params if id(p) not in text]},
            {"params": [p for p in params if id(p) in text], "lr": config.learning_rate * ratio},
        ]
        return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)

    return build


@torch.no_grad()
def zero_shot_correct(
    model: CLIPModel, processor, task: TaskSpec, pixels: torch.Tensor, labels: torch.Tensor
) -> int:
    """How many of ``pixels`` (``(N, 3, H, W)`` in ``[0, 1]``) the zero-shot head of ``task`` gets right."""
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, task), processor
    )
    return int((classifier.predict(pixels) == labels).sum())


def _hold_out(
    train: Dataset, label_column: str, share: float, seed: int
) -> tuple[Dataset, Dataset | None, str]:
    """``(rows to train on, held-out rows or None, their name)``: a stratified, seeded ``share`` of each class."""
    if share == 0:
        logger.warning(
            "pretraining: held_out_share=0, so the accuracy reported is on the training rows (optimistic); "
            "pass held_out=rows or a share above 0 for a held-out figure"
        )
        return train, None, "train"
    if label_column not in train.column_names:
        raise DataError(f"the training rows have no column {label_column!r}; columns: {train.column_names}")
    parts = _carve(np.asarray(train[label_column]), ["validation"], share, seed)
    if len(parts["validation"]) == 0:
        raise DataError(
            f"cannot hold out rows of {len(train)} training rows (each class needs two or more): "
            "pass held_out=rows of your own"
        )
    logger.info(
        "pretraining: %d of %d rows held out (stratified, %.0f%% of each class, seed %d)",
        len(parts["validation"]),
        len(train),
        100 * share,
        seed,
    )
    return train.select(parts["train"]), train.select(parts["validation"]), "held_out"


class _ChanceWatch:
    """``stop_when`` hook of the pretraining: times the run and warns once if the loss is stuck at chance."""

    def __init__(self, num_classes: int, steps: int) -> None:
        self.num_classes = num_classes
        self.check_at = max(25, steps // 4)  # runs shorter than 26 steps are not judged
        self.recent: list[float] = []
        self.started = time.perf_counter()

    def __call__(self, step: int, loss: float) -> bool:
        self.recent = [*self.recent[-9:], loss]
        mean = sum(self.recent) / len(self.recent)
        chance = math.log(self.num_classes)
        if step == self.check_at and mean >= CHANCE_LOSS_SHARE * chance:
            logger.warning(
                "pretraining: after %d steps (%.0f s) the loss is %.3f, still at chance (ln %d = %.3f): the model "
                "has not started to tell the classes apart",
                step,
                self.seconds(),
                mean,
                self.num_classes,
                chance,
            )
        return False

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def _metrics(
    name: str, correct: int, total: int, task: TaskSpec, losses: list[float], seconds: float
) -> dict:
    low, high = wilson_interval(correct, total)
    tail = losses[-10:]
    return {
        "split": name,
        "accuracy": correct / total,
        "correct": correct,
        "total": total,
        "accuracy_interval_90": [low, high],
        "chance_accuracy": chance_accuracy(task.num_classes),
        "num_classes": task.num_classes,
        "near_chance": near_chance(correct, total, task.num_classes),
        "chance_loss": math.log(task.num_classes),
        "final_loss": sum(tail) / len(tail),
        "steps": len(losses),
        "train_seconds": seconds,
    }


def _chance_message(metrics: dict, config: PretrainConfig) -> str:
    return (
        f"the pretrained model is near chance: {metrics['correct']} of {metrics['total']} {metrics['split']} rows "
        f"right ({100 * metrics['accuracy']:.1f}%, chance {100 * metrics['chance_accuracy']:.1f}% with "
        f"{metrics['num_classes']} classes), final training loss {metrics['final_loss']:.3f} against "
        f"ln {metrics['num_classes']} = {metrics['chance_loss']:.3f} at chance. Nothing was saved. "
        + (
            "The loss never left chance: train for more steps (steps, warmup_steps) or check that the class names "
            "and templates describe the images"
            if metrics["final_loss"] >= CHANCE_LOSS_SHARE * metrics["chance_loss"]
            else "The training rows were learnt but the held-out ones were not (overfitting): use more rows, "
            "fewer steps, or augment=True" + ("" if config.augment else " (off in this recipe)")
        )
    )


def pretrained_clip_path(config: PretrainConfig | None = None) -> Path:
    """Path of the cached clean tiny CLIP for ``config``; trains and caches it on first use."""
    config = config or PretrainConfig()
    return cached_checkpoint("clean", config.cache_recipe(), lambda path: pretrain_clip(config, path))
