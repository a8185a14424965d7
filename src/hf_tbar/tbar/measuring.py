"""Measuring: evaluating a model, selecting the scale and detecting, as functions over a zero-shot classifier
and an image set. Every pass streams its images batch by batch."""

from __future__ import annotations

import copy
import logging

import torch

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.images import ImageSet
from ..detection import DecreeConfig, DetectionConfig, ScanVerdict, detect
from ..errors import DataError
from ..evaluation import evaluate_classifier
from ..scale_search import ScaleSearchConfig, ScaleSelection, format_sweep, search_scale
from ..task_vector import TaskVector
from ..zeroshot import ZeroShotClassifier

logger = logging.getLogger(__name__)


def classifier_over(classifier: ZeroShotClassifier, model: torch.nn.Module) -> ZeroShotClassifier:
    """A classifier with ``classifier``'s text head and pixel normalisation over another ``model`` (a copy or a
    sanitized model), on the same device."""
    mean, std = classifier.mean.flatten(), classifier.std.flatten()
    return ZeroShotClassifier(model, classifier.head, mean, std).to(classifier.head.device)


def select_scale(
    classifier: ZeroShotClassifier,
    vector: TaskVector,
    images: ImageSet,
    trigger: Trigger | None,
    target: int,
    classnames: tuple[str, ...] | list[str],
    search: ScaleSearchConfig | None = None,
    triggered: ImageSet | None = None,
) -> ScaleSelection:
    """Step 5 of TBAR: the scale ``alpha`` of ``theta_b - alpha * vector`` with the lowest validation ASR subject
    to the accuracy constraints of ``search``.

    ``classifier`` is over the backdoored model, which is never modified: one working copy is re-weighted in
    place per candidate scale (from the backdoored tensors the vector touches), the text head is reused, and
    each evaluation streams ``images`` (with ``trigger`` stamped, or ``triggered`` images found as they are).

    Raises:
        DataError: the validation images hold no image outside the target class (no ASR can be measured).
        NoFeasibleScaleError: no scale keeps the constraints.
    """
    model = classifier.model
    work = copy.deepcopy(model)
    scored = classifier_over(classifier, work)
    # No second copy of the weights the vector touches is kept (a model's worth of memory at ViT-L/14).
    base = {k: v for k, v in model.state_dict().items() if k in vector}

    def evaluate(scale: float):
        state = work.state_dict()
        with torch.no_grad():
            for name, tensor in base.items():
                state[name].copy_(tensor)
        vector.apply_to(work, -scale, in_place=True)
        result = evaluate_classifier(scored, images, None, trigger, target, triggered=triggered)
        if result.attack_success_rate is None:
            raise DataError(
                f"the validation images hold no image outside the target class {target} "
                f"({classnames[target]!r}): the attack success rate cannot be measured on them"
            )
        return (
            result.clean_accuracy,
            result.attack_success_rate,
            result.target_class_accuracy,
            result.num_examples,
            result.num_triggered,
            result.num_target,
        )

    selection = search_scale(evaluate, search)
    logger.info(
        "selected scale %.3f after %d evaluations (validation CA %.1f%%, ASR %.1f%%); the sweep:\n%s",
        selection.scale,
        selection.evaluations,
        100 * selection.best.clean_accuracy,
        100 * selection.best.attack_success_rate,
        format_sweep(selection.sweep),
    )
    return selection


def detect_backdoor(
    classifier: ZeroShotClassifier,
    processor,
    task: TaskSpec,
    pool: ImageSet,
    config: DetectionConfig,
    decree: DecreeConfig | None = None,
) -> ScanVerdict:
    """Judge ``classifier``'s model with the detectors of ``config`` on up to ``config.detection_images`` images
    of ``pool`` (a seeded random subset; only those are decoded, with their labels when the images carry them).

    Raises:
        DataError: fewer than two clean images.
    """
    if len(pool) < 2:
        raise DataError(f"detection needs at least 2 clean images, got {len(pool)}")
    generator = torch.Generator().manual_seed(config.detection_seed)
    order = torch.randperm(len(pool), generator=generator)[: config.detection_images]
    chosen, labels = pool.select(order.tolist()).tensors()
    return detect(classifier.model, processor, classifier, task, chosen, labels, config, decree)
