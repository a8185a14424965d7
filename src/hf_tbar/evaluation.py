"""Evaluation of a zero-shot classifier on clean and triggered data: CA, ASR, per-class accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from datasets import Dataset

from .attacks.base import Trigger
from .data.embedded import TaskSpec
from .data.images import ImageSet, as_image_set
from .data.pixels import validate_pixels
from .errors import DataError, ModelAtChanceError
from .memory import trim_heap
from .metrics import attack_success_rate, chance_accuracy, clean_accuracy, near_chance, per_class_accuracy
from .zeroshot import ZeroShotClassifier, build_zero_shot_head


@dataclass
class EvalResult:
    """Metrics of one model on one split. Accuracies are shares in [0, 1].

    Attributes:
        clean_accuracy: Top-1 accuracy on clean images (CA).
        attack_success_rate: ASR on triggered non-target images, or None without a trigger.
        target_class_accuracy: Accuracy on clean images of the target class, or None without a target.
        per_class_accuracy: Clean accuracy per class index.
        num_examples: Images evaluated.
        num_triggered: Triggered images the ASR was measured on (non-target images, or poisoned ones found).
        num_target: Clean images of the target class (the target-class accuracy's denominator).
    """

    clean_accuracy: float
    attack_success_rate: float | None = None
    target_class_accuracy: float | None = None
    per_class_accuracy: list[float] = field(default_factory=list)
    num_examples: int = 0
    num_triggered: int | None = None
    num_target: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def num_correct(self) -> int:
        """Clean images classified right (``clean_accuracy x num_examples``, rounded)."""
        return round(self.clean_accuracy * self.num_examples)

    def near_chance(self, num_classes: int) -> bool:
        """Whether this clean accuracy is no evidence of solving a ``num_classes``-class task
        (:func:`hf_tbar.metrics.near_chance`)."""
        return near_chance(self.num_correct, self.num_examples, num_classes)

    def summary(self) -> str:
        parts = [f"CA {100 * self.clean_accuracy:.1f}%"]
        if self.attack_success_rate is not None:
            parts.append(f"ASR {100 * self.attack_success_rate:.1f}%")
        if self.target_class_accuracy is not None:
            parts.append(f"target-class acc {100 * self.target_class_accuracy:.1f}%")
        return ", ".join(parts)


#: Images per evaluation batch: bounds the memory of a pass whatever the split's size.
EVAL_BATCH_SIZE = 128


def predict_batches(classifier: ZeroShotClassifier, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted class indices ``(N,)`` of ``pixels`` ``(N, 3, H, W)``, ``batch_size`` images per forward pass,
    with the freed heap given back after each pass (:func:`~hf_tbar.memory.trim_heap`): the resident memory of
    a long evaluation then stays at that of one batch instead of drifting up with the number of images."""
    preds = []
    for start in range(0, len(pixels), batch_size):
        preds.append(classifier.predict(pixels[start : start + batch_size], batch_size))
        trim_heap()
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def evaluate_classifier(
    classifier: ZeroShotClassifier,
    pixels: torch.Tensor | ImageSet | Dataset,
    labels: torch.Tensor | None = None,
    trigger: Trigger | None = None,
    target: int | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
    triggered: ImageSet | None = None,
) -> EvalResult:
    """CA, per-class accuracy, and (given a trigger and target) ASR and target-class accuracy, streamed.

    Images are read ``batch_size`` at a time (a ``datasets.Dataset`` is decoded batch by batch), so memory
    does not grow with the number of images; only the predicted class indices are kept.

    Args:
        classifier: The zero-shot classifier to evaluate.
        pixels: Clean images: ``[0, 1]`` pixels ``(N, 3, H, W)`` with ``labels`` ``(N,)``, or an
            :class:`~hf_tbar.data.ImageSet` / ``datasets.Dataset`` that carries its labels.
        trigger: Stamped on the non-target images of each batch to measure ASR.
        target: The attack's target class.
        batch_size: Images per forward pass.
        triggered: Images that already carry the trigger (e.g. poisoned images found in the wild): ASR is
            then the share of them classified as ``target`` (their true class being unknown).
    """
    num_classes = classifier.head.shape[0]
    clean = as_image_set(pixels if labels is None else (pixels, labels), name="evaluation images")
    clean.check(num_classes)
    clean.require_labels()
    stamp = trigger is not None and target is not None and triggered is None
    preds, truths, flipped, flipped_truths = [], [], [], []
    for batch, batch_labels in clean.batches(batch_size):
        validate_pixels(batch, "evaluation images")
        preds.append(predict_batches(classifier, batch, batch_size))
        truths.append(batch_labels)
        if stamp:
            keep = batch_labels != int(target)
            if keep.any():
                flipped.append(predict_batches(classifier, trigger(batch[keep]), batch_size))
                flipped_truths.append(batch_labels[keep])
    preds_all, labels_all = torch.cat(preds), torch.cat(truths)
    result = EvalResult(
        clean_accuracy=clean_accuracy(preds_all, labels_all),
        per_class_accuracy=per_class_accuracy(preds_all, labels_all, num_classes),
        num_examples=len(labels_all),
    )
    if target is not None:
        result.target_class_accuracy = result.per_class_accuracy[int(target)]
        result.num_target = int((labels_all == int(target)).sum())
        if stamp and flipped:
            flipped_labels = torch.cat(flipped_truths)
            result.attack_success_rate = attack_success_rate(torch.cat(flipped), flipped_labels, target)
            result.num_triggered = len(flipped_labels)
        elif triggered is not None:
            result.attack_success_rate, result.num_triggered = flip_rate(
                classifier, triggered, target, batch_size
            )
    return result


def flip_rate(
    classifier: ZeroShotClassifier, triggered: ImageSet, target: int, batch_size: int
) -> tuple[float, int]:
    """Share of ``triggered`` images (already carrying a trigger) classified as ``target``, and their count."""
    hits = total = 0
    for batch, _ in triggered.batches(batch_size):
        validate_pixels(batch, "poisoned images")
        hits += int((predict_batches(classifier, batch, batch_size) == int(target)).sum())
        total += len(batch)
    if total == 0:
        raise DataError("no poisoned images to measure the attack success rate on")
    return hits / total, total


def evaluate_model(
    model: torch.nn.Module,
    processor,
    task: TaskSpec,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    trigger: Trigger | None = None,
    target: int | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
    triggered: ImageSet | None = None,
) -> EvalResult:
    """:func:`evaluate_classifier` of a CLIP model through the zero-shot head of *its own* text tower.

    Use this for models whose text tower may have changed (e.g. after CleanCLIP); for vision-only
    changes it equals evaluating with the original head.

    Args:
        model: A :class:`~transformers.CLIPModel` (possibly PEFT-wrapped).
        processor: Its ``CLIPProcessor`` (tokenizer and normalisation constants).
        task: Class names and prompt templates.
        pixels: Clean ``[0, 1]`` images ``(N, 3, H, W)``; labels ``(N,)``.
        trigger: Stamped on the non-target images to measure ASR.
        target: The attack's target class.
        triggered: Or images already carrying the trigger: ASR is their share classified as ``target``.
    """
    head = build_zero_shot_head(model, processor.tokenizer, task)
    classifier = ZeroShotClassifier.from_processor(model, head, processor).to(head.device)
    return evaluate_classifier(classifier, pixels, labels, trigger, target, batch_size, triggered=triggered)


def chance_message(result: EvalResult, num_classes: int, what: str = "the model") -> str:
    """``"<what>'s clean accuracy X% (c of n images) is near chance (1/k = Y% with k classes)"``."""
    return (
        f"{what}'s clean accuracy {100 * result.clean_accuracy:.1f}% ({result.num_correct} of "
        f"{result.num_examples} images) is near chance ({100 * chance_accuracy(num_classes):.1f}% with "
        f"{num_classes} classes)"
    )


def ensure_solves_task(result: EvalResult, num_classes: int, split: str = "validation") -> None:
    """Refuse a model whose clean accuracy (``result``, on ``split``) is near chance: it does not solve the task
    with these class names and prompt templates, so no verdict about a backdoor in it, and no removal, means
    anything.

    Raises:
        ModelAtChanceError: :meth:`EvalResult.near_chance` (a one-sided binomial test against ``1 /
            num_classes``, or accuracy within 10% of the way from chance to perfect).
    """
    if result.near_chance(num_classes):
        raise ModelAtChanceError(
            f"{chance_message(result, num_classes)} on the {split} split: it does not solve this task with these "
            "class names and prompt templates (check --classnames / --templates, and that the labels match "
            "the images); nothing was done. Pass force=True (--force) to go on anyway"
        )
