"""Evaluation of a zero-shot classifier on clean and triggered data: CA, ASR, per-class accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .attacks.base import Trigger
from .data.embedded import TaskSpec
from .data.pixels import validate_labels, validate_pixels
from .errors import DataError
from .metrics import attack_success_rate, clean_accuracy, per_class_accuracy
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
    """

    clean_accuracy: float
    attack_success_rate: float | None = None
    target_class_accuracy: float | None = None
    per_class_accuracy: list[float] = field(default_factory=list)
    num_examples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"CA {100 * self.clean_accuracy:.1f}%"]
        if self.attack_success_rate is not None:
            parts.append(f"ASR {100 * self.attack_success_rate:.1f}%")
        if self.target_class_accuracy is not None:
            parts.append(f"target-class acc {100 * self.target_class_accuracy:.1f}%")
        return ", ".join(parts)


def evaluate_classifier(
    classifier: ZeroShotClassifier,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    trigger: Trigger | None = None,
    target: int | None = None,
    batch_size: int = 512,
) -> EvalResult:
    """CA, per-class accuracy, and (given a trigger and target) ASR and target-class accuracy.

    Args:
        classifier: The zero-shot classifier to evaluate.
        pixels: Clean ``[0, 1]`` images ``(N, 3, H, W)``.
        labels: True labels ``(N,)``.
        trigger: Stamped on the non-target images to measure ASR.
        target: The attack's target class.
    """
    num_classes = classifier.head.shape[0]
    validate_pixels(pixels, "evaluation images")
    validate_labels(labels, num_classes, "evaluation labels")
    if len(labels) != len(pixels):
        raise DataError(f"got {len(pixels)} evaluation images but {len(labels)} labels")
    preds = classifier.predict(pixels, batch_size)
    result = EvalResult(
        clean_accuracy=clean_accuracy(preds, labels),
        per_class_accuracy=per_class_accuracy(preds, labels, num_classes),
        num_examples=len(labels),
    )
    if target is not None:
        result.target_class_accuracy = result.per_class_accuracy[int(target)]
        if trigger is not None:
            keep = labels != int(target)
            triggered_preds = classifier.predict(trigger(pixels[keep]), batch_size)
            result.attack_success_rate = attack_success_rate(triggered_preds, labels[keep], target)
    return result


def evaluate_model(
    model: torch.nn.Module,
    processor,
    task: TaskSpec,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    trigger: Trigger | None = None,
    target: int | None = None,
    batch_size: int = 512,
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
    """
    head = build_zero_shot_head(model, processor.tokenizer, task)
    classifier = ZeroShotClassifier.from_processor(model, head, processor).to(head.device)
    return evaluate_classifier(classifier, pixels, labels, trigger, target, batch_size)
